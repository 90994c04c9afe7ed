"""Bi-WKV (VRWKV) and bidirectional WKV-6 (VRWKV6): every fast form against the O(T^2) formula, and the
official CUDA kernel's semantics: the port against a line-by-line scalar transcription, the fast forms against
the port."""
import math

import pytest
import torch

from vrwkv_edge.ops.biwkv import (MATMUL_MAX_SPREAD, MATMUL_MAX_U, MATMUL_MAX_WT, _matmul_is_exact, bi_wkv, bi_wkv6,
                                  bi_wkv6_ref, bi_wkv_official, bi_wkv_official_ref, bi_wkv_ref)
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
    assert rel_err(bi_wkv_official_ref(*args), bi_wkv_official(*f32(*args), method="matmul")) <= 1e-5


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


# ---- the official kernel (doc 5.4, 7) ---------------------------------------------------------------------

def kernel_scalar(w, u, k, v, P=32, eps=1e-6, MIN=-1e38):
    """``bi_wkv_cuda_forward_kernel`` of ``cuda_new/bi_wkv_kernel.cu`` transcribed line by line, one thread
    (b, c, lane) at a time, in Python floats: the independent check of the vectorised port."""
    B, T, C = k.shape
    Lc = -(-T // P)
    y = torch.zeros(B, T, C, dtype=torch.float64)
    for bb in range(B):
        for ch in range(C):
            kk, vv, ww, uu = k[bb, :, ch].tolist(), v[bb, :, ch].tolist(), float(w[ch]), float(u[ch])
            lanes = []
            for p in range(P):                          # first loop of every thread
                s, n = Lc * p, min(T - Lc * p, Lc)
                a = b = c = d = 0.0
                o1 = o2 = MIN
                for i in range(s, s + n):
                    no = max(o1, kk[i] - ww * (i - s))
                    e1, e3 = math.exp(o1 - no), math.exp(kk[i] - ww * (i - s) - no)
                    c, d, o1 = e1 * c + e3 * vv[i], e1 * d + e3, no
                    ni = 2 * s + n - 1 - i
                    ew = s + n - ni
                    no = max(o2, kk[ni] - ww * ew)
                    e2, e3 = math.exp(o2 - no), math.exp(kk[ni] - ww * ew - no)
                    a, b, o2 = e2 * a + e3 * vv[ni], e2 * b + e3, no
                lanes.append((a, b, c, d, o1, o2))
            for p in range(P):                          # the shuffles, then the last loop
                s, n = Lc * p, min(T - Lc * p, Lc)
                if n <= 0:
                    continue
                a2 = b2 = c2 = d2 = 0.0
                o3 = o4 = MIN
                for i in range(p):
                    ai, bi, _, _, _, o2i = lanes[i]
                    ew = (p - i - 1) * Lc
                    no = max(o2i - ww * ew, o4)
                    a2 = a2 * math.exp(o4 - no) + ai * math.exp(o2i - ww * ew - no)
                    b2 = b2 * math.exp(o4 - no) + bi * math.exp(o2i - ww * ew - no)
                    o4 = no
                for i in range(p, P):
                    _, _, ci, di, o1i, _ = lanes[i]
                    ew = (i - p) * Lc
                    no = max(o1i - ww * ew, o3)
                    c2 = c2 * math.exp(o3 - no) + ci * math.exp(o1i - ww * ew - no)
                    d2 = d2 * math.exp(o3 - no) + di * math.exp(o1i - ww * ew - no)
                    o3 = no
                a, b, o2 = a2, b2, o4
                c, d, o1 = c2 - math.exp(kk[s] - o3) * vv[s], d2 - math.exp(kk[s] - o3), o3
                for i in range(s, s + n):
                    no = max(max(o1, uu + kk[i]), o2)
                    e1, e2, e3 = math.exp(o1 - no), math.exp(o2 - no), math.exp(uu + kk[i] - no)
                    y[bb, i, ch] = (c * e1 + a * e2 + e3 * vv[i]) / (d * e1 + b * e2 + e3 + eps)
                    i2 = (i + 1) % T
                    no = max(o2 - ww, kk[i])
                    e2, e3 = math.exp(o2 - ww - no), math.exp(kk[i] - no)
                    a, b, o2 = e2 * a + e3 * vv[i], e2 * b + e3, no
                    no = max(o1 + ww, kk[i2] + ww)
                    e1, e3 = math.exp(o1 + ww - no), math.exp(kk[i2] + ww - no)
                    c, d, o1 = e1 * c - e3 * vv[i2], e1 * d - e3, no
    return y


OFFICIAL_T = [1, 2, 3, 31, 32, 33, 64, 197, 1024]


@pytest.mark.parametrize("T", [1, 2, 5, 32, 33, 70, 100])
def test_port_is_the_kernel_line_by_line(T):
    args = biwkv_inputs(T, C=2, B=2, seed=T, k_std=3.0)
    assert rel_err(kernel_scalar(*args), bi_wkv_official_ref(*args)) <= 1e-13


@pytest.mark.parametrize("offset", [-20.0, 0.0, 20.0])
@pytest.mark.parametrize("T", OFFICIAL_T)
def test_official_fast_form_equals_the_port(T, offset):
    """Acceptance: the default (fp32) within 1e-5 of the port (fp64), for any common key offset; both fast
    methods equal the port in fp64 to rounding."""
    w, u, k, v = biwkv_inputs(T, C=4, B=2, seed=T, decay=5.0)
    args = (w, u, k + offset, v)
    port = bi_wkv_official_ref(*args)
    assert rel_err(port, bi_wkv_official(*f32(*args))) <= 1e-5
    for method in ("matmul", "scan"):
        assert rel_err(port, bi_wkv_official(*args, method=method)) <= 1e-12, method


@pytest.mark.parametrize("T", [2, 33, 100])
@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_official_scan_any_chunking(T, chunk):
    args = biwkv_inputs(T, C=3, seed=chunk)
    assert rel_err(bi_wkv_official_ref(*args), bi_wkv_official(*args, method="scan", chunk_size=chunk)) <= 1e-12


@pytest.mark.parametrize("T", [1, 64, 197])
def test_kernel_eps_is_added_after_rescaling(T):
    """The kernel adds 1e-6 to the denominator rescaled by its running maximum, so a common offset on all keys
    changes nothing (the old emulation added it to the raw denominator: keys near -20 pulled y toward 0)."""
    w, u, k, v = biwkv_inputs(T, C=4, seed=T)
    base = bi_wkv_official_ref(w, u, k, v)
    for offset in (-20.0, 20.0):
        assert rel_err(base, bi_wkv_official_ref(w, u, k + offset, v)) <= 1e-12
        assert rel_err(base, bi_wkv_official(*f32(w, u, k + offset, v))) <= 1e-5


@pytest.mark.parametrize("offset", [-20.0, 0.0, 20.0])
def test_kernel_eps_single_token(offset):
    """T = 1: o = max(k, u + k), so y = v e^{u-o'} / (e^{u-o'} + 1e-6) with o' = max(0, u), whatever k is."""
    u = torch.tensor([-10.0, 0.0, 3.0], dtype=torch.float64)
    w = torch.zeros(3, dtype=torch.float64)
    k = torch.full((1, 1, 3), offset, dtype=torch.float64)
    v = torch.tensor([[[1.0, -2.0, 0.5]]], dtype=torch.float64)
    e = torch.exp(u - u.clamp(min=0))
    want = v * e / (e + 1e-6)
    assert abs(want[0, 0, 0].item() - 1 / (1 + 1e-6 * math.exp(10))) < 1e-15     # 2% below v: the eps matters
    for y in (bi_wkv_official_ref(w, u, k, v), bi_wkv_official(w, u, k, v), bi_wkv_official(w, u, k, v, "scan")):
        assert rel_err(want, y) <= 1e-14


@pytest.mark.parametrize("T", [1, 7, 32])
def test_kernel_is_the_symmetric_form_up_to_32_tokens(T):
    """With one token per chunk the kernel uses distance |t-i|: the formula with u + w (no eps here)."""
    w, u, k, v = biwkv_inputs(T, C=8, seed=T)
    assert rel_err(bi_wkv_ref(w, u + w, k, v), bi_wkv_official_ref(w, u, k, v, eps=0.0)) <= 1e-12


@pytest.mark.parametrize("T", [2, 33, 196])
def test_kernel_departs_from_the_formula_from_two_tokens(T):
    w, u, k, v = biwkv_inputs(T, C=4, seed=T, decay=3.0)
    diff = (bi_wkv_official_ref(w, u, k, v) - bi_wkv_ref(w, u, k, v)).abs().max().item()
    assert 1e-5 < diff < 0.5                                      # small, but not rounding


@pytest.mark.parametrize("case", ["large-decay", "large-keys"])
def test_official_scan_extreme_inputs(case):
    """The scan form is exact for any finite input; auto leaves the matmul form outside its bounds."""
    args = biwkv_inputs(70, C=3, seed=4, **EXTREME[case])
    port = bi_wkv_official_ref(*args)
    assert rel_err(port, bi_wkv_official(*args, method="scan")) <= 1e-10
    assert rel_err(port, bi_wkv_official(*f32(*args))) <= 1e-5


@pytest.mark.parametrize("method", ["matmul", "scan"])
def test_official_gradients(method):
    args = [x.clone().requires_grad_() for x in biwkv_inputs(37, C=3, B=2, seed=5)]
    assert torch.autograd.gradcheck(lambda *a: bi_wkv_official(*a, method=method), args, fast_mode=True)
    grads_port = torch.autograd.grad(bi_wkv_official_ref(*args).square().sum(), args)
    grads = torch.autograd.grad(bi_wkv_official(*args, method=method).square().sum(), args)
    for name, a, b in zip("wukv", grads_port, grads):
        assert rel_err(a, b) <= 1e-9, name


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


@pytest.mark.parametrize("fn,bound", [(bi_wkv, 2 * 32 + 3), (bi_wkv_official, 2 * 32 + 2 * 6 + 6)])
def test_scan_form_has_no_loop_per_token(monkeypatch, fn, bound):
    """The scans advance all chunks together: about 2 sqrt(T) merges for T tokens (plus 2 sqrt(T/32) inside the
    official kernel's chunks), not T."""
    import vrwkv_edge.ops.biwkv as ops
    calls = []
    real = ops._merge
    monkeypatch.setattr(ops, "_merge", lambda *a: calls.append(1) or real(*a))
    fn(*f32(*biwkv_inputs(1024)), method="scan")
    assert len(calls) <= bound


# ---- the compact form (exported graphs) -----------------------------------------------------------------------

from vrwkv_edge.ops.biwkv import (COMPACT_MAX_U, COMPACT_MAX_WT, _bi_wkv_compact,  # noqa: E402
                                  _official_compact, compact_form_is_exact)

COMPACT_T = [1, 2, 7, 31, 32, 33, 64, 196, 197, 577]         # 1024: in the bound tests below


@pytest.mark.parametrize("T", COMPACT_T)
def test_compact_forms_match_the_references(T):
    """Model-like inputs: the compact formula and official forms (fp32) against the fp64 references."""
    args = biwkv_inputs(T, C=5, B=2, seed=100 + T)
    assert rel_err(bi_wkv_ref(*args), bi_wkv(*f32(*args), method="compact")) <= 1e-5
    assert rel_err(bi_wkv_official_ref(*args), bi_wkv_official(*f32(*args), method="compact")) <= 1e-5


@pytest.mark.parametrize("T,chunk", [(2, 1), (33, 3), (100, 64), (100, 7)])
def test_compact_formula_is_the_formula_in_fp64(T, chunk):
    """Any chunking of the prefix sums is an exact re-association (fp64: rounding only)."""
    args = biwkv_inputs(T, C=3, B=2, seed=chunk)
    assert rel_err(bi_wkv_ref(*args), bi_wkv(*args, method="compact", chunk_size=chunk)) <= 1e-12
    assert rel_err(bi_wkv_official_ref(*args), bi_wkv_official(*args, method="compact")) <= 1e-12


def at_compact_bounds(T, seed, spread):
    """w at +-COMPACT_MAX_WT / T and u at +-COMPACT_MAX_U (both signs, all four combinations over the channels),
    keys rescaled to span exactly ``spread`` per image and channel."""
    w, u, k, v = biwkv_inputs(T, C=8, B=2, seed=seed)
    sign = torch.tensor([1.0, -1.0] * 4, dtype=torch.float64)
    w = sign * COMPACT_MAX_WT / T
    u = sign.view(4, 2).flip(1).reshape(8) * COMPACT_MAX_U
    k = (k - k.amin(1, keepdim=True)) / (k.amax(1, keepdim=True) - k.amin(1, keepdim=True)) * spread
    return w, u, k, v


@pytest.mark.parametrize("T", [2, 33, 196, 1024])
def test_compact_forms_at_their_bounds(T):
    """|w| T and |u| at the bounds, keys spanning MATMUL_MAX_SPREAD: the formula with every sign combination;
    the official semantics with the signs of the matmul form's bound test (its ghost term subtracts, and in its
    worst corner every fp32 form of the kernel, scan and matmul included, loses the same digits)."""
    args = at_compact_bounds(T, seed=T, spread=MATMUL_MAX_SPREAD)
    assert bool(compact_form_is_exact(*args[:2], T).all())
    assert rel_err(bi_wkv_ref(*args), bi_wkv(*f32(*args), method="compact")) <= 1e-5
    w, u, k, v = biwkv_inputs(T, seed=T)
    k = (k - k.amin(1, keepdim=True)) / (k.amax(1, keepdim=True) - k.amin(1, keepdim=True)) * MATMUL_MAX_SPREAD
    args = (torch.sign(w) * COMPACT_MAX_WT / T, torch.sign(u) * COMPACT_MAX_U, k, v)
    assert rel_err(bi_wkv_official_ref(*args), bi_wkv_official(*f32(*args), method="compact")) <= 1e-5


@pytest.mark.parametrize("T", [33, 577])
def test_compact_formula_needs_no_key_bound(T):
    """The bounds bind w and u only: keys spanning +-100 (e^k overflows fp32) or one key 100 above all others
    (far terms underflow against e^{max k}) stay exact at |w| T = 30.  The official semantics only with the
    spike: with keys spread that wide its subtractive ghost term is ill-conditioned in fp32 whatever the form
    (the scan form loses the same digits)."""
    w, u, k, v = at_compact_bounds(T, seed=T + 1, spread=1.0)
    wide = biwkv_inputs(T, C=8, B=2, seed=T + 2, k_std=30.0)[2]
    spike = torch.zeros_like(k)
    spike[:, T // 3] = 100.0
    spike[:, -1] = -100.0
    for keys in (wide, spike):
        args = (w, u, keys, v)
        assert rel_err(bi_wkv_ref(*args), bi_wkv(*f32(*args), method="compact")) <= 1e-5
    args = (w, u, spike, v)
    assert rel_err(bi_wkv_official_ref(*args), bi_wkv_official(*f32(*args), method="compact")) <= 1e-5


@pytest.mark.parametrize("fn", [bi_wkv, bi_wkv_official])
def test_compact_refuses_weights_outside_its_bounds(fn):
    w, u, k, v = biwkv_inputs(40, C=4, seed=2, decay=5.0, per_step=True)    # |w| T up to 200
    with pytest.raises(ValueError, match=r"method='compact' needs \|w\| T <= 30.*use method='scan'"):
        fn(*f32(w, u, k, v), method="compact")
    ok = biwkv_inputs(40, C=4, seed=2)
    with pytest.raises(ValueError, match=r"\|u\| <= 20"):
        fn(*f32(ok[0], torch.full_like(ok[1], 21.0), *ok[2:]), method="compact")
    out = fn(*f32(w, u, k, v))                                              # auto: the exact scan form
    assert rel_err(bi_wkv_official_ref(w, u, k, v) if fn is bi_wkv_official else bi_wkv_ref(w, u, k, v), out) <= 1e-5


def test_compact_graph_answers_nan_where_the_weights_break_the_bounds():
    """What an exported graph does (it cannot raise): NaN in exactly the offending channels, never a number."""
    w, u, k, v = f32(*biwkv_inputs(50, C=4, seed=3))
    w_bad, u_bad = w.clone(), u.clone()
    w_bad[1] = 31.0 / 50
    u_bad[3] = -21.0
    for y in (_bi_wkv_compact(w_bad, u_bad, k, v, 8), _official_compact(w_bad, u_bad, k, v, 2, 1e-6)):
        assert torch.isnan(y[..., [1, 3]]).all() and torch.isfinite(y[..., [0, 2]]).all()


@pytest.mark.parametrize("method", ["compact"])
def test_compact_gradients(method):
    args = [x.clone().requires_grad_() for x in biwkv_inputs(37, C=3, B=2, seed=5)]
    for fast, ref in ((bi_wkv, bi_wkv_ref), (bi_wkv_official, bi_wkv_official_ref)):
        grads_ref = torch.autograd.grad(ref(*args).square().sum(), args)
        grads = torch.autograd.grad(fast(*args, method=method).square().sum(), args)
        for name, a, b in zip("wukv", grads_ref, grads):
            assert rel_err(a, b) <= 1e-9, name


class _SpatialWKVs(torch.nn.Module):
    """The Bi-WKV of a Vision-RWKV layer (weights w, u divided by T as the model does), official and formula
    semantics, at two token counts: one graph, four outputs, so that one (slow) export covers them all."""

    def __init__(self, C):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.decay = torch.nn.Parameter(torch.rand(C, generator=g) * 8 - 5)
        self.first = torch.nn.Parameter(torch.randn(C, generator=g))

    def forward(self, k_short, v_short, k_long, v_long):
        return tuple(fn(self.decay / k.shape[1], self.first / k.shape[1], k, v)
                     for fn in (bi_wkv_official, bi_wkv) for k, v in ((k_short, v_short), (k_long, v_long)))


def _cone_size(graph, output: str) -> int:
    """Number of nodes that ``output`` depends on."""
    producer = {o: n for n in graph.node for o in n.output}
    seen, todo = set(), [output]
    while todo:
        node = producer.get(todo.pop())
        if node is not None and id(node) not in seen:
            seen.add(id(node))
            todo.extend(node.input)
    return len(seen)


@pytest.mark.export
def test_exported_bi_wkv_is_compact_and_exact(tmp_path):
    """While exporting, ``auto`` takes the compact form: in the ONNX graph each Bi-WKV has the same few nodes for
    33 and 577 tokens (nothing unrolled per chunk, no Loop/Scan), and ONNX Runtime's answers equal the PyTorch
    references at two batch sizes (the batch is dynamic)."""
    import warnings

    import onnxruntime as ort

    C, lengths = 6, (33, 577)
    module = _SpatialWKVs(C)
    names = ["y_official_33", "y_official_577", "y_formula_33", "y_formula_577"]
    gen = torch.Generator().manual_seed(1)
    example = [torch.randn(2, T, C, generator=gen) * 2 for T in lengths for _ in "kv"]
    batch = torch.export.Dim("batch")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(module, tuple(example), None, dynamo=True, input_names=["k33", "v33", "k577", "v577"],
                                 output_names=names, dynamic_shapes=tuple({0: batch} for _ in example),
                                 optimize=True, verbose=False, report=False)
    graph = prog.model_proto.graph
    assert not {"Loop", "Scan", "If"} & {n.op_type for n in graph.node}
    cones = {name: _cone_size(graph, name) for name in names}
    # 33 tokens: 17 chunks of 2, 577: 31 chunks of 19 (the scan form unrolls ~sqrt(T) steps: hundreds of nodes);
    # the optimizer may keep a Reshape more or less.
    for semantics, budget in (("official", 70), ("formula", 40)):
        short, long = cones[f"y_{semantics}_33"], cones[f"y_{semantics}_577"]
        assert abs(short - long) <= 2 and max(short, long) <= budget, cones
    path = tmp_path / "biwkv.onnx"
    path.write_bytes(prog.model_proto.SerializeToString())
    sess = ort.InferenceSession(str(path))
    for B in (1, 3):
        xs = [torch.randn(B, T, C, generator=gen) * 2 for T in lengths for _ in "kv"]
        got = sess.run(None, dict(zip(["k33", "v33", "k577", "v577"], (x.numpy() for x in xs))))
        with torch.no_grad():
            for i, (ref, (k, v)) in enumerate((ref, kv) for ref in (bi_wkv_official_ref, bi_wkv_ref)
                                              for kv in (xs[0:2], xs[2:4])):
                T = k.shape[1]
                want = ref(module.decay.double() / T, module.first.double() / T, k.double(), v.double())
                assert rel_err(want, torch.from_numpy(got[i])) <= 1e-5, names[i]
