// The kernel glue of the TensorRT WKV plugin: one launch function per vrwkv node, framework-free (no TensorRT or
// CUDA headers), so that the same glue is compiled by nvcc for the GPU and as C++ against cuda_on_cpu.h for the
// CPU harness.  Each function fills nothing itself: the plugin fills the params from the tensor descriptors.
#pragma once
#include <cstddef>
#include <cstdint>

#include "vrwkv/params.h"

namespace vrwkv::trt {

// The version of the vrwkv ONNX domain these plugins implement (vrwkv_edge/ops/custom_op_contract.py OP_VERSION;
// tests/trt ties the two).  It is also the plugin version, which TensorRT's ONNX parser matches against the node's
// plugin_version attribute (default "1").
constexpr int kOpVersion = 1;

// RWKV-6 / RWKV-7 recurrences: the kernels of csrc/kernels, no workspace.
void launch_wkv6(const Wkv6Params& p, void* stream);
void launch_wkv7(const Wkv7Params& p, void* stream);

// Vision-RWKV v1 Bi-WKV: "official" semantics (the official CUDA kernel's arithmetic, biwkv_official_forward_cuda,
// no workspace) or "formula" (the paper formula, biwkv_forward_cuda, biwkv_workspace_floats() floats).
size_t biwkv_workspace_bytes(const BiWkvParams& p, bool official);
void launch_biwkv(const BiWkvParams& p, bool official, void* workspace, void* stream);

// Bidirectional RWKV-6 (Vision-RWKV6): the RWKV-6 kernel forwards (bonus u included, zero initial state) into y,
// and over the time-reversed inputs (negative time stride, u = 0) into the workspace, then y[t] += y_rev[T-1-t].
// Workspace: the reversed pass's output [B, T, H, N], its discarded final state [B, H, N, N] and a zero u [H, N],
// all float32.  p.y must be set; p.state_in / p.state_out are ignored.
size_t biwkv6_workspace_bytes(const WkvCommonParams& p);
void launch_biwkv6(const Wkv6Params& p, void* workspace, void* stream);

}  // namespace vrwkv::trt
