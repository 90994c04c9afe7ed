// Kernel glue of the TensorRT WKV plugin (see wkv_plugin_kernels.h).  The recurrences are csrc/kernels' own; the
// two small kernels here zero a buffer and add the time-reversed pass of the bidirectional RWKV-6.
#include "wkv_plugin_kernels.h"

#include "kernels/biwkv/biwkv_official.h"
#include "vrwkv/cuda_compat.h"
#include "vrwkv/kernels.h"

namespace vrwkv::trt {
namespace {

constexpr int kThreads = 128;   // elementwise kernels: any block size works

__global__ void __launch_bounds__(kThreads) zero_kernel(float* x, int64_t n) {
    const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < n) x[i] = 0.f;
}

// y[b, t, h, n] += y_rev[b, T-1-t, h, n]: the reversed pass's output read back in forward time order.
__global__ void __launch_bounds__(kThreads) add_reversed_kernel(float* y, const float* y_rev, int64_t T,
                                                               int64_t HN, int64_t total) {
    const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= total) return;
    const int64_t hn = i % HN, t = (i / HN) % T, b = i / (HN * T);
    y[i] += y_rev[(b * T + (T - 1 - t)) * HN + hn];
}

unsigned blocks_for(int64_t n) { return unsigned((n + kThreads - 1) / kThreads); }

}  // namespace

void launch_wkv6(const Wkv6Params& p, void* stream) { wkv6_forward_cuda(p, stream); }

void launch_wkv7(const Wkv7Params& p, void* stream) { wkv7_forward_cuda(p, stream); }

size_t biwkv_workspace_bytes(const BiWkvParams& p, bool official) {
    return official ? 0 : size_t(biwkv_workspace_floats(p)) * sizeof(float);
}

void launch_biwkv(const BiWkvParams& p, bool official, void* workspace, void* stream) {
    if (official) {
        biwkv_official_forward_cuda(p, stream);
        return;
    }
    BiWkvParams q = p;
    q.workspace = static_cast<float*>(workspace);
    biwkv_forward_cuda(q, stream);
}

size_t biwkv6_workspace_bytes(const WkvCommonParams& p) {
    const int64_t tokens = int64_t(p.B) * p.T * p.H * p.N, state = int64_t(p.B) * p.H * p.N * p.N;
    return size_t(tokens + state + int64_t(p.H) * p.N) * sizeof(float);
}

void launch_biwkv6(const Wkv6Params& p, void* workspace, void* stream) {
    const int64_t tokens = int64_t(p.B) * p.T * p.H * p.N, state = int64_t(p.B) * p.H * p.N * p.N;
    if (tokens == 0) return;
    float* y_rev = static_cast<float*>(workspace);
    float* state_discarded = y_rev + tokens;
    float* zero_u = state_discarded + state;
    const int64_t n_u = int64_t(p.H) * p.N;
    VRWKV_LAUNCH(zero_kernel, dim3(blocks_for(n_u)), dim3(kThreads), stream, zero_u, n_u);
    VRWKV_CUDA_CHECK_LAUNCH();

    Wkv6Params fwd = p;                    // forwards: the bonus once, from a zero state (state_in null = zeros)
    fwd.state_in = nullptr;
    fwd.state_out = state_discarded;
    wkv6_forward_cuda(fwd, stream);

    // Backwards: token t of the reversed sequence is token T-1-t; all four token inputs share one layout, so one
    // negative time stride reverses them.  u = 0 (float zeros are zeros in fp16 / bf16 too: the bits are all 0).
    Wkv6Params rev = fwd;
    const int64_t last = int64_t(p.T - 1) * p.stride_t;
    const size_t elem = p.dtype == DType::kF32 ? 4 : 2;
    auto at_last = [&](const void* x) { return static_cast<const void*>(static_cast<const char*>(x) + last * elem); };
    rev.r = at_last(p.r), rev.k = at_last(p.k), rev.v = at_last(p.v), rev.w_log = at_last(p.w_log);
    rev.stride_t = -p.stride_t;
    rev.u = zero_u;
    rev.y = y_rev;
    wkv6_forward_cuda(rev, stream);

    VRWKV_LAUNCH(add_reversed_kernel, dim3(blocks_for(tokens)), dim3(kThreads), stream, p.y, y_rev, int64_t(p.T),
                 int64_t(p.H) * p.N, tokens);
    VRWKV_CUDA_CHECK_LAUNCH();
}

}  // namespace vrwkv::trt
