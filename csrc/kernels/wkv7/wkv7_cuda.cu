// RWKV-7 WKV on the GPU: forward (decode T = 1 and prefill, state in / out) and backward (training, with the
// initial state's gradient).  Block per (b, h), thread j owns state column j (see wkv_cuda_common.cuh).
#include "../wkv_cuda_common.cuh"
#include "vrwkv/kernels.h"

namespace vrwkv {
namespace {

// S = diag(w) S + b (a^T S) + k v^T on one column; a^T S is local because the thread holds the whole column.
template <int N>
__device__ __forceinline__ void wkv7_column_step(float (&s)[N], const float* w, const float* k, const float* a,
                                                 const float* b, float v) {
    float sa = 0.f;
#pragma unroll
    for (int i = 0; i < N; ++i) sa += a[i] * s[i];
#pragma unroll
    for (int i = 0; i < N; ++i) s[i] = s[i] * w[i] + b[i] * sa + k[i] * v;
}

template <int N, class In>
__global__ void __launch_bounds__(N) wkv7_forward_kernel(Wkv7Params p) {
    const int bh = blockIdx.x, b = bh / p.H, h = bh % p.H, j = threadIdx.x;
    __shared__ float r_[kChunk][N], w_[kChunk][N], k_[kChunk][N], a_[kChunk][N], b_[kChunk][N];
    float s[N];
    load_column<N>(p.state_in, bh, j, s);
    for (int t0 = 0; t0 < p.T; t0 += kChunk) {
        const int len = p.T - t0 < kChunk ? p.T - t0 : kChunk;
#ifndef VRWKV_TEST_DROP_BARRIER
        __syncthreads();  // everyone has read the previous chunk before it is overwritten
#endif
        for (int m = 0; m < len; ++m) {
            r_[m][j] = load_token<In>(p.r, p, b, t0 + m, h, j);
            w_[m][j] = expf(load_token<In>(p.w_log, p, b, t0 + m, h, j));
            k_[m][j] = load_token<In>(p.k, p, b, t0 + m, h, j);
            a_[m][j] = load_token<In>(p.a, p, b, t0 + m, h, j);
            b_[m][j] = load_token<In>(p.b, p, b, t0 + m, h, j);
        }
        __syncthreads();
        for (int m = 0; m < len; ++m) {
            wkv7_column_step<N>(s, w_[m], k_[m], a_[m], b_[m], load_token<In>(p.v, p, b, t0 + m, h, j));
            float y = 0.f;
#pragma unroll
            for (int i = 0; i < N; ++i) y += r_[m][i] * s[i];
            p.y[out_index(p, b, t0 + m, h, j)] = y;
        }
    }
    store_column<N>(p.state_out, bh, j, s);
}

// Backward: replay the forward keeping a state per chunk, then walk the chunks backwards, recomputing the chunk's
// states into the workspace and running the adjoint recurrence on the column dS[:, j].
template <int N, class In>
__global__ void __launch_bounds__(N) wkv7_backward_kernel(Wkv7Params p) {
    const int bh = blockIdx.x, b = bh / p.H, h = bh % p.H, j = threadIdx.x;
    __shared__ float r_[N], w_[N], k_[N], a_[N], b_[N];
    __shared__ float P[N][N + 1];
    auto stage = [&](int t) {
        __syncthreads();
        r_[j] = load_token<In>(p.r, p, b, t, h, j);
        w_[j] = expf(load_token<In>(p.w_log, p, b, t, h, j));
        k_[j] = load_token<In>(p.k, p, b, t, h, j);
        a_[j] = load_token<In>(p.a, p, b, t, h, j);
        b_[j] = load_token<In>(p.b, p, b, t, h, j);
        __syncthreads();
    };
    auto advance = [&](int t, float(&s)[N]) {
        stage(t);
        wkv7_column_step<N>(s, w_, k_, a_, b_, load_token<In>(p.v, p, b, t, h, j));
    };
    float* ckpt = ckpt_base(p, bh);
    const int n_ckpt = (p.T + kChunk - 1) / kChunk;
    float* chunk = ckpt + int64_t(n_ckpt) * N * N;
    save_checkpoints<N>(p, bh, j, ckpt, advance);
    float ds[N];
    load_column<N>(p.dstate_out, bh, j, ds);
    for (int c = n_ckpt - 1; c >= 0; --c) {
        const int t0 = c * kChunk, len = p.T - t0 < kChunk ? p.T - t0 : kChunk;
        recompute_chunk<N>(ckpt, chunk, c, len, j, advance);
        for (int m = len - 1; m >= 0; --m) {
            const int t = t0 + m;
            stage(t);
            const int64_t o = out_index(p, b, t, h, j);
            const float dy = p.dy[o], v = load_token<In>(p.v, p, b, t, h, j);
            const float* prev = chunk + int64_t(m) * N * N + j;  // S_{t-1}[i][j] = prev[i * N]; own column only
            const float* cur = prev + N * N;                     // S_t
            float sa = 0.f, dv = 0.f, dsa = 0.f;
#pragma unroll
            for (int i = 0; i < N; ++i) {
                ds[i] += r_[i] * dy;                              // y_t = S_t^T r_t
                sa += a_[i] * prev[i * N];
                dv += ds[i] * k_[i];
                dsa += ds[i] * b_[i];
            }
            p.dv[o] = dv;
            p.dr[o] = row_sum<N>(P, [&](int i) { return cur[i * N] * dy; });
            p.dk[o] = row_sum<N>(P, [&](int i) { return ds[i] * v; });
            p.db[o] = row_sum<N>(P, [&](int i) { return ds[i] * sa; });
            p.dw_log[o] = w_[j] * row_sum<N>(P, [&](int i) { return ds[i] * prev[i * N]; });
            p.da[o] = row_sum<N>(P, [&](int i) { return prev[i * N] * dsa; });
#pragma unroll
            for (int i = 0; i < N; ++i) ds[i] = ds[i] * w_[i] + a_[i] * dsa;
        }
    }
    store_column<N>(p.dstate_in, bh, j, ds);
}

}  // namespace

void wkv7_forward_cuda(const Wkv7Params& p, void* stream) {
    launch_per_head<128>(p, stream, "wkv7_forward_cuda", [](auto n, auto in) {
        return wkv7_forward_kernel<decltype(n)::value, decltype(in)>;
    });
}

void wkv7_backward_cuda(const Wkv7Params& p, void* stream) {
    launch_per_head<64>(p, stream, "wkv7_backward_cuda", [](auto n, auto in) {
        return wkv7_backward_kernel<decltype(n)::value, decltype(in)>;
    });
}

}  // namespace vrwkv
