// What the ORT kernels hand to an execution provider's WKV runner: the validated parameter structs of params.h,
// pointing at ORT's input and output buffers (host memory for the CPU EP, device memory for the CUDA EP).
#pragma once
#include <stdexcept>

#include "vrwkv/params.h"

namespace vrwkv::ort_ops {

// CUDA execution provider runners (ort_ops_cuda.cu, compiled with nvcc when VRWKV_ORT_OPS_WITH_CUDA is defined):
// they enqueue on the session's stream and return without synchronising; scratch memory is stream-ordered
// (cudaMallocAsync).  Errors throw std::runtime_error / std::invalid_argument.
// Bi-WKV-6: p as for WKV6 with p.y the output and state_in / state_out unused (allocated here).
#if defined(VRWKV_ORT_OPS_WITH_CUDA)
void wkv6_cuda(const Wkv6Params& p, void* stream);
void wkv7_cuda(const Wkv7Params& p, void* stream);
void biwkv_cuda(const BiWkvParams& p, bool official, void* stream);
void biwkv6_cuda(const Wkv6Params& p, void* stream);
#else
// A CPU-only build registers no CUDA ops, so these are never reached.
[[noreturn]] inline void no_cuda() { throw std::logic_error("vrwkv_ort_ops was built without CUDA"); }
inline void wkv6_cuda(const Wkv6Params&, void*) { no_cuda(); }
inline void wkv7_cuda(const Wkv7Params&, void*) { no_cuda(); }
inline void biwkv_cuda(const BiWkvParams&, bool, void*) { no_cuda(); }
inline void biwkv6_cuda(const Wkv6Params&, void*) { no_cuda(); }
#endif

}  // namespace vrwkv::ort_ops
