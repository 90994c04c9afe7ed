// The vrwkv ONNX Runtime custom-op library: WKV6, WKV7, BiWKV and BiWKV6 in domain "vrwkv" (contract:
// vrwkv_edge/ops/custom_op_contract.py), on the CPU execution provider through the C++ CPU kernels of csrc/kernels
// and, when built with VRWKV_ORT_OPS_WITH_CUDA, on the CUDA execution provider through the CUDA kernels.
//
// Written against ORT's plain C API (OrtCustomOp), not the C++ wrappers: the wrappers keep one process-wide API
// table and stamp every op with the header's ORT_API_VERSION, while this library must run in any ONNX Runtime from
// 1.16 (JetPack 6) on.  It asks for API version 16 (KernelComputeV2: errors come back as a status), and where the
// running ORT also offers 17 it registers the ops at that version too, which adds shape inference, the domain's
// opset version range and ORT's intra-op thread pool.  Nothing from ORT is linked: the API table arrives in
// RegisterCustomOps.
//
// Every kernel validates its inputs before touching data (ranks, shapes against each other, head size, element
// types, T >= 1, a finite state on the CPU) and fails with a status naming the op and the input; ORT prefixes it
// with the node's name.  No exception leaves the library.
#include <onnxruntime_c_api.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend.hpp"
#include "kernels/biwkv/biwkv_official.h"
#include "vrwkv/kernels.h"
#include "vrwkv/params.h"
#include "vrwkv_ort_ops.h"

namespace vrwkv::ort_ops {
namespace {

// ORT 1.16: CreateKernelV2 / KernelComputeV2.  ORT 1.17: InferOutputShapeFn, Get{Start,End}Version, ParallelFor.
constexpr uint32_t kBaseApi = 16;
constexpr uint32_t kShapeInferenceApi = 17;
constexpr int kHeadSizes[] = {8, 16, 32, 64, 128};     // dispatch_head_size of csrc/include/vrwkv/dispatch.h

const OrtApi* g_api = nullptr;     // version kBaseApi
const OrtApi* g_api17 = nullptr;   // version kShapeInferenceApi, null on ORT 1.16

// A failed check or kernel: becomes the status returned to ORT.
struct OpError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

std::string shape_str(const std::vector<int64_t>& s) {
    std::string out = "[";
    for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
    return out + "]";
}

const char* type_name(ONNXTensorElementDataType t) {
    switch (t) {
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return "float32";
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return "float16";
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16: return "bfloat16";
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE: return "float64";
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: return "int64";
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: return "int32";
        default: return "a non-floating type";
    }
}

void check_status(OrtStatus* st) {
    if (!st) return;
    std::string msg = g_api->GetErrorMessage(st);
    g_api->ReleaseStatus(st);
    throw OpError(msg);
}

enum class Backend { kCpu, kCuda };

// One ORT input: its element type, shape and data.
struct Input {
    const char* name = "";
    ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
    std::vector<int64_t> shape;
    const void* data = nullptr;
    int64_t numel() const {
        int64_t n = 1;
        for (int64_t d : shape) n *= d;
        return n;
    }
};

// The inputs and outputs of one node's call, with the checks of the contract.
class Call {
   public:
    Call(const char* op, const char* const* input_names, OrtKernelContext* ctx, Backend backend)
        : op_(op), names_(input_names), ctx_(ctx), backend_(backend) {}

    [[noreturn]] void fail(const std::string& msg) const { throw OpError(std::string(op_) + ": " + msg); }

    Input input(size_t i) const {
        Input in;
        in.name = names_[i];
        const OrtValue* v = nullptr;
        check_status(g_api->KernelContext_GetInput(ctx_, i, &v));
        if (!v) fail("input '" + std::string(in.name) + "' is missing");
        int is_tensor = 0;
        check_status(g_api->IsTensor(v, &is_tensor));
        if (!is_tensor) fail("input '" + std::string(in.name) + "' must be a tensor");
        OrtTensorTypeAndShapeInfo* info = nullptr;
        check_status(g_api->GetTensorTypeAndShape(v, &info));
        size_t rank = 0;
        OrtStatus* st = g_api->GetTensorElementType(info, &in.type);
        if (!st) st = g_api->GetDimensionsCount(info, &rank);
        if (!st) {
            in.shape.resize(rank);
            st = g_api->GetDimensions(info, in.shape.data(), rank);
        }
        g_api->ReleaseTensorTypeAndShapeInfo(info);
        check_status(st);
        void* data = nullptr;
        check_status(g_api->GetTensorMutableData(const_cast<OrtValue*>(v), &data));
        in.data = data;
        return in;
    }

    // [B, T, H, N] with T >= 1 and a head size the kernels have.
    void check_tokens(const Input& x) const {
        if (x.shape.size() != 4) fail(describe(x) + " must have rank 4 [B, T, H, N], got " + shape_str(x.shape));
        check_int32(x);
        if (x.shape[1] < 1) fail(describe(x) + " has T = " + std::to_string(x.shape[1]) + " tokens; T must be >= 1");
        check_head_size(x, x.shape[3]);
    }
    void check_head_size(const Input& x, int64_t N) const {
        for (int n : kHeadSizes)
            if (n == N) return;
        fail("head size N = " + std::to_string(N) + " (last dimension of " + describe(x) + " " + shape_str(x.shape) +
             ") is not supported: N must be 8, 16, 32, 64 or 128");
    }
    void check_same_shape(const Input& x, const Input& ref) const {
        if (x.shape != ref.shape)
            fail(describe(x) + " must have the shape of '" + ref.name + "' " + shape_str(ref.shape) + ", got " +
                 shape_str(x.shape));
    }
    void check_shape(const Input& x, const std::vector<int64_t>& want, const char* layout) const {
        if (x.shape != want)
            fail(describe(x) + " must be " + layout + " = " + shape_str(want) + ", got " + shape_str(x.shape));
    }
    // The activation type E: float, float16 or bfloat16, the same for every E input (`ref` is the first).
    DType check_activation(const Input& x, const Input& ref) const {
        if (x.type != ref.type)
            fail(describe(x) + " is " + type_name(x.type) + " but '" + ref.name + "' is " + type_name(ref.type) +
                 ": every activation input of a node has the same type");
        switch (x.type) {
            case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return DType::kF32;
            case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return DType::kF16;
            case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16: return DType::kBF16;
            default: fail(describe(x) + " has unsupported type " + type_name(x.type) +
                          " (supported: float32, float16, bfloat16)");
        }
    }
    void check_float(const Input& x) const {
        if (x.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
            fail(describe(x) + " must be float32, got " + type_name(x.type));
    }
    // NaN / Inf in a recurrent state would spread to every later token: refused where the data is host memory.
    void check_finite(const Input& x) const {
        if (backend_ != Backend::kCpu) return;
        const float* s = static_cast<const float*>(x.data);
        const int64_t n = x.numel();
        float acc = 0.f;   // x - x is 0 for finite x and NaN otherwise: one vectorised pass
        for (int64_t i = 0; i < n; ++i) acc += s[i] - s[i];
        if (acc == 0.f) return;
        for (int64_t i = 0; i < n; ++i)
            if (!std::isfinite(s[i])) fail(describe(x) + " holds a non-finite value (" + std::to_string(s[i]) +
                                           " at flat index " + std::to_string(i) + ")");
    }

    float* output(size_t i, const std::vector<int64_t>& shape) const {
        OrtValue* v = nullptr;
        check_status(g_api->KernelContext_GetOutput(ctx_, i, shape.data(), shape.size(), &v));
        void* data = nullptr;
        check_status(g_api->GetTensorMutableData(v, &data));
        return static_cast<float*>(data);
    }

    void* stream() const {
        void* s = nullptr;
        check_status(g_api->KernelContext_GetGPUComputeStream(ctx_, &s));
        return s;
    }

    // The kernels' work items (batch x head) on ORT's intra-op thread pool (ORT >= 1.17), else serially.
    ParallelFor parallel_for() const {
        if (!g_api17) return serial_for;
        OrtKernelContext* ctx = ctx_;
        return [ctx](int64_t n, const std::function<void(int64_t, int64_t)>& body) {
            if (n <= 1) {
                body(0, n);
                return;
            }
            auto item = [](void* user, size_t i) {
                (*static_cast<const std::function<void(int64_t, int64_t)>*>(user))(int64_t(i), int64_t(i) + 1);
            };
            check_status(g_api17->KernelContext_ParallelFor(
                ctx, item, size_t(n), 0, const_cast<std::function<void(int64_t, int64_t)>*>(&body)));
        };
    }

    Backend backend() const { return backend_; }

   private:
    std::string describe(const Input& x) const { return "input '" + std::string(x.name) + "'"; }
    void check_int32(const Input& x) const {   // the params structs hold int32 sizes
        for (int64_t d : x.shape)
            if (d < 0 || d > INT32_MAX) fail(describe(x) + " has dimension " + std::to_string(d) + " out of range");
    }

    const char* op_;
    const char* const* names_;
    OrtKernelContext* ctx_;
    Backend backend_;
};

// ---- the four nodes ---------------------------------------------------------------------------------------------

// Fills the shared fields of a per-head WKV from r [B, T, H, N] (every token input has r's shape, checked).
template <class P>
void fill_common(P& p, const Input& r, DType dtype) {
    p.B = int(r.shape[0]), p.T = int(r.shape[1]), p.H = int(r.shape[2]), p.N = int(r.shape[3]);
    p.dtype = dtype;
    p.stride_h = p.N, p.stride_t = int64_t(p.H) * p.N, p.stride_b = int64_t(p.T) * p.stride_t;
}

const char* const kWkv6Inputs[] = {"r", "k", "v", "w_log", "u", "state_in"};
const char* const kWkv7Inputs[] = {"r", "w_log", "k", "v", "a", "b", "state_in"};
const char* const kBiWkvInputs[] = {"w", "u", "k", "v"};
const char* const kBiWkv6Inputs[] = {"r", "k", "v", "w_log", "u"};

// Token inputs [B, T, H, N] sharing r's shape and type, u [H, N] of the same type (when given): the dtype.
DType check_heads(const Call& c, const std::vector<Input>& tok, const Input* u) {
    const Input& r = tok[0];
    c.check_tokens(r);
    DType dtype = c.check_activation(r, r);
    for (size_t i = 1; i < tok.size(); ++i) {
        c.check_activation(tok[i], r);
        c.check_same_shape(tok[i], r);
    }
    if (u) {
        c.check_activation(*u, r);
        c.check_shape(*u, {r.shape[2], r.shape[3]}, "[H, N]");
    }
    return dtype;
}

void check_state(const Call& c, const Input& s, const Input& r) {
    c.check_float(s);
    c.check_shape(s, {r.shape[0], r.shape[2], r.shape[3], r.shape[3]}, "[B, H, N, N] (float32, key-major)");
    c.check_finite(s);
}

void compute_wkv6(const Call& c) {
    std::vector<Input> tok = {c.input(0), c.input(1), c.input(2), c.input(3)};
    const Input u = c.input(4), state = c.input(5);
    Wkv6Params p;
    fill_common(p, tok[0], check_heads(c, tok, &u));
    check_state(c, state, tok[0]);
    p.r = tok[0].data, p.k = tok[1].data, p.v = tok[2].data, p.w_log = tok[3].data, p.u = u.data;
    p.state_in = static_cast<const float*>(state.data);
    p.y = c.output(0, tok[0].shape);
    p.state_out = c.output(1, state.shape);
    if (c.backend() == Backend::kCpu) wkv6_forward_cpu(p, c.parallel_for());
    else wkv6_cuda(p, c.stream());
}

void compute_wkv7(const Call& c) {
    std::vector<Input> tok = {c.input(0), c.input(1), c.input(2), c.input(3), c.input(4), c.input(5)};
    const Input state = c.input(6);
    Wkv7Params p;
    fill_common(p, tok[0], check_heads(c, tok, nullptr));
    check_state(c, state, tok[0]);
    p.r = tok[0].data, p.w_log = tok[1].data, p.k = tok[2].data, p.v = tok[3].data, p.a = tok[4].data;
    p.b = tok[5].data;
    p.state_in = static_cast<const float*>(state.data);
    p.y = c.output(0, tok[0].shape);
    p.state_out = c.output(1, state.shape);
    if (c.backend() == Backend::kCpu) wkv7_forward_cpu(p, c.parallel_for());
    else wkv7_cuda(p, c.stream());
}

void compute_biwkv(const Call& c, bool official) {
    const Input w = c.input(0), u = c.input(1), k = c.input(2), v = c.input(3);
    if (k.shape.size() != 3) c.fail("input 'k' must have rank 3 [B, T, C], got " + shape_str(k.shape));
    for (int64_t d : k.shape)
        if (d < 0 || d > INT32_MAX) c.fail("input 'k' has dimension " + std::to_string(d) + " out of range");
    if (k.shape[1] < 1) c.fail("input 'k' has T = " + std::to_string(k.shape[1]) + " tokens; T must be >= 1");
    const DType dtype = c.check_activation(k, k);
    c.check_activation(v, k);
    c.check_same_shape(v, k);
    for (const Input* x : {&w, &u}) {
        c.check_float(*x);
        c.check_shape(*x, {k.shape[2]}, "[C] (float32)");
    }
    BiWkvParams p;
    p.B = int(k.shape[0]), p.T = int(k.shape[1]), p.C = int(k.shape[2]), p.dtype = dtype;
    p.stride_t = p.C, p.stride_b = int64_t(p.T) * p.C;
    p.w = static_cast<const float*>(w.data), p.u = static_cast<const float*>(u.data), p.k = k.data, p.v = v.data;
    p.y = c.output(0, k.shape);
    if (c.backend() == Backend::kCuda) return biwkv_cuda(p, official, c.stream());
    if (official) biwkv_official_forward_cpu(p, c.parallel_for());
    else biwkv_forward_cpu(p, c.parallel_for());
}

size_t element_size(DType d) { return d == DType::kF32 ? 4 : 2; }

// Bi-WKV-6 from the causal WKV-6 kernel: the forward pass with the bonus u gives sum_{s<t} + the bonus, the same
// kernel over the reversed sequence (negative time stride) with u = 0 gives sum_{s>t}; both start from a zero state.
void biwkv6_cpu(const Wkv6Params& fwd, const ParallelFor& pf) {
    const int64_t state_floats = int64_t(fwd.B) * fwd.H * fwd.N * fwd.N;
    const int64_t y_floats = int64_t(fwd.B) * fwd.T * fwd.H * fwd.N;
    std::vector<float> state(state_floats), y_rev(y_floats);
    std::vector<unsigned char> zero_u(size_t(fwd.H) * fwd.N * element_size(fwd.dtype), 0);   // 0 in every dtype
    Wkv6Params p = fwd;
    p.state_in = nullptr, p.state_out = state.data();
    wkv6_forward_cpu(p, pf);
    Wkv6Params rev = p;
    const int64_t last = int64_t(fwd.T - 1) * fwd.stride_t * int64_t(element_size(fwd.dtype));
    auto at_last = [&](const void* x) { return static_cast<const unsigned char*>(x) + last; };
    rev.r = at_last(fwd.r), rev.k = at_last(fwd.k), rev.v = at_last(fwd.v), rev.w_log = at_last(fwd.w_log);
    rev.stride_t = -fwd.stride_t;
    rev.u = zero_u.data();
    rev.y = y_rev.data();
    wkv6_forward_cpu(rev, pf);
    const int64_t row = int64_t(fwd.H) * fwd.N;
    pf(fwd.B, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b)
            for (int t = 0; t < fwd.T; ++t) {
                float* y = fwd.y + (b * fwd.T + t) * row;
                const float* yr = y_rev.data() + (b * fwd.T + (fwd.T - 1 - t)) * row;
                for (int64_t j = 0; j < row; ++j) y[j] += yr[j];
            }
    });
}

void compute_biwkv6(const Call& c) {
    std::vector<Input> tok = {c.input(0), c.input(1), c.input(2), c.input(3)};
    const Input u = c.input(4);
    Wkv6Params p;
    fill_common(p, tok[0], check_heads(c, tok, &u));
    p.r = tok[0].data, p.k = tok[1].data, p.v = tok[2].data, p.w_log = tok[3].data, p.u = u.data;
    p.y = c.output(0, tok[0].shape);
    if (c.backend() == Backend::kCpu) biwkv6_cpu(p, c.parallel_for());
    else biwkv6_cuda(p, c.stream());
}

// ---- OrtCustomOp plumbing -----------------------------------------------------------------------------------------

enum class OpKind { kWkv6, kWkv7, kBiWkv, kBiWkv6 };

struct OpSpec {
    const char* name;
    OpKind kind;
    const char* const* inputs;
    size_t n_inputs, n_outputs;
    size_t y_like;        // the input whose shape y has
};

// E inputs are declared UNDEFINED (any type) and checked by the kernel, so that an unsupported type gets this
// library's message naming the input rather than ORT's "no kernel" error.
ONNXTensorElementDataType input_type(const OpSpec& s, size_t i) {
    const bool fp32 = (s.kind == OpKind::kBiWkv && i < 2) || (std::strcmp(s.inputs[i], "state_in") == 0);
    return fp32 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT : ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
}

const OpSpec kSpecs[] = {
    {"WKV6", OpKind::kWkv6, kWkv6Inputs, 6, 2, 0},
    {"WKV7", OpKind::kWkv7, kWkv7Inputs, 7, 2, 0},
    {"BiWKV", OpKind::kBiWkv, kBiWkvInputs, 4, 1, 2},
    {"BiWKV6", OpKind::kBiWkv6, kBiWkv6Inputs, 5, 1, 0},
};

struct Op : OrtCustomOp {
    const OpSpec* spec = nullptr;
    Backend backend = Backend::kCpu;
};

struct Kernel {
    const Op* op;
    bool official = true;   // BiWKV's semantics attribute
};

OrtStatus* make_status(OrtErrorCode code, const std::string& msg) { return g_api->CreateStatus(code, msg.c_str()); }

OrtStatus* ORT_API_CALL create_kernel(const OrtCustomOp* base, const OrtApi*, const OrtKernelInfo* info,
                                      void** kernel) {
    const Op* op = static_cast<const Op*>(base);
    auto k = new Kernel{op, true};
    if (op->spec->kind == OpKind::kBiWkv) {
        // An absent attribute is the default; the string comes in two calls (size, then the bytes).
        size_t size = 0;
        OrtStatus* st = g_api->KernelInfoGetAttribute_string(info, "semantics", nullptr, &size);
        if (!st) {
            std::string value(size, '\0');
            st = g_api->KernelInfoGetAttribute_string(info, "semantics", value.data(), &size);
            if (st) {
                delete k;
                return st;
            }
            value.resize(std::strlen(value.c_str()));
            if (value == "formula") k->official = false;
            else if (value != "official") {
                delete k;
                return make_status(ORT_INVALID_ARGUMENT, "BiWKV: attribute 'semantics' must be \"official\" or "
                                                         "\"formula\", got \"" + value + "\"");
            }
        } else {
            g_api->ReleaseStatus(st);
        }
    }
    *kernel = k;
    return nullptr;
}

OrtStatus* ORT_API_CALL compute(void* kernel, OrtKernelContext* ctx) {
    const Kernel* k = static_cast<const Kernel*>(kernel);
    const OpSpec& s = *k->op->spec;
    try {
        const Call call(s.name, s.inputs, ctx, k->op->backend);
        switch (s.kind) {
            case OpKind::kWkv6: compute_wkv6(call); break;
            case OpKind::kWkv7: compute_wkv7(call); break;
            case OpKind::kBiWkv: compute_biwkv(call, k->official); break;
            case OpKind::kBiWkv6: compute_biwkv6(call); break;
        }
        return nullptr;
    } catch (const OpError& e) {
        return make_status(ORT_INVALID_ARGUMENT, e.what());
    } catch (const std::invalid_argument& e) {
        return make_status(ORT_INVALID_ARGUMENT, std::string(s.name) + ": " + e.what());
    } catch (const std::exception& e) {
        return make_status(ORT_RUNTIME_EXCEPTION, std::string(s.name) + ": " + e.what());
    } catch (...) {
        return make_status(ORT_RUNTIME_EXCEPTION, std::string(s.name) + ": unknown error");
    }
}

// y has the shape of its token input (r, or k for BiWKV), state_out that of state_in; both float32.  Symbolic
// dimensions are carried over.  An input of unknown or unexpected rank leaves the shape unset (the kernel's checks
// report a wrong rank).
OrtStatus* ORT_API_CALL infer_shapes(const OrtCustomOp* base, OrtShapeInferContext* ctx) {
    const OpSpec& s = *static_cast<const Op*>(base)->spec;
    const OrtApi* api = g_api17;
    auto copy = [&](size_t in, size_t out, size_t rank) -> OrtStatus* {
        OrtTensorTypeAndShapeInfo* info = nullptr;   // owned by the context
        if (OrtStatus* st = api->ShapeInferContext_GetInputTypeShape(ctx, in, &info)) return st;
        size_t n = 0;
        if (OrtStatus* st = api->GetDimensionsCount(info, &n)) return st;
        if (n != rank) return nullptr;   // unknown rank (reported as 0) or a wrong one: the output type only
        std::vector<int64_t> dims(n);
        std::vector<const char*> syms(n, nullptr);
        OrtTensorTypeAndShapeInfo* o = nullptr;
        OrtStatus* st = api->GetDimensions(info, dims.data(), n);
        if (!st) st = api->GetSymbolicDimensions(info, syms.data(), n);
        for (auto& p : syms)
            if (!p) p = "";
        if (!st) st = api->CreateTensorTypeAndShapeInfo(&o);
        if (!st) st = api->SetTensorElementType(o, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
        if (!st) st = api->SetDimensions(o, dims.data(), n);
        if (!st) st = api->SetSymbolicDimensions(o, syms.data(), n);
        if (!st) st = api->ShapeInferContext_SetOutputTypeShape(ctx, out, o);
        if (o) api->ReleaseTensorTypeAndShapeInfo(o);
        return st;
    };
    if (OrtStatus* st = copy(s.y_like, 0, s.kind == OpKind::kBiWkv ? 3 : 4)) return st;
    if (s.n_outputs == 2) return copy(s.n_inputs - 1, 1, 4);
    return nullptr;
}

void init_op(Op& op, const OpSpec& spec, Backend backend) {
    std::memset(static_cast<OrtCustomOp*>(&op), 0, sizeof(OrtCustomOp));
    op.spec = &spec;
    op.backend = backend;
    op.version = g_api17 ? kShapeInferenceApi : kBaseApi;
    op.GetName = [](const OrtCustomOp* o) { return static_cast<const Op*>(o)->spec->name; };
    op.GetExecutionProviderType = [](const OrtCustomOp* o) -> const char* {
        return static_cast<const Op*>(o)->backend == Backend::kCuda ? "CUDAExecutionProvider"
                                                                      : "CPUExecutionProvider";
    };
    op.GetInputTypeCount = [](const OrtCustomOp* o) { return static_cast<const Op*>(o)->spec->n_inputs; };
    op.GetInputType = [](const OrtCustomOp* o, size_t i) { return input_type(*static_cast<const Op*>(o)->spec, i); };
    op.GetOutputTypeCount = [](const OrtCustomOp* o) { return static_cast<const Op*>(o)->spec->n_outputs; };
    op.GetOutputType = [](const OrtCustomOp*, size_t) { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; };
    op.GetInputCharacteristic = [](const OrtCustomOp*, size_t) { return INPUT_OUTPUT_REQUIRED; };
    op.GetOutputCharacteristic = [](const OrtCustomOp*, size_t) { return INPUT_OUTPUT_REQUIRED; };
    op.GetInputMemoryType = [](const OrtCustomOp*, size_t) { return OrtMemTypeDefault; };
    op.KernelDestroy = [](void* k) { delete static_cast<Kernel*>(k); };
    op.CreateKernelV2 = create_kernel;
    op.KernelComputeV2 = compute;
    if (g_api17) {
        op.InferOutputShapeFn = infer_shapes;
        op.GetStartVersion = [](const OrtCustomOp*) { return VRWKV_ORT_OPS_OP_VERSION; };
        op.GetEndVersion = [](const OrtCustomOp*) { return VRWKV_ORT_OPS_OP_VERSION; };
    }
}

#if defined(VRWKV_ORT_OPS_WITH_CUDA)
constexpr Backend kBackends[] = {Backend::kCpu, Backend::kCuda};
#else
constexpr Backend kBackends[] = {Backend::kCpu};
#endif
constexpr size_t kNumOps = sizeof(kSpecs) / sizeof(kSpecs[0]) * sizeof(kBackends) / sizeof(kBackends[0]);

std::mutex g_mutex;
Op g_ops[kNumOps];
// Domains handed to sessions: ORT keeps pointers to them for the sessions' lifetime, so they are never released.
std::vector<OrtCustomOpDomain*> g_domains;

}  // namespace
}  // namespace vrwkv::ort_ops

using namespace vrwkv::ort_ops;

extern "C" {

VRWKV_ORT_OPS_EXPORT const char* vrwkv_ort_ops_domain(void) { return VRWKV_ORT_OPS_DOMAIN; }
VRWKV_ORT_OPS_EXPORT int vrwkv_ort_ops_min_op_version(void) { return VRWKV_ORT_OPS_OP_VERSION; }
VRWKV_ORT_OPS_EXPORT int vrwkv_ort_ops_max_op_version(void) { return VRWKV_ORT_OPS_OP_VERSION; }
VRWKV_ORT_OPS_EXPORT const char* vrwkv_ort_ops_providers(void) {
#if defined(VRWKV_ORT_OPS_WITH_CUDA)
    return "cpu,cuda";
#else
    return "cpu";
#endif
}

// The entry point ORT looks up in a custom-op library (RegisterCustomOpsLibrary / register_custom_ops_library).
VRWKV_ORT_OPS_EXPORT OrtStatus* ORT_API_CALL RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* base) {
    const OrtApi* api = base->GetApi(kBaseApi);
    if (!api) {
        const OrtApi* v1 = base->GetApi(1);
        const std::string msg = std::string("vrwkv_ort_ops needs ONNX Runtime >= 1.16 (C API version 16); this is ") +
                                base->GetVersionString();
        return v1 ? v1->CreateStatus(ORT_FAIL, msg.c_str()) : nullptr;
    }
    std::lock_guard<std::mutex> lock(g_mutex);
    if (!g_api) {   // once per process (one ORT per process): sessions already running use these ops
        g_api = api;
        g_api17 = base->GetApi(kShapeInferenceApi);
        size_t i = 0;
        for (Backend backend : kBackends)
            for (const OpSpec& spec : kSpecs) init_op(g_ops[i++], spec, backend);
    }
    OrtCustomOpDomain* domain = nullptr;
    if (OrtStatus* st = api->CreateCustomOpDomain(VRWKV_ORT_OPS_DOMAIN, &domain)) return st;
    for (Op& op : g_ops)
        if (OrtStatus* st = api->CustomOpDomain_Add(domain, &op)) {
            api->ReleaseCustomOpDomain(domain);
            return st;
        }
    if (OrtStatus* st = api->AddCustomOpDomain(options, domain)) {
        api->ReleaseCustomOpDomain(domain);
        return st;
    }
    g_domains.push_back(domain);
    return nullptr;
}

}  // extern "C"
