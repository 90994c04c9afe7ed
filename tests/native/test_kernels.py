"""The kernels' own code against the pure-PyTorch references, through the C ABI (no torch in the C++):

* ``cuda``: the CUDA source (``csrc/kernels/*/*_cuda.cu``) executed on the CPU by cuda_on_cpu, with the same grid,
  block and shared-memory decomposition a GPU would run, under several thread schedules;
* ``cpu``: the fast C++ CPU kernels;  ``reference``: the scalar C++ references (forward).

fp32: <= 1e-5 relative to the largest output.  fp16 / bf16 inputs: no worse than twice the error of the same
recurrence computed in plain PyTorch at that precision.  Backward: against autograd through the PyTorch reference.
"""
from __future__ import annotations

import pytest
import torch

from tests.native.conftest import DECAYS, rel_err, wkv6_inputs, wkv7_inputs
from vrwkv_edge.ops.biwkv import bi_wkv, bi_wkv_ref
from vrwkv_edge.ops.wkv6 import wkv6_ref
from vrwkv_edge.ops.wkv7 import wkv7_ref

# (B, T, H, N): decode; T not a multiple of the 16-token chunk; several batches / heads; every head size.
SHAPES = [(1, 1, 1, 64), (2, 37, 3, 64), (3, 16, 2, 32), (1, 20, 1, 128), (2, 19, 3, 8)]
BACKWARD_SHAPES = [(1, 1, 1, 32), (2, 37, 2, 64), (1, 18, 3, 16)]
FWD_BACKENDS = ["cuda:fibers-forward", "cuda:fibers-reverse", "cpu", "reference"]
LOWP = [torch.float16, torch.bfloat16]


def backend(capi, name: str) -> str:
    kind, _, schedule = name.partition(":")
    if schedule:
        capi.schedule(schedule, seed=7)
    return kind


def ids(shape):
    return "x".join(map(str, shape))


# ---- forward ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", FWD_BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=ids)
@pytest.mark.parametrize("decay", DECAYS)
def test_wkv6_forward_fp32(capi, name, shape, decay):
    xs = wkv6_inputs(*shape, decay=decay, seed=hash((shape, decay)) % 1000)
    y_ref, s_ref = wkv6_ref(*xs)
    y, s = capi.wkv6(backend(capi, name), *xs)
    assert rel_err(y_ref, y) <= 1e-5 and rel_err(s_ref, s) <= 1e-5


@pytest.mark.parametrize("name", FWD_BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=ids)
@pytest.mark.parametrize("decay", DECAYS[:3])
def test_wkv7_forward_fp32(capi, name, shape, decay):
    xs = wkv7_inputs(*shape, decay=decay, seed=hash((shape, decay)) % 1000)
    y_ref, s_ref = wkv7_ref(*xs)
    y, s = capi.wkv7(backend(capi, name), *xs)
    assert rel_err(y_ref, y) <= 1e-5 and rel_err(s_ref, s) <= 1e-5


@pytest.mark.parametrize("name", ["cuda:fibers-shuffled", "cuda:threads"])
def test_other_schedules(capi, name):
    """The shuffled fiber order and one OS thread per CUDA thread (std::barrier) give the same results."""
    xs6, xs7 = wkv6_inputs(2, 35, 2, 32, decay="neginf", seed=3), wkv7_inputs(2, 35, 2, 32, seed=4)
    assert rel_err(wkv6_ref(*xs6)[0], capi.wkv6(backend(capi, name), *xs6)[0]) <= 1e-5
    assert rel_err(wkv7_ref(*xs7)[0], capi.wkv7(backend(capi, name), *xs7)[0]) <= 1e-5


def wkv6_lowp(r, k, v, w_log, u, state, dtype):
    """The RWKV-6 recurrence in plain PyTorch with every tensor (state included) in ``dtype``."""
    r, k, v, w, u, S = (x.to(dtype) for x in (r, k, v, torch.exp(w_log), u, state))
    ys = []
    for t in range(r.shape[1]):
        kv = k[:, t].unsqueeze(-1) * v[:, t].unsqueeze(-2)
        ys.append(torch.einsum("bhk,bhkv->bhv", r[:, t], S + u.unsqueeze(-1) * kv))
        S = w[:, t].unsqueeze(-1) * S + kv
    return torch.stack(ys, 1), S


def wkv7_lowp(r, w_log, k, v, a, b, state, dtype):
    r, w, k, v, a, b, S = (x.to(dtype) for x in (r, torch.exp(w_log), k, v, a, b, state))
    ys = []
    for t in range(r.shape[1]):
        sa = torch.einsum("bhk,bhkv->bhv", a[:, t], S)
        S = (w[:, t].unsqueeze(-1) * S + b[:, t].unsqueeze(-1) * sa.unsqueeze(-2)
             + k[:, t].unsqueeze(-1) * v[:, t].unsqueeze(-2))
        ys.append(torch.einsum("bhk,bhkv->bhv", r[:, t], S))
    return torch.stack(ys, 1), S


@pytest.mark.parametrize("name", ["cuda:fibers-forward", "cpu", "reference"])
@pytest.mark.parametrize("dtype", LOWP, ids=str)
@pytest.mark.parametrize("op", ["wkv6", "wkv7"])
def test_forward_low_precision(capi, name, dtype, op):
    """Inputs in fp16 / bf16 (the state stays fp32, accumulation fp32): error against the fp32 reference on the
    unrounded inputs at most twice that of the plain-PyTorch recurrence run in that dtype."""
    make, ref, lowp = (wkv6_inputs, wkv6_ref, wkv6_lowp) if op == "wkv6" else (wkv7_inputs, wkv7_ref, wkv7_lowp)
    xs = make(2, 37, 2, 64, seed=11)
    y_ref, s_ref = ref(*xs)
    y_torch, s_torch = lowp(*xs, dtype)
    state = xs[-1]
    y, s = getattr(capi, op)(backend(capi, name), *(x.to(dtype) for x in xs[:-1]), state)
    assert rel_err(y_ref, y) <= 2 * rel_err(y_ref, y_torch)
    assert rel_err(s_ref, s) <= 2 * rel_err(s_ref, s_torch)


@pytest.mark.parametrize("name", ["cuda:fibers-forward", "cuda:fibers-reverse", "cpu", "reference"])
@pytest.mark.parametrize("T", [1, 2, 29])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("spread", [1, 100])
def test_bi_wkv_forward(capi, name, T, dtype, spread):
    """Vision-RWKV Bi-WKV (the paper formula) vs the float64 formula: model-like inputs to 1e-5, and keys spread
    100x wider (exp(k) over- and underflows fp32 without the anchoring) no worse than twice PyTorch's exact fp32
    scan form, which loses digits for the same reason (fp32 logits of size ~600)."""
    g = torch.Generator().manual_seed(T)
    B, C = 2, 150                                           # C not a multiple of the CUDA block / CPU channel block
    w, u = torch.randn(C, generator=g) * 3 / T, torch.randn(C, generator=g) * 3 / T
    k, v = 2 * torch.randn(B, T, C, generator=g), torch.randn(B, T, C, generator=g)
    k[0, :, :10] *= spread
    k, v = k.to(dtype), v.to(dtype)
    y_ref = bi_wkv_ref(w.double(), u.double(), k.double(), v.double())
    y = capi.bi_wkv(backend(capi, name), w, u, k, v)
    bound = 1e-5 if spread == 1 else max(1e-5, 2 * rel_err(y_ref, bi_wkv(w, u, k.float(), v.float(), method="scan")))
    assert rel_err(y_ref, y) <= bound


# ---- backward -----------------------------------------------------------------------------------------------

def autograd_grads(ref, xs, dy, dstate):
    xs = [x.clone().requires_grad_() for x in xs]
    y, s = ref(*xs)
    torch.autograd.backward([y, s], [dy, dstate])
    return [x.grad for x in xs]


@pytest.mark.parametrize("name", ["cuda:fibers-forward", "cuda:fibers-reverse", "cpu"])
@pytest.mark.parametrize("shape", BACKWARD_SHAPES, ids=ids)
@pytest.mark.parametrize("op", ["wkv6", "wkv7"])
def test_backward_fp32(capi, name, shape, op):
    """Gradients of every input, the initial state included, vs autograd through the reference (1e-4 relative)."""
    make, ref = (wkv6_inputs, wkv6_ref) if op == "wkv6" else (wkv7_inputs, wkv7_ref)
    xs = make(*shape, decay="neginf" if op == "wkv6" else "mixed", seed=sum(shape))
    g = torch.Generator().manual_seed(5)
    dy, dstate = torch.randn(shape, generator=g), torch.randn(xs[-1].shape, generator=g)
    expected = autograd_grads(ref, xs, dy, dstate)
    got = getattr(capi, f"{op}_backward")(backend(capi, name), *xs, dy, dstate)
    for i, (e, o) in enumerate(zip(expected, got)):
        assert rel_err(e, o) <= 1e-4, f"gradient of input {i}"


@pytest.mark.parametrize("name", ["cuda:fibers-forward", "cpu"])
@pytest.mark.parametrize("op", ["wkv6", "wkv7"])
def test_backward_bf16(capi, name, op):
    """bf16 inputs: gradients match autograd through the reference on the same (bf16-valued) inputs."""
    make, ref = (wkv6_inputs, wkv6_ref) if op == "wkv6" else (wkv7_inputs, wkv7_ref)
    xs = make(2, 21, 2, 64, seed=9)
    low = [x.to(torch.bfloat16) for x in xs[:-1]]
    g = torch.Generator().manual_seed(6)
    dy, dstate = torch.randn(xs[0].shape, generator=g), torch.randn(xs[-1].shape, generator=g)
    expected = autograd_grads(ref, [x.float() for x in low] + [xs[-1]], dy, dstate)
    got = getattr(capi, f"{op}_backward")(backend(capi, name), *low, xs[-1], dy, dstate)
    for i, (e, o) in enumerate(zip(expected, got)):
        assert rel_err(e, o) <= 1e-4, f"gradient of input {i}"


@pytest.mark.parametrize("name", ["cuda:fibers-forward", "cpu"])
@pytest.mark.parametrize("T", [1, 2, 29])
@pytest.mark.parametrize("spread", [1, 30])
def test_bi_wkv_backward(capi, name, T, spread):
    """Vision-RWKV Bi-WKV gradients (w, u, k, v) vs float64 autograd of the paper formula, 1e-4 relative; the wide
    keys (x30: logits of ~200) are where an unanchored backward would overflow."""
    g = torch.Generator().manual_seed(T + spread)
    B, C = 2, 70
    w, u = torch.randn(C, generator=g) * 3 / T, torch.randn(C, generator=g) * 3 / T
    k, v = 2 * torch.randn(B, T, C, generator=g), torch.randn(B, T, C, generator=g)
    k[0, :, :10] *= spread
    dy = torch.randn(B, T, C, generator=g)
    xs = [x.double().requires_grad_() for x in (w, u, k, v)]
    torch.autograd.backward(bi_wkv_ref(*xs), dy.double())
    got = capi.bi_wkv_backward(backend(capi, name), w, u, k, v, dy)
    for x, o, n in zip(xs, got, "w u k v".split()):
        assert rel_err(x.grad, o) <= 1e-4, n


def test_unsupported_head_sizes(capi):
    xs = wkv7_inputs(1, 3, 1, 48)
    for name in ("cuda", "cpu"):
        with pytest.raises(ValueError, match="head size N = 48 is not supported"):
            capi.wkv7(name, *xs)
    xs = wkv6_inputs(1, 3, 1, 128)
    dy = torch.zeros(1, 3, 1, 128)
    with pytest.raises(ValueError, match=r"wkv6_backward_cuda: head size N = 128 is not supported "
                                         r"\(N must be 8, 16, 32, 64; 128 in the forward"):
        capi.wkv6_backward("cuda", *xs, dy, torch.zeros_like(xs[-1]))
