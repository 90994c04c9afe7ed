// Custom-flavour exports (export --wkv custom): their WKV nodes live in ONNX domain "vrwkv" and run only with the
// op library libvrwkv_ort_ops.so (csrc/ort_ops) registered on the session options.  Mirrors
// vrwkv_edge.runtime.custom_ops: find the library, ask it which op versions it implements (before ONNX Runtime
// sees it), refuse a mismatch naming both versions, register it.
#pragma once
#include <onnxruntime_c_api.h>

#include <string>

namespace vrwkv {

constexpr const char* kOpLibraryEnv = "VRWKV_ORT_OPS_LIBRARY";
constexpr const char* kOpLibraryName = "libvrwkv_ort_ops.so";
constexpr const char* kOpDomain = "vrwkv";

// The library to load: `requested` (ModelOptions::op_library), else $VRWKV_ORT_OPS_LIBRARY, else
// libvrwkv_ort_ops.so beside the vrwkv_runtime library (or the executable linking it statically).  Throws
// Error(Artefact) naming what was tried and how to build it.
std::string find_op_library(const std::string& requested);

// Checks that the library implements `op_version` of the vrwkv domain (Error(Artefact) naming both otherwise)
// and registers it on `options`.  `where` names the metadata for messages.
void register_op_library(OrtSessionOptions* options, const std::string& path, int op_version, const std::string& where);

}  // namespace vrwkv
