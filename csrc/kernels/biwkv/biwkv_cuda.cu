// Vision-RWKV (v1) Bi-WKV forward and backward on the GPU: the paper formula (distance |t-i|-1, no epsilon), exact
// for any finite input through log-anchored sums (biwkv_math.h).  One thread per (batch, channel).  Forward: two
// sequential scans, the suffix sums to the workspace, then the prefix scan adding them and the current token.
// Backward: biwkv_backward_channel, the routine the CPU kernel runs too.
#include "vrwkv/biwkv_math.h"
#include "vrwkv/cuda_compat.h"
#include "vrwkv/kernels.h"

namespace vrwkv {
namespace {

constexpr int kBiWkvThreads = 128;

template <class In>
__global__ void __launch_bounds__(kBiWkvThreads) biwkv_forward_kernel(BiWkvParams p) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x, b = blockIdx.y;
    if (c >= p.C) return;
    const float w = p.w[c], u = p.u[c];
    const In* k = static_cast<const In*>(p.k) + b * p.stride_b + c;
    const In* v = static_cast<const In*>(p.v) + b * p.stride_b + c;
    const int64_t plane = int64_t(p.B) * p.T * p.C, row = int64_t(b) * p.T * p.C + c;
    float *num = p.workspace + row, *den = num + plane, *key = den + plane, *dist = key + plane;
    // Suffix: S_t = sum_{i>t} e^{k_i - (i-t-1) w} (v_i, 1);  S_{t-1} = e^{-w} S_t + e^{k_t} (v_t, 1).
    LogSum acc;
    for (int t = p.T - 1; t >= 0; --t) {
        const int64_t o = int64_t(t) * p.C;
        num[o] = acc.num, den[o] = acc.den, key[o] = acc.K, dist[o] = acc.D;
        acc.shift();
        acc.add(to_float(k[t * p.stride_t]), to_float(v[t * p.stride_t]), w);
    }
    acc = LogSum();  // prefix, the same recurrence forwards
    for (int t = 0; t < p.T; ++t) {
        const float kt = to_float(k[t * p.stride_t]), vt = to_float(v[t * p.stride_t]);
        const int64_t o = int64_t(t) * p.C;
        LogSum total = acc;
        total.merge(LogSum{num[o], den[o], key[o], dist[o]}, w);
        total.add(u + kt, vt, w);
        p.y[row + o] = total.num / total.den;
        acc.shift();
        acc.add(kt, vt, w);
    }
}

template <class In>
__global__ void __launch_bounds__(kBiWkvThreads) biwkv_backward_kernel(BiWkvParams p) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c < p.C) biwkv_backward_channel<In>(p, blockIdx.y, c);
}

template <class Pick>
void launch_per_channel(const BiWkvParams& p, void* stream, Pick pick) {
    dispatch_dtype(p.dtype, [&](auto in) {
        if (p.B * p.C == 0) return;
        auto kernel = pick(in);
        VRWKV_LAUNCH(kernel, dim3((p.C + kBiWkvThreads - 1) / kBiWkvThreads, p.B), dim3(kBiWkvThreads), stream, p);
        VRWKV_CUDA_CHECK_LAUNCH();
    });
}

}  // namespace

void biwkv_forward_cuda(const BiWkvParams& p, void* stream) {
    launch_per_channel(p, stream, [](auto in) { return biwkv_forward_kernel<decltype(in)>; });
}

void biwkv_backward_cuda(const BiWkvParams& p, void* stream) {
    launch_per_channel(p, stream, [](auto in) { return biwkv_backward_kernel<decltype(in)>; });
}

}  // namespace vrwkv
