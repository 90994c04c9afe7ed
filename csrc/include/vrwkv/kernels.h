// Entry points of every WKV kernel family.  Each takes the framework-free params of params.h; callers (the PyTorch
// binding, the test C ABI, runtime plugins) fill them.  Errors (unsupported head size / dtype) throw
// std::invalid_argument before any work is done.
#pragma once
#include <cstdint>
#include <functional>

#include "vrwkv/params.h"

namespace vrwkv {

// How the CPU kernels spread independent work items [0, n) over threads; the default runs them serially.  The
// PyTorch binding passes at::parallel_for so that torch.set_num_threads applies.
using ParallelFor = std::function<void(int64_t n, const std::function<void(int64_t begin, int64_t end)>& body)>;
inline void serial_for(int64_t n, const std::function<void(int64_t, int64_t)>& body) { body(0, n); }

// Fast C++ CPU kernels (threads over batch x head, vectorisable loops over the value index).
void wkv6_forward_cpu(const Wkv6Params& p, const ParallelFor& pf = serial_for);
void wkv6_backward_cpu(const Wkv6Params& p, const ParallelFor& pf = serial_for);
void wkv7_forward_cpu(const Wkv7Params& p, const ParallelFor& pf = serial_for);
void wkv7_backward_cpu(const Wkv7Params& p, const ParallelFor& pf = serial_for);
void biwkv_forward_cpu(const BiWkvParams& p, const ParallelFor& pf = serial_for);
void biwkv_backward_cpu(const BiWkvParams& p, const ParallelFor& pf = serial_for);   // needs p.workspace

// Scalar references: the recurrences written out one multiply at a time, accumulated in double.
void wkv6_forward_reference(const Wkv6Params& p);
void wkv7_forward_reference(const Wkv7Params& p);
void biwkv_forward_reference(const BiWkvParams& p);

// CUDA launchers (stream is a cudaStream_t).  Compiled by nvcc for the GPU, or as C++ against cuda_on_cpu.h, where
// they run the same kernels emulated.  The backward kernels need p.workspace (wkv_backward_workspace_floats) and
// support N <= 64 (the shared-memory reduction buffer is N x (N + 1) floats).
void wkv6_forward_cuda(const Wkv6Params& p, void* stream);
void wkv6_backward_cuda(const Wkv6Params& p, void* stream);
void wkv7_forward_cuda(const Wkv7Params& p, void* stream);
void wkv7_backward_cuda(const Wkv7Params& p, void* stream);
void biwkv_forward_cuda(const BiWkvParams& p, void* stream);
void biwkv_backward_cuda(const BiWkvParams& p, void* stream);

}  // namespace vrwkv
