// The official-kernel Bi-WKV (biwkv_official.h) on the GPU: one thread per (batch, channel) running the per-channel
// routine the CPU kernel runs too (the kernel's 32 lanes become a loop inside the thread: same operations, same
// order).  No workspace.
#include "biwkv_official.h"
#include "vrwkv/cuda_compat.h"

namespace vrwkv {
namespace {

constexpr int kOfficialThreads = 128;

template <class In>
__global__ void __launch_bounds__(kOfficialThreads) biwkv_official_kernel(BiWkvParams p) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c < p.C) biwkv_official_channel<In>(p, blockIdx.y, c);
}

}  // namespace

void biwkv_official_forward_cuda(const BiWkvParams& p, void* stream) {
    dispatch_dtype(p.dtype, [&](auto in) {
        if (p.B * p.C == 0 || p.T == 0) return;
        auto kernel = biwkv_official_kernel<decltype(in)>;
        VRWKV_LAUNCH(kernel, dim3((p.C + kOfficialThreads - 1) / kOfficialThreads, p.B), dim3(kOfficialThreads),
                     stream, p);
        VRWKV_CUDA_CHECK_LAUNCH();
    });
}

}  // namespace vrwkv
