"""Bi-WKV (VRWKV) and bidirectional WKV-6 (VRWKV6): every fast form against the O(T^2) formula."""
import pytest
import torch

from vrwkv_edge.ops.biwkv import (MATMUL_MAX_SPREAD, MATMUL_MAX_U, MATMUL_MAX_WT, _matmul_is_exact, bi_wkv,
                                  bi_wkv6, bi_wkv6_ref, bi_wkv_kernel_ref, bi_wkv_ref)
from vrwkv_edge.ops.wkv6 import wkv6_ref

LENGTHS = [1, 31, 33, 577, 1024]


def rel_err(ref, out) -> float:
    """max |out - ref| relative to the output scale max |ref| (outputs are weighted averages of v)."""
    assert out.shape == ref.shape and torch.isfinite(out).all()
    return ((out.double() - ref.double()).abs().max() / ref.double().abs().max()).item()


def biwkv_inputs(T, C=6, B=1, seed=0, decay=5.0, k_std=2.0, per_step=False):
    """Model-like inputs: w = decay/T, u = first/T (or per-step w when ``per_step``), k ~ N(0, k_std^2)."""
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(B, T, C, generator=g, dtype=torch.float64) * k_std
    v = torch.randn(B, T, C, generator=g, dtype=torch.float64)
    w = (torch.rand(C, generator=g, dtype=torch.float64) * 2 - 1) * decay
    u = torch.randn(C, generator=g, dtype=torch.float64) * 3
    if not per_step:
        w, u = w / T, u / T
    return w, u, k, v


def f32(*xs):
    return tuple(x.float() for x in xs)


@pytest.mark.parametrize("T", LENGTHS)
@pytest.mark.parametrize("method", ["auto", "matmul", "scan"])
def test_bi_wkv_matches_formula_fp32(T, method):
    args = biwkv_inputs(T, seed=T)
    exact = bi_wkv_ref(*args)                                     # fp64: the formula's true value
    out = bi_wkv(*f32(*args), method=method)
    assert out.dtype == torch.float32
    assert rel_err(exact, out) <= 1e-5
    assert rel_err(bi_wkv_ref(*f32(*args)), out) <= 1e-5          # and the fp32 reference


@pytest.mark.parametrize("T", [1, 2, 33, 100])
@pytest.mark.parametrize("chunk", [1, 3, 7, 64])
@pytest.mark.parametrize("method", ["matmul", "scan"])
def test_bi_wkv_is_the_formula_in_fp64(T, chunk, method):
    """Any chunking (including padded last chunks) is an exact re-association of the same sums."""
    args = biwkv_inputs(T, C=4, B=2, seed=chunk)
    assert rel_err(bi_wkv_ref(*args), bi_wkv(*args, method=method, chunk_size=chunk)) <= 1e-12


EXTREME = {
    # per-step decay: e^{w T} would be e^{5000}
    "large-decay": dict(decay=5.0, per_step=True),
    # far tokens up-weighted: e^{-w T} = e^{+51}
    "growth": dict(decay=0.05, per_step=True),
    # keys spanning +-100: e^{k} overflows fp32
    "large-keys": dict(k_std=30.0),
    "large-decay-and-keys": dict(decay=3.0, per_step=True, k_std=20.0),
}


@pytest.mark.parametrize("case", sorted(EXTREME))
@pytest.mark.parametrize("T", [33, 577, 1024])
def test_bi_wkv_extreme_inputs(case, T):
    args = biwkv_inputs(T, seed=T + len(case), **EXTREME[case])
    if case == "growth":
        args = (-args[0].abs(),) + args[1:]                      # every channel grows
    exact = bi_wkv_ref(*args)
    out = bi_wkv(*f32(*args))                                     # auto: falls back to the scan form here
    assert rel_err(exact, out) <= 1e-5
    assert rel_err(exact, bi_wkv(*f32(*args), method="scan")) <= 1e-5


@pytest.mark.parametrize("T", [33, 1024])
def test_matmul_form_is_exact_up_to_its_bounds(T):
    w, u, k, v = biwkv_inputs(T, seed=T)
    k = (k - k.amin(1, keepdim=True)) / (k.amax(1, keepdim=True) - k.amin(1, keepdim=True)) * MATMUL_MAX_SPREAD
    w = torch.sign(w) * MATMUL_MAX_WT / T                        # both signs: decay and growth
    u = torch.sign(u) * MATMUL_MAX_U
    args = (w, u, k, v)
    assert _matmul_is_exact(*f32(w, u, k))
    assert rel_err(bi_wkv_ref(*args), bi_wkv(*f32(*args), method="matmul")) <= 1e-5


def test_auto_uses_the_scan_when_the_matmul_form_would_underflow():
    """One key at +100, strong decay: far rows are made of terms e^-100 below the key maximum, which the
    matmul form (scaled by e^{max k}) loses; the scan form keeps every row's own largest term."""
    T = 64
    w, u, k, v = biwkv_inputs(T, seed=1, decay=5.0, per_step=True)
    w, k = w.abs(), torch.zeros_like(k)
    k[:, 0] = 100.0
    exact = bi_wkv_ref(w, u, k, v)
    w, u, k, v = f32(w, u, k, v)
    assert (k.amax(1) - k.amin(1)).max() > MATMUL_MAX_SPREAD
    matmul = bi_wkv(w, u, k, v, method="matmul")
    assert not torch.isfinite(matmul).all() or rel_err(exact, matmul) > 1e-2      # why the bounds exist
    assert rel_err(exact, bi_wkv(w, u, k, v)) <= 1e-5


def test_bi_wkv_low_precision_inputs_are_computed_in_fp32():
    w, u, k, v = f32(*biwkv_inputs(50, seed=3))
    out = bi_wkv(w, u, k.bfloat16(), v.bfloat16())
    assert out.dtype == torch.float32
    assert rel_err(bi_wkv_ref(w, u, k.bfloat16().float(), v.bfloat16().float()), out) <= 1e-5


@pytest.mark.parametrize("method", ["matmul", "scan"])
def test_bi_wkv_gradients_match_the_formula(method):
    args = [x.clone().requires_grad_() for x in biwkv_inputs(37, C=3, B=2, seed=5)]
    grads_ref = torch.autograd.grad(bi_wkv_ref(*args).square().sum(), args)
    grads = torch.autograd.grad(bi_wkv(*args, method=method).square().sum(), args)
    for name, a, b in zip("wukv", grads_ref, grads):
        assert rel_err(a, b) <= 1e-10, name


def test_bi_wkv_rejects_bad_shapes():
    w, u, k, v = biwkv_inputs(5, C=4)
    with pytest.raises(ValueError, match=r"k and v must both be \[B, T, C\]"):
        bi_wkv(w, u, k, v[:, :3])
    with pytest.raises(ValueError, match=r"w and u must be \[C\]"):
        bi_wkv(w[:3], u, k, v)
    with pytest.raises(ValueError, match="method must be one of"):
        bi_wkv(w, u, k, v, method="cuda")


# ---- the official kernel's behaviour (doc 5.4) ---------------------------------------------------------------

@pytest.mark.parametrize("T", [1, 7, 32])
def test_kernel_is_the_symmetric_form_up_to_32_tokens(T):
    """With one token per chunk the kernel uses distance |t-i|: the formula with u + w, plus its 1e-6 eps."""
    w, u, k, v = biwkv_inputs(T, C=8, seed=T)
    assert rel_err(bi_wkv_ref(w, u + w, k, v), bi_wkv_kernel_ref(w, u, k, v, eps=0.0)) <= 1e-12


@pytest.mark.parametrize("T", [33, 196, 1024])
def test_kernel_departs_from_the_formula_beyond_32_tokens(T):
    w, u, k, v = biwkv_inputs(T, C=4, seed=T, decay=3.0)
    diff = (bi_wkv_kernel_ref(w, u, k, v) - bi_wkv_ref(w, u, k, v)).abs().max().item()
    assert 1e-5 < diff < 0.2                                      # small, but not rounding


# ---- VRWKV6: bidirectional WKV-6 ----------------------------------------------------------------------------

def wkv6_inputs(T, B=2, H=2, N=8, seed=0, infinite=False):
    g = torch.Generator().manual_seed(seed)
    r, k, v = (torch.randn(B, T, H, N, generator=g, dtype=torch.float64) for _ in range(3))
    w_hat = torch.randn(B, T, H, N, generator=g, dtype=torch.float64) * 1.5 - 1
    if infinite:
        w_hat[:, ::4, :, ::3] = 1000.0                            # exp(w_hat) = inf: log decay -inf
    return r, k, v, -torch.exp(w_hat), torch.randn(H, N, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("T", [1, 31, 33, 196])
@pytest.mark.parametrize("chunk", [4, 16])
def test_bi_wkv6_matches_formula(T, chunk):
    args = wkv6_inputs(T, seed=T)
    exact = bi_wkv6_ref(*args)
    assert rel_err(exact, bi_wkv6(*f32(*args), chunk_size=chunk)) <= 1e-5
    assert rel_err(exact, bi_wkv6(*args, chunk_size=chunk)) <= 1e-5   # fp64 in: the fast form runs in fp32


@pytest.mark.parametrize("T", [2, 17, 40])
def test_bi_wkv6_full_forgetting(T):
    args = wkv6_inputs(T, seed=T, infinite=True)
    assert torch.isinf(args[3]).any()
    assert rel_err(bi_wkv6_ref(*args), bi_wkv6(*f32(*args))) <= 1e-5


@pytest.mark.parametrize("T", [1, 9, 33])
def test_bi_wkv6_formula_is_two_recurrences(T):
    """The doc's description: a forward and a backward RWKV-6 scan from zero states, bonus once."""
    args = wkv6_inputs(T, seed=T + 1)
    r, k, v, w_log, u = f32(*args)                                # wkv6_ref is an fp32 op
    zero = torch.zeros(r.shape[0], r.shape[2], r.shape[3], r.shape[3])
    fwd, _ = wkv6_ref(r, k, v, w_log, u, zero)
    bwd, _ = wkv6_ref(*(x.flip(1) for x in (r, k, v, w_log)), torch.zeros_like(u), zero)
    assert rel_err(bi_wkv6_ref(*args), fwd + bwd.flip(1)) <= 1e-5


def test_bi_wkv6_rejects_bad_shapes():
    r, k, v, w_log, u = wkv6_inputs(4)
    with pytest.raises(ValueError, match=r"must all be \[B, T, H, N\]"):
        bi_wkv6(r, k, v[:, :2], w_log, u)
    with pytest.raises(ValueError, match=r"u must be \[H, N\]"):
        bi_wkv6_ref(r, k, v, w_log, u[:1])


def test_scan_form_has_no_loop_per_token(monkeypatch):
    """The scan advances all chunks together: about 2 sqrt(T) merges for T tokens, not T."""
    import vrwkv_edge.ops.biwkv as ops
    calls = []
    real = ops._merge
    monkeypatch.setattr(ops, "_merge", lambda *a: calls.append(1) or real(*a))
    bi_wkv(*f32(*biwkv_inputs(1024)), method="scan")
    assert len(calls) <= 2 * 32 + 3
