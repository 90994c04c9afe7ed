// Device helpers shared by the WKV-6 and WKV-7 CUDA kernels.  Decomposition: one block per (batch, head), N threads;
// thread j owns column j of the key-major state S[key][value] (N registers), so every state update is local and
// the per-token key-side vectors (r, decay, k, ...) are staged in shared memory, kChunk tokens at a time.
#pragma once
#include "vrwkv/cuda_compat.h"
#include "vrwkv/dispatch.h"
#include "vrwkv/params.h"

namespace vrwkv {

// Column j of head bh's [N, N] state (a null pointer reads as zeros).  Threads j, j+1 touch adjacent words: coalesced.
template <int N>
__device__ __forceinline__ void load_column(const float* S, int64_t bh, int j, float (&s)[N]) {
#pragma unroll
    for (int i = 0; i < N; ++i) s[i] = S ? S[bh * N * N + i * N + j] : 0.f;
}

template <int N>
__device__ __forceinline__ void store_column(float* S, int64_t bh, int j, const float (&s)[N]) {
#pragma unroll
    for (int i = 0; i < N; ++i) S[bh * N * N + i * N + j] = s[i];
}

// Row sums of an N x N matrix of per-thread terms: thread j supplies column j (term(i) for every row i) and gets
// back the sum of row j.  P is a [N][N + 1] shared buffer (the padding keeps both passes free of bank conflicts).
template <int N, class Term>
__device__ __forceinline__ float row_sum(float (*P)[N + 1], Term term) {
    const int j = threadIdx.x;
#pragma unroll
    for (int i = 0; i < N; ++i) P[i][j] = term(i);
    __syncthreads();
    float acc = 0.f;
#pragma unroll
    for (int c = 0; c < N; ++c) acc += P[j][c];
    __syncthreads();
    return acc;
}

// Per-block backward workspace: one checkpoint state per chunk, then the kChunk + 1 states of the current chunk.
__device__ __forceinline__ float* ckpt_base(const WkvCommonParams& p, int64_t bh) {
    const int64_t n_ckpt = (p.T + kChunk - 1) / kChunk;
    return p.workspace + bh * (n_ckpt + kChunk + 1) * p.N * p.N;
}

// Backward pass 1: the forward replayed from state_in (advance(t, s) stages token t and updates column s),
// keeping the state at the start of every chunk in ckpt.
template <int N, class Advance>
__device__ __forceinline__ void save_checkpoints(const WkvCommonParams& p, int64_t bh, int j, float* ckpt,
                                                 Advance advance) {
    float s[N];
    load_column<N>(p.state_in, bh, j, s);
    for (int t = 0; t < p.T; ++t) {
        if (t % kChunk == 0) store_column<N>(ckpt, t / kChunk, j, s);
        advance(t, s);
    }
}

// The states of chunk c from its checkpoint: chunk[m] = the state before token c * kChunk + m, m = 0 .. len.
// Each thread writes and later reads only its own column, so no barrier is needed around the workspace.
template <int N, class Advance>
__device__ __forceinline__ void recompute_chunk(const float* ckpt, float* chunk, int c, int len, int j,
                                                Advance advance) {
    float s[N];
    load_column<N>(ckpt, c, j, s);
    store_column<N>(chunk, 0, j, s);
    for (int m = 0; m < len; ++m) {
        advance(c * kChunk + m, s);
        store_column<N>(chunk, m + 1, j, s);
    }
}

}  // namespace vrwkv

namespace vrwkv {

// Flat index of (b, t, h, n) in a contiguous [B, T, H, N] output / gradient.
__device__ __forceinline__ int64_t out_index(const WkvCommonParams& p, int b, int t, int h, int n) {
    return ((int64_t(b) * p.T + t) * p.H + h) * p.N + n;
}

// Launches one block of N threads per (batch, head): pick(n, in) returns the kernel for head size
// decltype(n)::value and input element type decltype(in).
template <int MaxN, class P, class Pick>
void launch_per_head(const P& p, void* stream, const char* op, Pick pick) {
    dispatch_head_size<MaxN>(p.N, op, [&](auto n) {
        dispatch_dtype(p.dtype, [&](auto in) {
            if (p.B * p.H == 0) return;
            auto kernel = pick(n, in);
            VRWKV_LAUNCH(kernel, dim3(p.B * p.H), dim3(decltype(n)::value), stream, p);
            VRWKV_CUDA_CHECK_LAUNCH();
        });
    });
}

}  // namespace vrwkv
