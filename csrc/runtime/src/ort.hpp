// ONNX Runtime through its C API, loaded with dlopen: the wheel's and JetPack's libraries version their symbols
// (OrtGetApiBase@@VERS_1.xx), so a binary linked against one release refuses to start with another.  Resolving
// OrtGetApiBase at run time and asking for API version kOrtApiVersion works with every release since then.
#pragma once
#include <onnxruntime_c_api.h>

#include <string>

#include "vrwkv_runtime/runtime.hpp"

namespace vrwkv::ort {

struct Lib {
  const OrtApi* api = nullptr;
  OrtEnv* env = nullptr;
  OrtMemoryInfo* cpu = nullptr;
  std::string path, version;
};

// The process-wide library (loaded once; a later request naming another file is an error).
const Lib& load(const std::string& requested);

// Throws Error(OnnxRuntime) with `what` and ORT's message when status is an error.
void check(OrtStatus* status, const std::string& what);

// The loaded library's API table (load() must have succeeded before).
const OrtApi& api();

}  // namespace vrwkv::ort
