// Helpers shared by the WKV-6 / WKV-7 CPU kernels.  Each (batch, head) is an independent work item; inside one, the
// [N, N] key-major state is walked row by row (a row is contiguous over the value index j), so every inner loop
// is a fixed-length loop over j that the compiler vectorises.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "vrwkv/dispatch.h"
#include "vrwkv/kernels.h"

#define VRWKV_SIMD _Pragma("omp simd")
#define VRWKV_SIMD_SUM(acc) _Pragma("omp simd reduction(+ : acc)")

namespace vrwkv {

template <int N>
inline float dot(const float* a, const float* b) {
    float acc = 0.f;
    VRWKV_SIMD_SUM(acc)
    for (int j = 0; j < N; ++j) acc += a[j] * b[j];
    return acc;
}

// x += c * y
template <int N>
inline void axpy(float* x, float c, const float* y) {
    VRWKV_SIMD
    for (int j = 0; j < N; ++j) x[j] += c * y[j];
}

// One token's [N] vector of a [B, T, H, N] input, converted to fp32.
template <int N, class In, class P>
inline void load_vec(float* dst, const void* src, const P& p, int b, int t, int h) {
    const In* s = static_cast<const In*>(src) + b * p.stride_b + t * p.stride_t + h * p.stride_h;
    VRWKV_SIMD
    for (int j = 0; j < N; ++j) dst[j] = to_float(s[j]);
}

// exp(x) in fp32, within 1.01 ulp on [-87.3, 0] (Cephes' expf polynomial after a two-part ln 2 reduction),
// branch-free so that the decay loop vectorises; libm's expf is one call per element and was a fifth of a decode
// step.  Arguments below ln(FLT_MIN) = -87.3365 (and -inf, RWKV-6's full forgetting) give exactly 0; decays never
// exceed 1, so the top is only clamped.
inline float exp_fp32(float x) {
    const float xc = x < -87.336544f ? -87.336544f : (x > 88.f ? 88.f : x);   // (std::fmin is a libm call)
    const float n = (xc * 1.44269504088896341f + 12582912.f) - 12582912.f;     // round to nearest (1.5 * 2^23)
    const float r = std::fma(n, -1.428606765330187045e-06f, std::fma(n, -0.693145751953125f, xc));
    float q = 1.9875691500e-4f;
    q = std::fma(q, r, 1.3981999507e-3f);
    q = std::fma(q, r, 8.3334519073e-3f);
    q = std::fma(q, r, 4.1665795894e-2f);
    q = std::fma(q, r, 1.6666665459e-1f);
    q = std::fma(q, r, 5.0000001201e-1f);
    const float e = std::fma(q, r * r, r) + 1.f;
    const float scale = __builtin_bit_cast(float, (int32_t(n) + 127) << 23);   // 2^n (memcpy does not vectorise)
    return x < -87.336544f ? 0.f : e * scale;
}

template <int N, class In, class P>
inline void load_decay(float* dst, const P& p, int b, int t, int h) {
    load_vec<N, In>(dst, p.w_log, p, b, t, h);
    VRWKV_SIMD
    for (int j = 0; j < N; ++j) dst[j] = exp_fp32(dst[j]);
}

inline float* out_ptr(float* base, const WkvCommonParams& p, int b, int t, int h) {
    return base + ((int64_t(b) * p.T + t) * p.H + h) * p.N;
}
inline const float* out_ptr(const float* base, const WkvCommonParams& p, int b, int t, int h) {
    return base + ((int64_t(b) * p.T + t) * p.H + h) * p.N;
}

// Copies head bh's [N, N] state, or zeros for a null source.
template <int N>
inline void load_state(float* dst, const float* src, int64_t bh) {
    if (src) std::memcpy(dst, src + bh * N * N, sizeof(float) * N * N);
    else std::fill(dst, dst + N * N, 0.f);
}

// Where the first token of a forward pass reads the previous state: head bh of state_in itself (the kernel then
// writes state_out, dst, without a copy first), or dst zeroed when there is no state_in.  With no tokens the
// state passes through, copied.
template <int N>
inline const float* first_source(float* dst, const float* state_in, int64_t bh, int T) {
    if (!state_in || T == 0) {
        load_state<N>(dst, state_in, bh);
        return dst;
    }
    return state_in + bh * N * N;
}

// Runs fn(b, h, N-constant, In-value) for every head, spread over threads.
template <class P, class Fn>
void for_each_head(const P& p, const ParallelFor& pf, const char* op, Fn fn) {
    dispatch_head_size(p.N, op, [&](auto n) {
        dispatch_dtype(p.dtype, [&](auto in) {
            pf(int64_t(p.B) * p.H, [&](int64_t begin, int64_t end) {
                for (int64_t bh = begin; bh < end; ++bh) fn(int(bh / p.H), int(bh % p.H), n, in);
            });
        });
    });
}

// Forward of one head: token(t, src, dst, y) reads the previous state from src and writes the new one to dst, which
// is head bh of state_out (in place from the second token on); the first source is state_in itself (no copy).
template <int N, class Token>
void forward_head(const WkvCommonParams& p, int b, int h, Token token) {
    const int64_t bh = int64_t(b) * p.H + h;
    float* S = p.state_out + bh * N * N;
    const float* src = first_source<N>(S, p.state_in, bh, p.T);
    for (int t = 0; t < p.T; ++t, src = S) token(t, src, S, out_ptr(p.y, p, b, t, h));
}

// Backward of one head without storing all T states: replay the forward from state_in keeping one state every
// kChunk tokens, then, chunk by chunk from the end, recompute that chunk's states and call
// reverse(t, S_{t-1}, S_t, dS) for its tokens in reverse order, dS holding dL/dS_t on entry and dL/dS_{t-1} on
// exit (it starts as dstate_out and ends as dstate_in).  step(t, S) advances S over token t in place.
template <int N, class Step, class Reverse>
void backward_head(const WkvCommonParams& p, int b, int h, Step step, Reverse reverse) {
    const int64_t bh = int64_t(b) * p.H + h;
    const int T = p.T, n_ckpt = (T + kChunk - 1) / kChunk;
    std::vector<float> ckpt(size_t(n_ckpt) * N * N), chunk(size_t(kChunk + 1) * N * N), S(N * N);
    load_state<N>(S.data(), p.state_in, bh);
    load_state<N>(p.dstate_in + bh * N * N, p.dstate_out, bh);
    for (int t = 0; t < T; ++t) {
        if (t % kChunk == 0) std::copy(S.begin(), S.end(), ckpt.begin() + size_t(t / kChunk) * N * N);
        step(t, S.data());
    }
    for (int c = n_ckpt - 1; c >= 0; --c) {
        const int t0 = c * kChunk, len = std::min(kChunk, T - t0);
        std::copy_n(ckpt.begin() + size_t(c) * N * N, N * N, chunk.begin());
        for (int m = 0; m < len; ++m) {
            std::copy_n(chunk.begin() + size_t(m) * N * N, N * N, chunk.begin() + size_t(m + 1) * N * N);
            step(t0 + m, chunk.data() + size_t(m + 1) * N * N);
        }
        for (int m = len - 1; m >= 0; --m)
            reverse(t0 + m, chunk.data() + size_t(m) * N * N, chunk.data() + size_t(m + 1) * N * N,
                    p.dstate_in + bh * N * N);
    }
}

}  // namespace vrwkv
