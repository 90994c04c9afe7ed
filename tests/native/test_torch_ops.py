"""The torch.library ops of the built extension (C++ CPU kernels): opcheck (schema, fake kernels, autograd
registration), torch.compile, the WkvImpl entry points against the pure-PyTorch ops in every dtype, gradients
against autograd through the references, and Bi-WKV."""
from __future__ import annotations

import pytest
import torch

from tests.native.conftest import rel_err, wkv6_inputs, wkv7_inputs
from vrwkv_edge.ops.biwkv import bi_wkv, bi_wkv6
from vrwkv_edge.ops.dispatch import get_wkv_impl
from vrwkv_edge.ops.wkv6 import wkv6_chunked, wkv6_ref, wkv6_step
from vrwkv_edge.ops.wkv7 import wkv7_chunked, wkv7_ref, wkv7_step


@pytest.fixture(scope="module")
def ops(native):
    from vrwkv_edge.native import ops
    return ops


def grad_inputs(xs):
    return [x.clone().requires_grad_() for x in xs]


@pytest.mark.parametrize("op", ["wkv6", "wkv7"])
def test_opcheck(ops, op):
    xs = (wkv6_inputs if op == "wkv6" else wkv7_inputs)(2, 19, 2, 32, seed=1)
    torch.library.opcheck(getattr(torch.ops.vrwkv, op), grad_inputs(xs))
    torch.library.opcheck(getattr(torch.ops.vrwkv, op), [x.to(torch.bfloat16) for x in xs[:-1]] + [xs[-1]])
    dy, ds = torch.randn(2, 19, 2, 32), torch.randn(xs[-1].shape)
    torch.library.opcheck(getattr(torch.ops.vrwkv, f"{op}_backward"), [*xs, dy, ds])


def test_impl_registered(ops):
    impl = get_wkv_impl("native")
    assert impl.wkv7_seq is ops.wkv7_seq and impl.bi_wkv6 is ops.bi_wkv6


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_impl_matches_torch_ops(ops, dtype):
    """Every entry point vs the pure-PyTorch op on the same (dtype-valued) inputs: 1e-5 relative.  The models'
    mixed dtypes (fp32 log decay beside low-precision activations) go through too."""
    x6 = list(wkv6_inputs(2, 37, 2, 64, decay="neginf", seed=2))
    x7 = list(wkv7_inputs(2, 37, 2, 64, seed=3))
    x6[:3] = [x.to(dtype) for x in x6[:3]]
    x6[4] = x6[4].to(dtype)
    x7 = [x.to(dtype) if i != 1 and i != 6 else x for i, x in enumerate(x7)]
    for ref, nat in ((wkv6_chunked, ops.wkv6_seq), (wkv7_chunked, ops.wkv7_seq)):
        xs = x6 if ref is wkv6_chunked else x7
        (y0, s0), (y1, s1) = ref(*xs), nat(*xs, chunk_size=16)
        assert y1.dtype == torch.float32 and s1.dtype == torch.float32
        assert rel_err(y0, y1) <= 1e-5 and rel_err(s0, s1) <= 1e-5
    for ref, nat, xs in ((wkv6_step, ops.wkv6_step, x6), (wkv7_step, ops.wkv7_step, x7)):
        one = [x[:, 5] if x.dim() == 4 and x.shape[1] == 37 else x for x in xs]
        (y0, s0), (y1, s1) = ref(*one), nat(*one)
        assert rel_err(y0, y1) <= 1e-5 and rel_err(s0, s1) <= 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("op", ["wkv6", "wkv7"])
def test_autograd(ops, op, dtype):
    """Training form through autograd: gradients of every input (initial state included; the inputs' dtypes kept)
    vs autograd through the reference, 1e-4 relative; a loss on both outputs.  For bf16 inputs the expected
    gradients come from the reference on the same values in fp32, rounded to bf16 at the end as the native ones are
    (autograd through the reference itself would sum per-token bf16 gradients of u in bf16), so they may differ by
    one bf16 ulp of the largest (2^-8 relative)."""
    make, ref, nat = ((wkv6_inputs, wkv6_ref, ops.wkv6_seq) if op == "wkv6" else
                      (wkv7_inputs, wkv7_ref, ops.wkv7_seq))
    xs = [x.to(dtype) if x.dim() < 4 or x.shape[-1] != x.shape[-2] else x for x in make(2, 23, 2, 64, seed=4)]
    a, b = grad_inputs([x.float() for x in xs]), grad_inputs(xs)
    for inputs, fn in ((a, ref), (b, nat)):
        y, s = fn(*inputs)
        (y.sin().sum() + (s * s).mean()).backward()
    tol = 1e-4 if dtype == torch.float32 else 2.0 ** -8
    for i, (x0, x1) in enumerate(zip(a, b)):
        assert x1.grad.dtype == x1.dtype
        assert rel_err(x0.grad.to(dtype), x1.grad) <= tol, f"input {i}"


def test_split_sample_gradients(ops):
    """A long sample split in two: the second half starts from the first half's state, and the state gradient
    carries the loss back into the first half (the initial-state input is what makes this possible)."""
    xs = wkv7_inputs(1, 40, 2, 64, seed=5)
    full = grad_inputs(xs)
    y, _ = ops.wkv7_seq(*full)
    y.square().sum().backward()
    split = grad_inputs(xs)
    y1, s1 = ops.wkv7_seq(*(x[:, :17] for x in split[:-1]), split[-1])
    y2, _ = ops.wkv7_seq(*(x[:, 17:] for x in split[:-1]), s1)
    (y1.square().sum() + y2.square().sum()).backward()
    for x0, x1 in zip(full, split):
        assert rel_err(x0.grad, x1.grad) <= 1e-5


def test_torch_compile(ops):
    x6, x7 = wkv6_inputs(1, 20, 2, 64, seed=6), wkv7_inputs(1, 20, 2, 64, seed=7)
    f6 = torch.compile(lambda *a: ops.wkv6_seq(*a)[0] * 2, fullgraph=True, backend="aot_eager")
    f7 = torch.compile(lambda *a: ops.wkv7_seq(*a)[1] + 1, fullgraph=True, backend="aot_eager")
    assert rel_err(wkv6_ref(*x6)[0] * 2, f6(*x6)) <= 1e-5
    assert rel_err(wkv7_ref(*x7)[1] + 1, f7(*x7)) <= 1e-5
    xs = grad_inputs(x7)
    f7(*xs).sum().backward()                                 # the autograd formula through the compiled graph
    ref = grad_inputs(x7)
    wkv7_ref(*ref)[1].sum().backward()
    for a, b in zip(ref[1:], xs[1:]):                        # the state does not depend on r
        assert rel_err(a.grad, b.grad) <= 1e-4


def test_torch_compile_inductor(ops):
    """The default backend (inductor) traces through the op with its fake kernel and calls the C++ kernel."""
    x7 = wkv7_inputs(2, 9, 2, 32, seed=8)
    f = torch.compile(lambda *a: torch.tanh(ops.wkv7_seq(*a)[0]), fullgraph=True)
    assert rel_err(torch.tanh(wkv7_ref(*x7)[0]), f(*x7)) <= 1e-5


def test_bi_wkv(ops):
    g = torch.Generator().manual_seed(9)
    T = 50
    w, u = torch.randn(96, generator=g) / T, torch.randn(96, generator=g) / T
    k, v = 2 * torch.randn(2, T, 96, generator=g), torch.randn(2, T, 96, generator=g)
    xs, ref = grad_inputs((w, u, k, v)), grad_inputs((w, u, k, v))
    y0, y1 = bi_wkv(*ref), ops.bi_wkv(*xs)
    assert rel_err(y0, y1) <= 1e-5
    dy = torch.randn(y0.shape, generator=g)
    y0.backward(dy)
    y1.backward(dy)
    for a, b in zip(ref, xs):
        assert rel_err(a.grad, b.grad) <= 1e-4
    torch.library.opcheck(torch.ops.vrwkv.bi_wkv, grad_inputs((w, u, k[:, :9], v[:, :9])))


def test_bi_wkv6(ops):
    x0 = wkv6_inputs(2, 21, 2, 64, decay="neginf", seed=10)[:5]
    xs, ref = grad_inputs(x0), grad_inputs(x0)
    y0, y1 = bi_wkv6(*ref), ops.bi_wkv6(*xs)
    assert rel_err(y0, y1) <= 1e-5
    y0.sin().sum().backward()
    y1.sin().sum().backward()
    for a, b in zip(ref, xs):
        assert rel_err(a.grad, b.grad) <= 1e-4


def test_errors(ops):
    xs = wkv7_inputs(1, 3, 1, 48)
    with pytest.raises(ValueError, match="head size N = 48 is not supported"):
        ops.wkv7_seq(*xs)
    xs = list(wkv6_inputs(1, 3, 2, 32))
    with pytest.raises(RuntimeError, match="state must be float32"):
        ops.wkv6_seq(*xs[:5], xs[5][:, :1])
