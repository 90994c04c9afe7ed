"""Bi-WKV: the bidirectional WKV of Vision-RWKV, references and exact fast forms, pure PyTorch.

Spec: ``../shared/docs/vision-rwkv.md`` sections 5.4 (VRWKV) and 11 (VRWKV6).

**VRWKV (RWKV-4 style, channel-wise, no heads).** ``w, u``: [C], already divided by the token count T by the
caller (``spatial_decay / T``, ``spatial_first / T``); ``k, v``: [B, T, C].  For token t, per channel::

    y_t = [ sum_{i != t} e^{k_i - (|t-i|-1) w} v_i  +  e^{u + k_t} v_t ]
        / [ sum_{i != t} e^{k_i - (|t-i|-1) w}      +  e^{u + k_t}     ]

This is a softmax over i of the logits ``k_i - (|t-i|-1) w`` (and ``u + k_t`` at i = t) applied to v, which is
what :func:`bi_wkv_ref` computes, O(T^2).  w is a free real number: w < 0 up-weights far tokens.

:func:`bi_wkv` computes the same sums exactly in O(T C) work, as a forward and a backward exclusive scan of
``S_{t+1} = e^{-w} S_t + e^{k_t} (v_t, 1)`` plus the current-token term, in one of two forms:

* ``"matmul"``: scale by ``e^{max_t k}`` per channel, then per-channel Toeplitz matmuls of decay factors
  inside chunks of L ~ sqrt(T) tokens and across the chunks (a few large ops, fast on CPU).  Exact while every
  product stays a normal fp32 number, which the bounds ``MATMUL_MAX_*`` on the key spread, |w| T and |u|
  guarantee (trained models stay inside them: w and u are divided by T);
* ``"scan"``: exact for any finite input.  Every partial sum is kept as ``(num, den) * e^{K - D w}``, where
  ``K - D w`` is the exact logit of its largest term (K = that token's key, D = its distance - 1).  Merging two
  partial sums scales the smaller by ``exp(-|difference|) <= 1`` with the difference formed as
  ``(K_a - K_b) - (D_a - D_b) w``, so nothing overflows and exponents never drift (a running ``p - w`` would
  accumulate rounding).  Chunked: the L ~ sqrt(T) positions of all chunks advance together, then the chunk
  totals are carried: about 2 sqrt(T) Python steps, none per token.

``method="auto"`` (the default) checks the bounds on the actual input and picks matmul or scan.

**Clean formula vs. the official CUDA kernel** (doc 5.4, 7).  This module implements the paper formula above
(distance |t-i|-1, no epsilon).  The released kernel differs in two ways the doc pins down exactly:

* for T <= 32 it computes the *symmetric* form with distance |t-i|, which equals the paper form with
  ``u + w`` in place of u (multiply every non-self term by e^{w} and divide through);
* beyond 32 tokens it splits the sequence into 32 chunks of ``ceil(T/32)`` tokens whose start values use
  distance |t-i| while the in-chunk recurrence uses |t-i|-1, plus a "ghost" term, and it adds 1e-6 to the
  denominator.  :func:`bi_wkv_kernel_ref` is that closed form, to reproduce official outputs when needed.
  Measured by ``benchmarks/bench_vision_rwkv.py`` (``biwkv_kernel_deviation`` in
  ``benchmarks/results/vision_rwkv.json``) for model-like inputs (w = decay/T, k ~ N(0, 2^2), v ~ N(0, 1),
  64 channels), |kernel - formula| averages 1e-5 .. 3e-4 at T = 196 (the larger for decay +3, +5) and
  1e-6 .. 3e-5 at T = 784, with maxima of 8e-4 .. 1.4e-2 and 1e-4 .. 3.4e-3; the symmetric form differs from
  the formula by about as much (the doc quotes "about 1e-5 to 3e-3" for both comparisons).

**VRWKV6 (RWKV-6 style, per head, data-dependent decay).** ``r, k, v, w_log``: [B, T, H, N] with
``w_log = -exp(w)`` the log decay (may be -inf); ``u`` (``time_faaaa``): [H, N]::

    y_t[j] = sum_i r_t[i] ( u[i] k_t[i] v_t[j]
                            + sum_{s<t} prod_{s<m<t} e^{w_log_m[i]} k_s[i] v_s[j]
                            + sum_{s>t} prod_{t<m<s} e^{w_log_m[i]} k_s[i] v_s[j] )

No normaliser.  :func:`bi_wkv6_ref` is this formula, O(T^2); :func:`bi_wkv6` runs the causal chunked WKV-6 of
:mod:`vrwkv_edge.ops.wkv6` forwards and on the reversed sequence (both without the bonus) and adds the bonus.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .wkv6 import DEFAULT_CHUNK, wkv6_chunked

# Logit of an empty partial sum: finite, so that empty - empty is 0 and never NaN; exp(NEG - x) is 0.
NEG = -1e30
# Lengths of the official kernel (doc 7): the sequence is split into this many chunks.
KERNEL_TOKEN_SPLIT = 32
KERNEL_EPS = 1e-6


def _compute_dtype(t: Tensor) -> torch.dtype:
    return torch.promote_types(t.dtype, torch.float32)       # fp32, or fp64 when given fp64


def _check_biwkv_shapes(w: Tensor, u: Tensor, k: Tensor, v: Tensor) -> None:
    if k.dim() != 3 or k.shape != v.shape:
        raise ValueError(f"bi_wkv: k and v must both be [B, T, C], got {tuple(k.shape)} and {tuple(v.shape)}")
    C = k.shape[-1]
    if w.shape != (C,) or u.shape != (C,):
        raise ValueError(f"bi_wkv: w and u must be [C] = [{C}], got {tuple(w.shape)} and {tuple(u.shape)}")


# ---- VRWKV: references ------------------------------------------------------------------------------------

def bi_wkv_ref(w: Tensor, u: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """The paper formula, directly: a softmax over all T tokens per (t, channel). O(T^2 C) memory.

    Computed in fp32 (fp64 if the inputs are fp64); returns [B, T, C] in that dtype."""
    _check_biwkv_shapes(w, u, k, v)
    dt = _compute_dtype(k)
    w, u, k, v = (x.to(dt) for x in (w, u, k, v))
    T = k.shape[1]
    pos = torch.arange(T, device=k.device)
    dist = (pos.view(T, 1) - pos.view(1, T)).abs().to(dt)                        # [t, i]
    logits = k.unsqueeze(1) - (dist - 1).view(1, T, T, 1) * w                      # [B, t, i, C]
    eye = torch.eye(T, dtype=torch.bool, device=k.device).view(1, T, T, 1)
    logits = torch.where(eye, (u + k).unsqueeze(2), logits)                       # i = t: u + k_t
    return torch.einsum("btic,bic->btc", torch.softmax(logits, dim=2), v)


def bi_wkv_kernel_ref(w: Tensor, u: Tensor, k: Tensor, v: Tensor,
                      token_split: int = KERNEL_TOKEN_SPLIT, eps: float = KERNEL_EPS) -> Tensor:
    """What the official CUDA kernel computes (doc 5.4 closed form), O(T^2), in fp64; returns k's dtype.

    Chunks of ``Lc = ceil(T / token_split)`` tokens; for token t in the chunk starting at s::

        weight(j) = e^{k_j - (t-j) w}     j < s            e^{k_j - (t-j-1) w}   s <= j < t
                  = e^{k_j - (j-t) w}     j > t            + (1 - e^w) e^{k_j + (t-j) w}   for s < j <= t
        y_t = [sum_j weight(j) v_j + e^{u+k_t} v_t] / [sum_j weight(j) + e^{u+k_t} + eps]

    The ghost term can be negative, so this is not a softmax; it is evaluated around the row's largest
    logit (the eps is rescaled accordingly, so it acts on the raw denominator as in the closed form)."""
    _check_biwkv_shapes(w, u, k, v)
    out_dtype = _compute_dtype(k)
    w, u, k, v = (x.double() for x in (w, u, k, v))
    T = k.shape[1]
    Lc = math.ceil(T / token_split)
    t = torch.arange(T, device=k.device).view(T, 1)
    j = torch.arange(T, device=k.device).view(1, T)
    s = (t // Lc) * Lc                                                             # chunk start of t
    dist = torch.where(j < s, t - j, torch.where(j < t, t - j - 1, j - t)).double()
    main = k.unsqueeze(1) - dist.view(1, T, T, 1) * w                               # [B, t, j, C]
    main = torch.where((j == t).view(1, T, T, 1), NEG, main)                       # self term is separate
    ghost_on = ((j > s) & (j <= t)).view(1, T, T, 1)
    ghost = torch.where(ghost_on, k.unsqueeze(1) + (t - j).double().view(1, T, T, 1) * w, NEG)
    self_logit = u + k                                                             # [B, T, C]
    m = torch.maximum(torch.maximum(main.amax(2), ghost.amax(2)), self_logit)     # [B, T, C]
    e_main = torch.exp(main - m.unsqueeze(2))
    e_ghost = (1 - torch.exp(w)) * torch.exp(ghost - m.unsqueeze(2))
    e_self = torch.exp(self_logit - m)
    weights = e_main + e_ghost
    num = torch.einsum("btjc,bjc->btc", weights, v) + e_self * v
    den = weights.sum(2) + e_self + eps * torch.exp(-m)
    return (num / den).to(out_dtype)


# ---- VRWKV: the exact O(T C) form ---------------------------------------------------------------------------

def _merge(a: tuple, b: tuple, w: Tensor) -> tuple:
    """Sum of two partial sums ``(num, den, K, D)``, each worth ``(num, den) * e^{K - D w}``."""
    na, da, Ka, Da = a
    nb, db, Kb, Db = b
    diff = (Ka - Kb) - (Da - Db) * w                       # logit of a's anchor minus b's
    ea = torch.exp(diff.clamp(max=0))                      # scale of a relative to the larger anchor
    eb = torch.exp((-diff).clamp(max=0))
    a_wins = diff >= 0
    return na * ea + nb * eb, da * ea + db * eb, torch.where(a_wins, Ka, Kb), torch.where(a_wins, Da, Db)


def _exclusive_scan(w: Tensor, k: Tensor, v: Tensor, L: int) -> tuple:
    """Partial sums ``S_t = sum_{i<t} e^{k_i - (t-1-i) w} (v_i, 1)`` for every t, anchored.

    k, v: [N, n*L, C]. Returns ``(num, den, K, D)``, each [N, n*L, C]."""
    N, T, C = k.shape
    n = T // L
    k4, v4 = k.view(N, n, L, C), v.view(N, n, L, C)
    one, zero = torch.ones_like(k4[:, :, 0]), torch.zeros_like(k4[:, :, 0])
    # Pass 1: inside every chunk at once, position by position (L steps).
    state = (zero, zero, torch.full_like(zero, NEG), zero)                      # empty sum
    intra = []
    for j in range(L):
        intra.append(state)                                                     # sum over i < j in the chunk
        num, den, K, D = state
        state = _merge((num, den, K, D + 1), (v4[:, :, j], one, k4[:, :, j], zero), w)
    totals = state                                                              # whole chunk, seen from its end
    intra = [torch.stack(parts, 2) for parts in zip(*intra)]                    # 4 x [N, n, L, C]
    # Pass 2: carry into each chunk the sum over all earlier chunks (n steps on [N, C]).
    carry = (zero[:, 0], zero[:, 0], torch.full_like(zero[:, 0], NEG), zero[:, 0])
    carries = []
    for c in range(n):
        carries.append(carry)
        num, den, K, D = carry
        carry = _merge((num, den, K, D + L), tuple(x[:, c] for x in totals), w)
    carries = [torch.stack(parts, 1).unsqueeze(2) for parts in zip(*carries)]  # 4 x [N, n, 1, C]
    # Token j of chunk c: its in-chunk sum plus the carry decayed over the j tokens before it.
    offset = torch.arange(L, dtype=k.dtype, device=k.device).view(1, 1, L, 1)
    num, den, K, D = _merge(intra, (carries[0], carries[1], carries[2], carries[3] + offset), w)
    return tuple(x.reshape(N, T, C) for x in (num, den, K, D))


# Bounds under which :func:`_bi_wkv_matmul` is exact in fp32: with keys within MATMUL_MAX_SPREAD of their maximum
# (per image and channel), |w| T <= MATMUL_MAX_WT and |u| <= MATMUL_MAX_U, every term it multiplies out lies in
# [e^-80, e^+50]: no overflow and no subnormals, so plain products and sums keep full relative precision.
MATMUL_MAX_SPREAD, MATMUL_MAX_WT, MATMUL_MAX_U = 30.0, 30.0, 20.0


def _matmul_is_exact(w: Tensor, u: Tensor, k: Tensor) -> bool:
    spread = (k.amax(1) - k.amin(1)).max()
    return bool((spread <= MATMUL_MAX_SPREAD) & (w.abs().max() * k.shape[1] <= MATMUL_MAX_WT)
                & (u.abs().max() <= MATMUL_MAX_U))


def _toeplitz_decay(w: Tensor, n: int, step: int) -> Tensor:
    """[C, n, n]: entry [a, b] = e^{-(a-1-b) step w} for b < a, else 0 (the lower triangle: earlier b)."""
    idx = torch.arange(n, device=w.device)
    dist = (idx.view(n, 1) - 1 - idx.view(1, n)).to(w.dtype)
    return torch.where(idx.view(1, n) < idx.view(n, 1), torch.exp(-dist * (step * w).view(-1, 1, 1)), 0.0)


def _bi_wkv_matmul(w: Tensor, u: Tensor, k: Tensor, v: Tensor, L: int) -> Tensor:
    """Bi-WKV as per-channel Toeplitz matmuls around e^{max k}: inside chunks of L tokens, then across chunks.
    Channel-major ([C, ..., T]) so that every matmul is a plain bmm over channels.  Exact only within the
    MATMUL_* bounds (see :func:`_matmul_is_exact`)."""
    B, T, C = k.shape
    n = -(-T // L)
    ek = torch.exp(k - k.amax(1, keepdim=True))
    z = torch.stack([(ek * v).permute(2, 0, 1), ek.permute(2, 0, 1)], 1)          # [C, 2, B, T]: (num, den)
    if n * L != T:
        z = torch.nn.functional.pad(z, (0, n * L - T))                           # zeros add nothing
    z = z.view(C, 2 * B * n, L)                                                  # rows: (num/den, b, chunk)
    M = _toeplitz_decay(w, L, 1)                                                 # [C, L(j), L(i)]: i before j
    # Inside each chunk: forward sums over i < j (M^T) and backward sums over i > j (M), one bmm.
    intra = torch.bmm(z, torch.cat([M.transpose(1, 2), M], 2))                   # [C, rows, 2L]
    fwd, bwd = intra[..., :L], intra[..., L:]
    # Each chunk's total seen from just past its end (forward) and just before its start (backward) ...
    decay1 = torch.exp(-w).view(C, 1)
    tot_f = (fwd[..., -1] * decay1 + z[..., -1]).view(C, 2 * B, n)
    tot_b = (bwd[..., 0] * decay1 + z[..., 0]).view(C, 2 * B, n)
    # ... carried to every later (earlier) chunk, decaying by e^{-L w} per chunk.
    Mc = _toeplitz_decay(w, n, L)
    carry_f = torch.bmm(tot_f, Mc.transpose(1, 2)).view(C, -1, 1)
    carry_b = torch.bmm(tot_b, Mc).view(C, -1, 1)
    pos = torch.arange(L, device=w.device, dtype=w.dtype)
    from_start = torch.exp(-pos * w.view(C, 1)).view(C, 1, L)                   # decay over the j tokens before
    to_end = torch.exp(-(L - 1 - pos) * w.view(C, 1)).view(C, 1, L)
    total = fwd + bwd + torch.exp(u).view(C, 1, 1) * z + carry_f * from_start + carry_b * to_end
    total = total.view(C, 2, B, n * L)[..., :T]
    return (total[:, 0] / total[:, 1]).permute(1, 2, 0)                          # [B, T, C] (a view)


def _bi_wkv_scan(w: Tensor, u: Tensor, k: Tensor, v: Tensor, L: int) -> Tensor:
    """Bi-WKV by the anchored exclusive scans: exact for any finite input."""
    B, T, C = k.shape
    pad = (-T) % L
    # Both directions in one scan: the backward sums are forward sums over the reversed sequence.  Padding
    # goes at the end of the scanned order, after every real token, so it never enters an exclusive sum.
    ks = torch.nn.functional.pad(torch.cat([k, k.flip(1)]), (0, 0, 0, pad))
    vs = torch.nn.functional.pad(torch.cat([v, v.flip(1)]), (0, 0, 0, pad))
    num, den, K, D = (x[:, :T] for x in _exclusive_scan(w, ks, vs, L))
    fwd = tuple(x[:B] for x in (num, den, K, D))
    bwd = tuple(x[B:].flip(1) for x in (num, den, K, D))
    cur = (v, torch.ones_like(v), u + k, torch.zeros_like(v))                  # the current token, bonus u
    num, den, _, _ = _merge(_merge(fwd, bwd, w), cur, w)
    return num / den                                                            # den >= 1: the anchor's own term


BI_WKV_METHODS = ("auto", "matmul", "scan")


def bi_wkv(w: Tensor, u: Tensor, k: Tensor, v: Tensor, method: str = "auto", chunk_size: int | None = None) -> Tensor:
    """Exact Bi-WKV in O(T C) work: same contract and result as :func:`bi_wkv_ref` (up to rounding).

    ``method``: "matmul" (per-channel Toeplitz matmuls, few large ops; exact while keys, w*T and u stay within
    the MATMUL_* bounds, which trained models do), "scan" (anchored log-space scans, exact for any finite
    input, ~4 sqrt(T) small ops), or "auto": matmul when the bounds hold for this input, else scan (one
    host sync to decide; always scan while a graph is being exported, which cannot branch on data).  ``chunk_size`` defaults to
    ceil(sqrt(T)).  Computed in fp32 (fp64 for fp64 inputs); returns that dtype."""
    _check_biwkv_shapes(w, u, k, v)
    if method not in BI_WKV_METHODS:
        raise ValueError(f"bi_wkv: method must be one of {BI_WKV_METHODS}, got {method!r}")
    dt = _compute_dtype(k)
    w, u, k, v = (x.to(dt) for x in (w, u, k, v))
    T = k.shape[1]
    L = chunk_size or math.isqrt(max(T - 1, 0)) + 1                            # ceil(sqrt(T))
    if method == "auto":
        # A traced graph (ONNX export) cannot branch on the data: it takes the form exact for every input.
        exporting = torch.compiler.is_exporting() or torch.jit.is_tracing()
        method = "scan" if exporting or not _matmul_is_exact(w, u, k) else "matmul"
    return (_bi_wkv_matmul if method == "matmul" else _bi_wkv_scan)(w, u, k, v, L)


# ---- VRWKV6 --------------------------------------------------------------------------------------------------

def _check_biwkv6_shapes(r: Tensor, k: Tensor, v: Tensor, w_log: Tensor, u: Tensor) -> None:
    if r.dim() != 4 or not (r.shape == k.shape == v.shape == w_log.shape):
        raise ValueError(f"bi_wkv6: r, k, v, w_log must all be [B, T, H, N], got "
                         f"{[tuple(x.shape) for x in (r, k, v, w_log)]}")
    if u.shape != r.shape[2:]:
        raise ValueError(f"bi_wkv6: u must be [H, N] = {list(r.shape[2:])}, got {tuple(u.shape)}")


def bi_wkv6_ref(r: Tensor, k: Tensor, v: Tensor, w_log: Tensor, u: Tensor) -> Tensor:
    """The bidirectional RWKV-6 formula, directly, O(T^2 N) memory per head. The decay products are running
    products of ``e^{w_log}`` (in [0, 1]), so -inf log decays are exact zeros. fp32 (fp64 for fp64 inputs)."""
    _check_biwkv6_shapes(r, k, v, w_log, u)
    dt = _compute_dtype(r)
    r, k, v, w_log, u = (x.to(dt) for x in (r, k, v, w_log, u))
    T = r.shape[1]
    decay = torch.exp(w_log)                                                      # [B, T, H, N]
    idx = torch.arange(T, device=r.device)
    # P[m, s] = prod_{s < m' <= m} decay_m'  (cumulative product down m of decay_m masked to m > s)
    after = (idx.view(T, 1) > idx.view(1, T)).view(1, T, T, 1, 1)                  # [., m, s, ., .]
    P = torch.cumprod(torch.where(after, decay.unsqueeze(2), 1.0), dim=1)          # [B, m, s, H, N]
    # forward weight for s < t: prod_{s<m<t} = P[t-1, s]; row t = 0 has no s < t
    fwd = torch.cat([torch.zeros_like(P[:, :1]), P[:, :-1]], 1)                    # [B, t, s, H, N]
    fwd = torch.where((idx.view(T, 1) > idx.view(1, T)).view(1, T, T, 1, 1), fwd, 0.0)
    # backward weight for s > t: prod_{t<m<s} = fwd[s, t] of the same products, transposed
    bwd = fwd.transpose(1, 2)
    diag = torch.eye(T, dtype=dt, device=r.device).view(1, T, T, 1, 1) * u         # bonus at s = t
    weight = fwd + bwd + diag                                                      # [B, t, s, H, N]
    scores = torch.einsum("bthi,bshi,btshi->bhts", r, k, weight)
    return torch.einsum("bhts,bshj->bthj", scores, v)


def bi_wkv6(r: Tensor, k: Tensor, v: Tensor, w_log: Tensor, u: Tensor, chunk_size: int = DEFAULT_CHUNK) -> Tensor:
    """Exact bidirectional WKV-6: :func:`~vrwkv_edge.ops.wkv6.wkv6_chunked` on the sequence and on its reverse
    (one call, stacked on the batch), zero initial states, bonus added once. Returns [B, T, H, N] fp32."""
    _check_biwkv6_shapes(r, k, v, w_log, u)
    B, T, H, N = r.shape
    both = [torch.cat([x, x.flip(1)]).float() for x in (r, k, v, w_log)]
    state0 = torch.zeros(2 * B, H, N, N, dtype=torch.float32, device=r.device)
    y, _ = wkv6_chunked(*both[:3], both[3], torch.zeros_like(u, dtype=torch.float32), state0, chunk_size)
    r, k, v = (x.float() for x in (r, k, v))
    bonus = (r * u.float() * k).sum(-1, keepdim=True) * v                        # the current token, once
    return y[:B] + y[B:].flip(1) + bonus
