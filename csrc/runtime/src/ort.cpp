#include "ort.hpp"

#include <dlfcn.h>
#include <glob.h>

#include <cstdlib>
#include <mutex>
#include <vector>

namespace vrwkv::ort {

namespace {
Lib g_lib;
std::mutex g_mutex;

// Where to look when neither ModelOptions::ort_library nor $VRWKV_ORT_LIBRARY names the library: the dynamic
// loader's own search (LD_LIBRARY_PATH, ld.so.cache: JetPack and system installs), then the onnxruntime wheel of
// the active virtual environment or conda env ($VIRTUAL_ENV / $CONDA_PREFIX, lib/python3*/site-packages).
std::vector<std::string> candidates() {
  std::vector<std::string> c = {"libonnxruntime.so.1", "libonnxruntime.so"};
  for (const char* var : {"VIRTUAL_ENV", "CONDA_PREFIX"}) {
    const char* root = std::getenv(var);
    if (!root || !*root) continue;
    glob_t g;
    std::string pattern = std::string(root) + "/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so*";
    if (glob(pattern.c_str(), 0, nullptr, &g) == 0)
      for (size_t i = 0; i < g.gl_pathc; ++i) c.emplace_back(g.gl_pathv[i]);
    globfree(&g);
  }
  return c;
}
}  // namespace

const OrtApi& api() { return *g_lib.api; }

void check(OrtStatus* status, const std::string& what) {
  if (!status) return;
  std::string msg = g_lib.api->GetErrorMessage(status);
  g_lib.api->ReleaseStatus(status);
  throw Error(Error::Kind::OnnxRuntime, what + ": " + msg);
}

const Lib& load(const std::string& requested) {
  std::lock_guard<std::mutex> lock(g_mutex);
  std::string want = requested;
  if (want.empty()) {
    const char* env = std::getenv("VRWKV_ORT_LIBRARY");
    if (env && *env) want = env;
  }
  if (g_lib.api) {
    if (!want.empty() && want != g_lib.path)
      throw Error(Error::Kind::Argument, "ONNX Runtime is already loaded from " + g_lib.path +
                                             "; one process uses one library (asked for " + want + ")");
    return g_lib;
  }
  std::vector<std::string> tried = want.empty() ? candidates() : std::vector<std::string>{want};
  void* handle = nullptr;
  std::string errors;
  for (auto& name : tried) {
    // RTLD_LOCAL: the library's symbols stay private, so another ORT in the process (e.g. Python's) cannot clash.
    handle = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle) { g_lib.path = name; break; }
    const char* e = dlerror();
    errors += "\n  " + name + ": " + (e ? e : "not found");
  }
  if (!handle)
    throw Error(Error::Kind::OnnxRuntime,
                "cannot load the ONNX Runtime library (pass --ort-lib PATH / ModelOptions::ort_library or set "
                "VRWKV_ORT_LIBRARY to libonnxruntime.so.*, e.g. the onnxruntime wheel's onnxruntime/capi/"
                "libonnxruntime.so.1.xx.y); tried:" + errors);
  using GetApiBase = const OrtApiBase* (*)();
  auto get_base = reinterpret_cast<GetApiBase>(dlsym(handle, "OrtGetApiBase"));
  if (!get_base) {
    dlclose(handle);
    throw Error(Error::Kind::OnnxRuntime, g_lib.path + ": has no OrtGetApiBase symbol: not an ONNX Runtime library");
  }
  const OrtApiBase* base = get_base();
  g_lib.version = base->GetVersionString();
  g_lib.api = base->GetApi(kOrtApiVersion);
  if (!g_lib.api) {
    dlclose(handle);
    throw Error(Error::Kind::OnnxRuntime, g_lib.path + ": ONNX Runtime " + g_lib.version +
                                              " does not provide C API version " + std::to_string(kOrtApiVersion) +
                                              " (vrwkv_runtime needs ONNX Runtime >= 1.11)");
  }
  check(g_lib.api->CreateEnv(ORT_LOGGING_LEVEL_ERROR, "vrwkv", &g_lib.env), "CreateEnv");
  check(g_lib.api->CreateCpuMemoryInfo(OrtArenaAllocator, OrtMemTypeDefault, &g_lib.cpu), "CreateCpuMemoryInfo");
  return g_lib;  // never unloaded: sessions may live until exit
}

}  // namespace vrwkv::ort
