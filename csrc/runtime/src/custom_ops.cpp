#include "custom_ops.hpp"

#include <dlfcn.h>
#include <sys/stat.h>

#include <cstdlib>

#include "ort.hpp"
#include "vrwkv_runtime/runtime.hpp"

namespace vrwkv {

namespace {

[[noreturn]] void fail(const std::string& msg) { throw Error(Error::Kind::Artefact, msg); }

bool is_file(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// The folder of the binary holding this function: libvrwkv_runtime.so, or the program when linked statically.
std::string own_directory() {
  Dl_info info;
  if (!dladdr(reinterpret_cast<void*>(&own_directory), &info) || !info.dli_fname) return "";
  std::string path = info.dli_fname;
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

const char* const kBuildHint =
    "build it with `vrwkv-edge build-native --ort-ops-only --ort-include DIR` (then `vrwkv-edge build-native "
    "--print-ort-ops-path` prints where it is) or with CMake (-DVRWKV_BUILD_ORT_OPS=ON), and pass its path";

}  // namespace

std::string find_op_library(const std::string& requested) {
  if (!requested.empty()) {
    if (!is_file(requested)) fail("op library " + requested + ": no such file (libvrwkv_ort_ops.so)");
    return requested;
  }
  const char* env = std::getenv(kOpLibraryEnv);
  if (env && *env) {
    if (!is_file(env)) fail(std::string("$") + kOpLibraryEnv + " " + env + ": no such file (libvrwkv_ort_ops.so)");
    return env;
  }
  const std::string beside = own_directory() + "/" + kOpLibraryName;
  if (is_file(beside)) return beside;
  fail(std::string("this export is the custom WKV flavour and needs the vrwkv ONNX Runtime op library, which was "
                   "not found (tried ModelOptions::op_library / --op-lib, $") + kOpLibraryEnv + ", " + beside +
       "); " + kBuildHint);
}

void register_op_library(OrtSessionOptions* options, const std::string& path, int op_version, const std::string& where) {
  // RTLD_LOCAL: only its vrwkv_ort_ops_* queries are read here; ONNX Runtime opens the same file again.
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char* e = dlerror();
    fail(path + ": cannot load the op library: " + (e ? e : "unknown error"));
  }
  using IntFn = int (*)();
  using StrFn = const char* (*)();
  auto domain = reinterpret_cast<StrFn>(dlsym(handle, "vrwkv_ort_ops_domain"));
  auto lo = reinterpret_cast<IntFn>(dlsym(handle, "vrwkv_ort_ops_min_op_version"));
  auto hi = reinterpret_cast<IntFn>(dlsym(handle, "vrwkv_ort_ops_max_op_version"));
  if (!domain || !lo || !hi) {
    dlclose(handle);
    fail(path + ": not a vrwkv ONNX Runtime op library (no vrwkv_ort_ops_* version functions)");
  }
  const std::string dom = domain();
  const int min_v = lo(), max_v = hi();
  dlclose(handle);
  if (dom != kOpDomain || op_version < min_v || op_version > max_v) {
    const std::string has = dom + " version " + std::to_string(min_v) +
                            (max_v == min_v ? std::string() : ".." + std::to_string(max_v));
    fail(where + ": this export needs " + kOpDomain + " op version " + std::to_string(op_version) + ", but " + path +
         " implements " + has + "; use the op library built from the vrwkv_edge that wrote the export, or "
         "re-export the model");
  }
  void* ort_handle = nullptr;   // never closed: sessions run its kernels until the process exits
  ort::check(ort::api().RegisterCustomOpsLibrary(options, path.c_str(), &ort_handle),
             path + ": registering the op library");
}

}  // namespace vrwkv
