// C ABI over every kernel family, for the Python tests (ctypes) and the race-check driver: no torch, so it builds
// in seconds, and the same file links the emulated CUDA kernels (compiled as C++ against cuda_on_cpu.h), the CPU
// kernels and the scalar references.
//
// vrwkv_capi_run(op, dims, ptrs): op names "<family>_<pass>_<backend>", e.g. "wkv7_forward_cuda";
// dims = {B, T, H, N, dtype} for wkv6 / wkv7 and {B, T, C, dtype} for biwkv; tensors are contiguous and ptrs
// follows kPtrNames (unused entries null).  Returns null on success, else the error message.
#include <cstring>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>

#include "cuda_on_cpu/cuda_on_cpu.h"
#include "kernels/biwkv/biwkv_official.h"
#include "vrwkv/kernels.h"

using namespace vrwkv;

namespace {

enum Ptr { kR, kK, kV, kW, kA, kB, kU, kStateIn, kStateOut, kY, kDy, kDStateOut, kDr, kDk, kDv, kDw, kDa, kDb,
           kDu, kDStateIn, kWorkspace, kNumPtrs };

template <class P>
void fill_common(P& p, const int64_t* d, void** x) {
    p.B = int(d[0]), p.T = int(d[1]), p.H = int(d[2]), p.N = int(d[3]), p.dtype = DType(d[4]);
    p.stride_h = p.N, p.stride_t = int64_t(p.H) * p.N, p.stride_b = p.T * p.stride_t;
    p.r = x[kR], p.k = x[kK], p.v = x[kV], p.w_log = x[kW];
    p.state_in = static_cast<const float*>(x[kStateIn]), p.state_out = static_cast<float*>(x[kStateOut]);
    p.y = static_cast<float*>(x[kY]), p.dy = static_cast<const float*>(x[kDy]);
    p.dstate_out = static_cast<const float*>(x[kDStateOut]);
    p.dr = static_cast<float*>(x[kDr]), p.dk = static_cast<float*>(x[kDk]), p.dv = static_cast<float*>(x[kDv]);
    p.dw_log = static_cast<float*>(x[kDw]), p.dstate_in = static_cast<float*>(x[kDStateIn]);
    p.workspace = static_cast<float*>(x[kWorkspace]);
}

Wkv6Params wkv6(const int64_t* d, void** x) {
    Wkv6Params p;
    fill_common(p, d, x);
    p.u = x[kU], p.du = static_cast<float*>(x[kDu]);
    return p;
}

Wkv7Params wkv7(const int64_t* d, void** x) {
    Wkv7Params p;
    fill_common(p, d, x);
    p.a = x[kA], p.b = x[kB], p.da = static_cast<float*>(x[kDa]), p.db = static_cast<float*>(x[kDb]);
    return p;
}

BiWkvParams biwkv(const int64_t* d, void** x) {
    BiWkvParams p;
    p.B = int(d[0]), p.T = int(d[1]), p.C = int(d[2]), p.dtype = DType(d[3]);
    p.stride_t = p.C, p.stride_b = int64_t(p.T) * p.C;
    p.w = static_cast<const float*>(x[kW]), p.u = static_cast<const float*>(x[kU]);
    p.k = x[kK], p.v = x[kV], p.y = static_cast<float*>(x[kY]), p.workspace = static_cast<float*>(x[kWorkspace]);
    p.dy = static_cast<const float*>(x[kDy]), p.dk = static_cast<float*>(x[kDk]), p.dv = static_cast<float*>(x[kDv]);
    p.dw = static_cast<float*>(x[kDw]), p.du = static_cast<float*>(x[kDu]);
    return p;
}

using Run = std::function<void(const int64_t*, void**)>;
const std::map<std::string, Run>& ops() {
    static const std::map<std::string, Run> table = {
        {"wkv6_forward_cpu", [](auto d, auto x) { wkv6_forward_cpu(wkv6(d, x)); }},
        {"wkv6_backward_cpu", [](auto d, auto x) { wkv6_backward_cpu(wkv6(d, x)); }},
        {"wkv6_forward_reference", [](auto d, auto x) { wkv6_forward_reference(wkv6(d, x)); }},
        {"wkv6_forward_cuda", [](auto d, auto x) { wkv6_forward_cuda(wkv6(d, x), nullptr); }},
        {"wkv6_backward_cuda", [](auto d, auto x) { wkv6_backward_cuda(wkv6(d, x), nullptr); }},
        {"wkv7_forward_cpu", [](auto d, auto x) { wkv7_forward_cpu(wkv7(d, x)); }},
        {"wkv7_backward_cpu", [](auto d, auto x) { wkv7_backward_cpu(wkv7(d, x)); }},
        {"wkv7_forward_reference", [](auto d, auto x) { wkv7_forward_reference(wkv7(d, x)); }},
        {"wkv7_forward_cuda", [](auto d, auto x) { wkv7_forward_cuda(wkv7(d, x), nullptr); }},
        {"wkv7_backward_cuda", [](auto d, auto x) { wkv7_backward_cuda(wkv7(d, x), nullptr); }},
        {"biwkv_forward_cpu", [](auto d, auto x) { biwkv_forward_cpu(biwkv(d, x)); }},
        {"biwkv_forward_reference", [](auto d, auto x) { biwkv_forward_reference(biwkv(d, x)); }},
        {"biwkv_forward_cuda", [](auto d, auto x) { biwkv_forward_cuda(biwkv(d, x), nullptr); }},
        {"biwkv_backward_cpu", [](auto d, auto x) { biwkv_backward_cpu(biwkv(d, x)); }},
        {"biwkv_backward_cuda", [](auto d, auto x) { biwkv_backward_cuda(biwkv(d, x), nullptr); }},
        {"biwkv_official_forward_cpu", [](auto d, auto x) { biwkv_official_forward_cpu(biwkv(d, x)); }},
        {"biwkv_official_forward_reference", [](auto d, auto x) { biwkv_official_forward_reference(biwkv(d, x)); }},
        {"biwkv_official_forward_cuda", [](auto d, auto x) { biwkv_official_forward_cuda(biwkv(d, x), nullptr); }},
    };
    return table;
}

thread_local std::string last_error;

}  // namespace

extern "C" {

// Schedule of the emulated CUDA threads: cuda_on_cpu::Mode (0 fibers forward, 1 reverse, 2 shuffled, 3 OS threads).
void vrwkv_capi_set_schedule(int mode, uint64_t seed) {
    cuda_on_cpu::config().mode = cuda_on_cpu::Mode(mode);
    cuda_on_cpu::config().seed = seed;
}

int64_t vrwkv_capi_workspace_floats(const char* family, const int64_t* d) {
    if (std::strcmp(family, "biwkv") == 0) {
        BiWkvParams p;
        p.B = int(d[0]), p.T = int(d[1]), p.C = int(d[2]);
        return biwkv_workspace_floats(p);
    }
    WkvCommonParams p;
    p.B = int(d[0]), p.T = int(d[1]), p.H = int(d[2]), p.N = int(d[3]);
    return wkv_backward_workspace_floats(p);
}

const char* vrwkv_capi_run(const char* op, const int64_t* dims, void** ptrs) {
    try {
        const auto it = ops().find(op);
        if (it == ops().end()) throw std::invalid_argument(std::string("unknown op ") + op);
        it->second(dims, ptrs);
        return nullptr;
    } catch (const std::exception& e) {
        last_error = e.what();
        return last_error.c_str();
    }
}

}  // extern "C"
