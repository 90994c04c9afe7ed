// torch.library binding of the WKV kernels: schemas, the CPU implementation (and the CUDA one when built with
// VRWKV_WITH_CUDA), and autograd in C++ (no Python on the decode path).  Fake (meta) implementations are registered
// from Python (vrwkv_edge/native/ops.py).  Each function checks shapes, makes the inputs contiguous, fills the
// framework-free params and calls the kernel for the tensors' device.  Token inputs are [B, T, H, N], or [B, H, N]
// for one decode step (y then has that shape too).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "vrwkv/kernels.h"

#ifdef VRWKV_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#endif

namespace vrwkv {
namespace {

using at::Tensor;

void torch_parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& body) {
    at::parallel_for(0, n, 1, body);
}

DType dtype_of(const Tensor& t) {
    switch (t.scalar_type()) {
        case at::kFloat: return DType::kF32;
        case at::kHalf: return DType::kF16;
        case at::kBFloat16: return DType::kBF16;
        default: TORCH_CHECK(false, "vrwkv: inputs must be float32, float16 or bfloat16, got ", t.scalar_type());
    }
}

// The token inputs [B, T, H, N] or [B, H, N] (one dtype) and the fp32 state [B, H, N, N]; returns them contiguous.
std::vector<Tensor> token_inputs(const char* op, std::vector<Tensor> xs, const Tensor& state) {
    const auto dim = xs[0].dim();
    TORCH_CHECK(dim == 4 || dim == 3, op, ": token inputs must be [B, T, H, N] or [B, H, N], got ", xs[0].sizes());
    for (auto& x : xs) {
        TORCH_CHECK(x.sizes() == xs[0].sizes(), op, ": token inputs differ in shape: ", x.sizes(), " vs ",
                    xs[0].sizes());
        TORCH_CHECK(x.scalar_type() == xs[0].scalar_type(), op, ": token inputs differ in dtype");
        TORCH_CHECK(x.device() == xs[0].device(), op, ": inputs on different devices");
        x = x.contiguous();
    }
    const auto B = xs[0].size(0), H = xs[0].size(-2), N = xs[0].size(-1);
    TORCH_CHECK(state.scalar_type() == at::kFloat && state.sizes() == at::IntArrayRef({B, H, N, N}), op,
                ": state must be float32 [B, H, N, N] = [", B, ", ", H, ", ", N, ", ", N, "], got ",
                state.scalar_type(), " ", state.sizes());
    dtype_of(xs[0]);
    return xs;
}

void fill_common(WkvCommonParams& p, const std::vector<Tensor>& xs) {
    const Tensor& r = xs[0];
    const bool step = r.dim() == 3;
    p.B = int(r.size(0)), p.T = step ? 1 : int(r.size(1)), p.H = int(r.size(-2)), p.N = int(r.size(-1));
    p.dtype = dtype_of(r);
    p.stride_b = r.stride(0), p.stride_t = step ? 0 : r.stride(1), p.stride_h = r.stride(-2);
}

Tensor f32(const Tensor& like, at::IntArrayRef sizes) { return at::empty(sizes, like.options().dtype(at::kFloat)); }

// Calls the CPU kernel or, for CUDA tensors in a CUDA build, the CUDA launcher on the current stream.
template <class P, class Cpu, class Cuda>
void run(const Tensor& like, const P& p, Cpu cpu, Cuda cuda) {
    if (like.is_cuda()) {
#ifdef VRWKV_WITH_CUDA
        const c10::cuda::CUDAGuard guard(like.device());
        cuda(p, at::cuda::getCurrentCUDAStream().stream());
        return;
#else
        (void)cuda;
        TORCH_CHECK(false, "vrwkv: this build of the native kernels has no CUDA support");
#endif
    }
    try {
        cpu(p, torch_parallel_for);
    } catch (const std::invalid_argument& e) {
        TORCH_CHECK_VALUE(false, e.what());
    }
}

// The CUDA backward kernels keep their checkpoints in a workspace; the CPU ones allocate their own.
Tensor workspace_for(const Tensor& like, const WkvCommonParams& p) {
    return like.is_cuda() ? f32(like, {wkv_backward_workspace_floats(p)}) : Tensor();
}

std::tuple<Tensor, Tensor> wkv6(const Tensor& r, const Tensor& k, const Tensor& v, const Tensor& w_log,
                                const Tensor& u, const Tensor& state) {
    auto xs = token_inputs("vrwkv::wkv6", {r, k, v, w_log}, state);
    TORCH_CHECK(u.sizes() == r.sizes().slice(r.dim() - 2) && u.scalar_type() == r.scalar_type(),
                "vrwkv::wkv6: u must be [H, N] of the inputs' dtype");
    const Tensor uc = u.contiguous(), s = state.contiguous();
    Tensor y = f32(r, r.sizes()), s_out = at::empty_like(s);
    Wkv6Params p;
    fill_common(p, xs);
    p.r = xs[0].data_ptr(), p.k = xs[1].data_ptr(), p.v = xs[2].data_ptr(), p.w_log = xs[3].data_ptr();
    p.u = uc.data_ptr(), p.state_in = s.data_ptr<float>(), p.state_out = s_out.data_ptr<float>();
    p.y = y.data_ptr<float>();
    run(r, p, [](auto& q, auto& pf) { wkv6_forward_cpu(q, pf); }, [](auto& q, auto st) { wkv6_forward_cuda(q, st); });
    return {y, s_out};
}

std::vector<Tensor> wkv6_backward(const Tensor& r, const Tensor& k, const Tensor& v, const Tensor& w_log,
                                  const Tensor& u, const Tensor& state, const Tensor& dy, const Tensor& dstate) {
    auto xs = token_inputs("vrwkv::wkv6_backward", {r, k, v, w_log}, state);
    const Tensor uc = u.contiguous(), s = state.contiguous();
    const Tensor dyc = dy.to(at::kFloat).contiguous(), dsc = dstate.to(at::kFloat).contiguous();
    Wkv6Params p;
    fill_common(p, xs);
    std::vector<Tensor> g;
    for (int i = 0; i < 4; ++i) g.push_back(f32(r, r.sizes()));
    Tensor du = f32(r, {int64_t(p.B), int64_t(p.H), int64_t(p.N)}), ds = at::empty_like(s), ws = workspace_for(r, p);
    p.r = xs[0].data_ptr(), p.k = xs[1].data_ptr(), p.v = xs[2].data_ptr(), p.w_log = xs[3].data_ptr();
    p.u = uc.data_ptr(), p.state_in = s.data_ptr<float>(), p.dy = dyc.data_ptr<float>();
    p.dstate_out = dsc.data_ptr<float>();
    p.dr = g[0].data_ptr<float>(), p.dk = g[1].data_ptr<float>(), p.dv = g[2].data_ptr<float>();
    p.dw_log = g[3].data_ptr<float>(), p.du = du.data_ptr<float>(), p.dstate_in = ds.data_ptr<float>();
    p.workspace = ws.defined() ? ws.data_ptr<float>() : nullptr;
    run(r, p, [](auto& q, auto& pf) { wkv6_backward_cpu(q, pf); }, [](auto& q, auto st) { wkv6_backward_cuda(q, st); });
    g.push_back(du.sum(0));
    g.push_back(ds);
    return g;                                             // dr, dk, dv, dw_log, du, dstate
}

std::tuple<Tensor, Tensor> wkv7(const Tensor& r, const Tensor& w_log, const Tensor& k, const Tensor& v,
                                const Tensor& a, const Tensor& b, const Tensor& state) {
    auto xs = token_inputs("vrwkv::wkv7", {r, w_log, k, v, a, b}, state);
    const Tensor s = state.contiguous();
    Tensor y = f32(r, r.sizes()), s_out = at::empty_like(s);
    Wkv7Params p;
    fill_common(p, xs);
    p.r = xs[0].data_ptr(), p.w_log = xs[1].data_ptr(), p.k = xs[2].data_ptr(), p.v = xs[3].data_ptr();
    p.a = xs[4].data_ptr(), p.b = xs[5].data_ptr();
    p.state_in = s.data_ptr<float>(), p.state_out = s_out.data_ptr<float>(), p.y = y.data_ptr<float>();
    run(r, p, [](auto& q, auto& pf) { wkv7_forward_cpu(q, pf); }, [](auto& q, auto st) { wkv7_forward_cuda(q, st); });
    return {y, s_out};
}

std::vector<Tensor> wkv7_backward(const Tensor& r, const Tensor& w_log, const Tensor& k, const Tensor& v,
                                  const Tensor& a, const Tensor& b, const Tensor& state, const Tensor& dy,
                                  const Tensor& dstate) {
    auto xs = token_inputs("vrwkv::wkv7_backward", {r, w_log, k, v, a, b}, state);
    const Tensor s = state.contiguous();
    const Tensor dyc = dy.to(at::kFloat).contiguous(), dsc = dstate.to(at::kFloat).contiguous();
    Wkv7Params p;
    fill_common(p, xs);
    std::vector<Tensor> g;
    for (int i = 0; i < 6; ++i) g.push_back(f32(r, r.sizes()));
    Tensor ds = at::empty_like(s), ws = workspace_for(r, p);
    p.r = xs[0].data_ptr(), p.w_log = xs[1].data_ptr(), p.k = xs[2].data_ptr(), p.v = xs[3].data_ptr();
    p.a = xs[4].data_ptr(), p.b = xs[5].data_ptr();
    p.state_in = s.data_ptr<float>(), p.dy = dyc.data_ptr<float>(), p.dstate_out = dsc.data_ptr<float>();
    p.dr = g[0].data_ptr<float>(), p.dw_log = g[1].data_ptr<float>(), p.dk = g[2].data_ptr<float>();
    p.dv = g[3].data_ptr<float>(), p.da = g[4].data_ptr<float>(), p.db = g[5].data_ptr<float>();
    p.dstate_in = ds.data_ptr<float>();
    p.workspace = ws.defined() ? ws.data_ptr<float>() : nullptr;
    run(r, p, [](auto& q, auto& pf) { wkv7_backward_cpu(q, pf); }, [](auto& q, auto st) { wkv7_backward_cuda(q, st); });
    g.push_back(ds);
    return g;                                             // dr, dw_log, dk, dv, da, db, dstate
}

// Checks and fills the Bi-WKV params; keeps the contiguous / fp32 inputs alive in `keep`.
BiWkvParams biwkv_params(const Tensor& w, const Tensor& u, const Tensor& k, const Tensor& v,
                         std::vector<Tensor>& keep) {
    TORCH_CHECK(k.dim() == 3 && k.sizes() == v.sizes() && k.scalar_type() == v.scalar_type(),
                "vrwkv::bi_wkv: k and v must be [B, T, C] of one dtype, got ", k.sizes(), " and ", v.sizes());
    const auto C = k.size(2);
    TORCH_CHECK(w.sizes() == at::IntArrayRef({C}) && u.sizes() == at::IntArrayRef({C}),
                "vrwkv::bi_wkv: w and u must be [C] = [", C, "]");
    keep = {w.to(at::kFloat).contiguous(), u.to(at::kFloat).contiguous(), k.contiguous(), v.contiguous()};
    BiWkvParams p;
    p.B = int(k.size(0)), p.T = int(k.size(1)), p.C = int(C), p.dtype = dtype_of(k);
    p.stride_b = keep[2].stride(0), p.stride_t = keep[2].stride(1);
    p.w = keep[0].data_ptr<float>(), p.u = keep[1].data_ptr<float>();
    p.k = keep[2].data_ptr(), p.v = keep[3].data_ptr();
    return p;
}

Tensor bi_wkv(const Tensor& w, const Tensor& u, const Tensor& k, const Tensor& v) {
    std::vector<Tensor> keep;
    BiWkvParams p = biwkv_params(w, u, k, v, keep);
    Tensor y = f32(k, k.sizes());
    Tensor ws = k.is_cuda() ? f32(k, {biwkv_workspace_floats(p)}) : Tensor();   // the CPU forward needs none
    p.y = y.data_ptr<float>();
    p.workspace = ws.defined() ? ws.data_ptr<float>() : nullptr;
    run(k, p, [](auto& q, auto& pf) { biwkv_forward_cpu(q, pf); }, [](auto& q, auto st) { biwkv_forward_cuda(q, st); });
    return y;
}

std::vector<Tensor> bi_wkv_backward(const Tensor& w, const Tensor& u, const Tensor& k, const Tensor& v,
                                    const Tensor& dy) {
    std::vector<Tensor> keep;
    BiWkvParams p = biwkv_params(w, u, k, v, keep);
    const Tensor dyc = dy.to(at::kFloat).contiguous();
    Tensor dk = f32(k, k.sizes()), dv = f32(k, k.sizes()), ws = f32(k, {biwkv_workspace_floats(p)});
    Tensor dw = f32(k, {int64_t(p.B), int64_t(p.C)}), du = f32(k, {int64_t(p.B), int64_t(p.C)});
    p.dy = dyc.data_ptr<float>(), p.dk = dk.data_ptr<float>(), p.dv = dv.data_ptr<float>();
    p.dw = dw.data_ptr<float>(), p.du = du.data_ptr<float>(), p.workspace = ws.data_ptr<float>();
    run(k, p, [](auto& q, auto& pf) { biwkv_backward_cpu(q, pf); },
        [](auto& q, auto st) { biwkv_backward_cuda(q, st); });
    return {dw.sum(0), du.sum(0), dk, dv};
}

// Autograd of an op (inputs...) -> (y, state) with a backward op (inputs..., dy, dstate) -> gradients of the inputs
// (fp32, cast back to each input's dtype).  Both are called through the dispatcher, below autograd, so that fake
// tensors (torch.compile) reach the fake kernels.
template <const char* Forward, const char* Backward>
struct WkvFunction : public torch::autograd::Function<WkvFunction<Forward, Backward>> {
    static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, at::TensorList xs) {
        at::AutoDispatchBelowADInplaceOrView guard;
        ctx->save_for_backward(xs.vec());
        static const auto op = c10::Dispatcher::singleton().findSchemaOrThrow(Forward, "");
        torch::jit::Stack stack(xs.begin(), xs.end());
        op.callBoxed(&stack);
        return {stack[0].toTensor(), stack[1].toTensor()};
    }
    static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                   torch::autograd::variable_list grads) {
        const auto xs = ctx->get_saved_variables();
        const Tensor& y_like = xs.front();
        const Tensor& state = xs.back();
        torch::jit::Stack stack(xs.begin(), xs.end());
        stack.emplace_back(grads[0].defined() ? grads[0] : at::zeros_like(y_like, y_like.options().dtype(at::kFloat)));
        stack.emplace_back(grads[1].defined() ? grads[1] : at::zeros_like(state));
        static const auto op = c10::Dispatcher::singleton().findSchemaOrThrow(Backward, "");
        op.callBoxed(&stack);
        auto g = stack[0].toTensorVector();
        for (size_t i = 0; i < g.size(); ++i) g[i] = g[i].to(xs[i].scalar_type());
        return g;
    }
};

constexpr char kWkv6[] = "vrwkv::wkv6", kWkv6Backward[] = "vrwkv::wkv6_backward";
constexpr char kWkv7[] = "vrwkv::wkv7", kWkv7Backward[] = "vrwkv::wkv7_backward";

std::tuple<Tensor, Tensor> wkv6_autograd(const Tensor& r, const Tensor& k, const Tensor& v, const Tensor& w_log,
                                         const Tensor& u, const Tensor& state) {
    auto out = WkvFunction<kWkv6, kWkv6Backward>::apply(at::TensorList({r, k, v, w_log, u, state}));
    return {out[0], out[1]};
}

std::tuple<Tensor, Tensor> wkv7_autograd(const Tensor& r, const Tensor& w_log, const Tensor& k, const Tensor& v,
                                         const Tensor& a, const Tensor& b, const Tensor& state) {
    auto out = WkvFunction<kWkv7, kWkv7Backward>::apply(at::TensorList({r, w_log, k, v, a, b, state}));
    return {out[0], out[1]};
}

}  // namespace

TORCH_LIBRARY(vrwkv, m) {
    m.def("wkv6(Tensor r, Tensor k, Tensor v, Tensor w_log, Tensor u, Tensor state) -> (Tensor, Tensor)");
    m.def("wkv6_backward(Tensor r, Tensor k, Tensor v, Tensor w_log, Tensor u, Tensor state, Tensor dy, "
          "Tensor dstate) -> Tensor[]");
    m.def("wkv7(Tensor r, Tensor w_log, Tensor k, Tensor v, Tensor a, Tensor b, Tensor state) -> (Tensor, Tensor)");
    m.def("wkv7_backward(Tensor r, Tensor w_log, Tensor k, Tensor v, Tensor a, Tensor b, Tensor state, Tensor dy, "
          "Tensor dstate) -> Tensor[]");
    m.def("bi_wkv(Tensor w, Tensor u, Tensor k, Tensor v) -> Tensor");
    m.def("bi_wkv_backward(Tensor w, Tensor u, Tensor k, Tensor v, Tensor dy) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(vrwkv, CPU, m) {
    m.impl("wkv6", &wkv6);
    m.impl("wkv6_backward", &wkv6_backward);
    m.impl("wkv7", &wkv7);
    m.impl("wkv7_backward", &wkv7_backward);
    m.impl("bi_wkv", &bi_wkv);
    m.impl("bi_wkv_backward", &bi_wkv_backward);
}

TORCH_LIBRARY_IMPL(vrwkv, Autograd, m) {
    m.impl("wkv6", &wkv6_autograd);
    m.impl("wkv7", &wkv7_autograd);
}

#ifdef VRWKV_WITH_CUDA
TORCH_LIBRARY_IMPL(vrwkv, CUDA, m) {
    m.impl("wkv6", &wkv6);
    m.impl("wkv6_backward", &wkv6_backward);
    m.impl("wkv7", &wkv7);
    m.impl("wkv7_backward", &wkv7_backward);
    m.impl("bi_wkv", &bi_wkv);
    m.impl("bi_wkv_backward", &bi_wkv_backward);
}
#endif

}  // namespace vrwkv
