// RWKV-6 WKV on the GPU: forward (decode T = 1 and prefill, state in / out) and backward (training, with the
// initial state's and the bonus u's gradients).  Block per (b, h), thread j owns state column j.
#include "../wkv_cuda_common.cuh"
#include "vrwkv/kernels.h"

namespace vrwkv {
namespace {

template <int N>
__device__ __forceinline__ void wkv6_column_step(float (&s)[N], const float* w, const float* k, float v) {
#pragma unroll
    for (int i = 0; i < N; ++i) s[i] = s[i] * w[i] + k[i] * v;
}

template <int N, class In>
__global__ void __launch_bounds__(N) wkv6_forward_kernel(Wkv6Params p) {
    const int bh = blockIdx.x, b = bh / p.H, h = bh % p.H, j = threadIdx.x;
    // u k is staged per token rather than u once: a loop-invariant u would be hoisted into N more registers.
    __shared__ float r_[kChunk][N], w_[kChunk][N], k_[kChunk][N], uk_[kChunk][N];
    const float u = to_float(static_cast<const In*>(p.u)[h * N + j]);
    float s[N];
    load_column<N>(p.state_in, bh, j, s);
    for (int t0 = 0; t0 < p.T; t0 += kChunk) {
        const int len = p.T - t0 < kChunk ? p.T - t0 : kChunk;
#ifndef VRWKV_TEST_DROP_BARRIER
        __syncthreads();  // everyone has read the previous chunk before it is overwritten
#endif
        for (int m = 0; m < len; ++m) {
            r_[m][j] = load_token<In>(p.r, p, b, t0 + m, h, j);
            w_[m][j] = expf(load_token<In>(p.w_log, p, b, t0 + m, h, j));   // exp(-inf) = 0: full forgetting
            k_[m][j] = load_token<In>(p.k, p, b, t0 + m, h, j);
            uk_[m][j] = u * k_[m][j];
        }
        __syncthreads();
        for (int m = 0; m < len; ++m) {
            const float v = load_token<In>(p.v, p, b, t0 + m, h, j);
            float y = 0.f;
#pragma unroll
            for (int i = 0; i < N; ++i) {
                y += r_[m][i] * (s[i] + uk_[m][i] * v);   // reads S_{t-1}
                s[i] = s[i] * w_[m][i] + k_[m][i] * v;
            }
            p.y[out_index(p, b, t0 + m, h, j)] = y;
        }
    }
    store_column<N>(p.state_out, bh, j, s);
}

// Backward: same replay / chunk-recompute scheme as the RWKV-7 kernel; RWKV-6 only needs S_{t-1} per token.
template <int N, class In>
__global__ void __launch_bounds__(N) wkv6_backward_kernel(Wkv6Params p) {
    const int bh = blockIdx.x, b = bh / p.H, h = bh % p.H, j = threadIdx.x;
    // u k staged per token, as in the forward: a loop-invariant u_[i] would be hoisted into N registers (spills).
    __shared__ float r_[N], w_[N], k_[N], v_[N], dy_[N], uk_[N];
    __shared__ float P[N][N + 1];
    const float u = to_float(static_cast<const In*>(p.u)[h * N + j]);
    auto stage = [&](int t, bool grads) {
        __syncthreads();
        r_[j] = load_token<In>(p.r, p, b, t, h, j);
        w_[j] = expf(load_token<In>(p.w_log, p, b, t, h, j));
        k_[j] = load_token<In>(p.k, p, b, t, h, j);
        v_[j] = load_token<In>(p.v, p, b, t, h, j);
        uk_[j] = u * k_[j];
        if (grads) dy_[j] = p.dy[out_index(p, b, t, h, j)];
        __syncthreads();
    };
    auto advance = [&](int t, float(&s)[N]) {
        stage(t, false);
        wkv6_column_step<N>(s, w_, k_, v_[j]);
    };
    float* ckpt = ckpt_base(p, bh);
    const int n_ckpt = (p.T + kChunk - 1) / kChunk;
    float* chunk = ckpt + int64_t(n_ckpt) * N * N;
    save_checkpoints<N>(p, bh, j, ckpt, advance);
    float ds[N], du = 0.f;
    load_column<N>(p.dstate_out, bh, j, ds);
    for (int c = n_ckpt - 1; c >= 0; --c) {
        const int t0 = c * kChunk, len = p.T - t0 < kChunk ? p.T - t0 : kChunk;
        recompute_chunk<N>(ckpt, chunk, c, len, j, advance);
        for (int m = len - 1; m >= 0; --m) {
            const int t = t0 + m;
            stage(t, true);
            const int64_t o = out_index(p, b, t, h, j);
            const float dy = dy_[j], v = v_[j];
            const float* prev = chunk + int64_t(m) * N * N + j;  // S_{t-1}[i][j] = prev[i * N]; own column only
            float dyv = 0.f, ruk = 0.f, dv = 0.f;
#pragma unroll
            for (int i = 0; i < N; ++i) {
                dyv += dy_[i] * v_[i];
                ruk += r_[i] * uk_[i];
                dv += ds[i] * k_[i];
            }
            p.dv[o] = dv + ruk * dy;
            p.dr[o] = row_sum<N>(P, [&](int i) { return prev[i * N] * dy; }) + uk_[j] * dyv;
            p.dk[o] = row_sum<N>(P, [&](int i) { return ds[i] * v; }) + r_[j] * u * dyv;
            p.dw_log[o] = w_[j] * row_sum<N>(P, [&](int i) { return ds[i] * prev[i * N]; });
            du += r_[j] * k_[j] * dyv;
#pragma unroll
            for (int i = 0; i < N; ++i) ds[i] = ds[i] * w_[i] + r_[i] * dy;
        }
    }
    store_column<N>(p.dstate_in, bh, j, ds);
    p.du[int64_t(bh) * N + j] = du;
}

}  // namespace

void wkv6_forward_cuda(const Wkv6Params& p, void* stream) {
    launch_per_head<128>(p, stream, "wkv6_forward_cuda", [](auto n, auto in) {
        return wkv6_forward_kernel<decltype(n)::value, decltype(in)>;
    });
}

void wkv6_backward_cuda(const Wkv6Params& p, void* stream) {
    launch_per_head<64>(p, stream, "wkv6_backward_cuda", [](auto n, auto in) {
        return wkv6_backward_kernel<decltype(n)::value, decltype(in)>;
    });
}

}  // namespace vrwkv
