// The CUDA execution provider's runners (backend.hpp): the CUDA kernels of csrc/kernels on the session's stream.
// Scratch memory (Bi-WKV workspaces, Bi-WKV-6's reversed pass) is stream-ordered: cudaMallocAsync / cudaFreeAsync
// (CUDA >= 11.2), so nothing synchronises.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "backend.hpp"
#include "kernels/biwkv/biwkv_official.h"
#include "vrwkv/kernels.h"

namespace vrwkv::ort_ops {
namespace {

void cuda_check(cudaError_t err, const char* what) {
    if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

// Stream-ordered scratch buffer, freed on the stream when it goes out of scope.
struct Scratch {
    void* ptr = nullptr;
    cudaStream_t stream;
    Scratch(size_t bytes, cudaStream_t s) : stream(s) {
        if (bytes) cuda_check(cudaMallocAsync(&ptr, bytes, stream), "cudaMallocAsync");
    }
    ~Scratch() {
        if (ptr) cudaFreeAsync(ptr, stream);
    }
    Scratch(const Scratch&) = delete;
    Scratch& operator=(const Scratch&) = delete;
    float* f() const { return static_cast<float*>(ptr); }
};

// y[b, t] += y_rev[b, T - 1 - t] over rows of H * N floats.
__global__ void add_reversed(float* y, const float* y_rev, int64_t B, int64_t T, int64_t row) {
    const int64_t n = B * T * row;
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        const int64_t j = i % row, bt = i / row, t = bt % T, b = bt / T;
        y[i] += y_rev[(b * T + (T - 1 - t)) * row + j];
    }
}

size_t element_size(DType d) { return d == DType::kF32 ? 4 : 2; }

}  // namespace

void wkv6_cuda(const Wkv6Params& p, void* stream) { wkv6_forward_cuda(p, stream); }
void wkv7_cuda(const Wkv7Params& p, void* stream) { wkv7_forward_cuda(p, stream); }

void biwkv_cuda(const BiWkvParams& p, bool official, void* stream) {
    if (official) return biwkv_official_forward_cuda(p, stream);
    Scratch ws(sizeof(float) * size_t(biwkv_workspace_floats(p)), static_cast<cudaStream_t>(stream));
    BiWkvParams q = p;
    q.workspace = ws.f();
    biwkv_forward_cuda(q, stream);
}

void biwkv6_cuda(const Wkv6Params& fwd, void* stream) {
    auto s = static_cast<cudaStream_t>(stream);
    const size_t state = size_t(fwd.B) * fwd.H * fwd.N * fwd.N, y = size_t(fwd.B) * fwd.T * fwd.H * fwd.N;
    const size_t u_bytes = size_t(fwd.H) * fwd.N * element_size(fwd.dtype);
    Scratch buf(sizeof(float) * (state + y) + u_bytes, s);
    float* state_out = buf.f();
    float* y_rev = state_out + state;
    void* zero_u = y_rev + y;
    cuda_check(cudaMemsetAsync(zero_u, 0, u_bytes, s), "cudaMemsetAsync");   // 0 in every dtype
    Wkv6Params p = fwd;
    p.state_in = nullptr, p.state_out = state_out;
    wkv6_forward_cuda(p, stream);
    Wkv6Params rev = p;
    const int64_t last = int64_t(fwd.T - 1) * fwd.stride_t * int64_t(element_size(fwd.dtype));
    auto at_last = [&](const void* x) { return static_cast<const void*>(static_cast<const char*>(x) + last); };
    rev.r = at_last(fwd.r), rev.k = at_last(fwd.k), rev.v = at_last(fwd.v), rev.w_log = at_last(fwd.w_log);
    rev.stride_t = -fwd.stride_t, rev.u = zero_u, rev.y = y_rev;
    wkv6_forward_cuda(rev, stream);
    const int64_t row = int64_t(fwd.H) * fwd.N, n = int64_t(y);
    if (n == 0) return;
    const int threads = 256, blocks = int(std::min<int64_t>((n + threads - 1) / threads, 4096));
    add_reversed<<<blocks, threads, 0, s>>>(fwd.y, y_rev, fwd.B, fwd.T, row);
    cuda_check(cudaGetLastError(), "add_reversed");
}

}  // namespace vrwkv::ort_ops
