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
* ``"compact"`` (the exported graphs' form): the sums as prefix sums in centred frames, ``e^{-(t-j) w} =
  e^{-a_t} e^{a_j}`` with ``a_j = (j - (T-1)/2) w``, by 0/1 matrices inside chunks and across them (MatMuls),
  around ``e^{max k}``.  A fixed handful of ops for any T (no loop: a traced layer is ~35 ONNX nodes, ~60 with
  the official semantics, where the scan form unrolls ~sqrt(T) steps into hundreds), O(T (L + T/L) C) work.
  Exact while |w| T <= COMPACT_MAX_WT and |u| <= COMPACT_MAX_U, bounds on the weights only: the largest key
  reaches every token with weight >= e^{-|w| T}, so whatever underflows against e^{max k} is negligible.

``method="auto"`` (the default) checks the bounds on the actual input and picks matmul or scan; while a graph is
traced (``torch.compiler.is_exporting()``, the ONNX exporter) it takes the compact form, whose graph answers NaN
in any channel whose w or u break its bounds (a graph cannot raise, and it must never be silently wrong).  Eager
results are unchanged: the compact form is not faster there on every shape (measured on this machine), so
eager calls keep matmul / scan.

**The official CUDA kernel** (doc 5.4, 7; ``cuda_new/bi_wkv_kernel.cu``, and the old ``cuda/wkv_cuda.cu``, the
same arithmetic).  The released checkpoints were trained and evaluated with it, and it departs from the formula
at every T >= 2:

* it splits the sequence into 32 chunks of ``Lc = ceil(T/32)`` tokens; at a chunk start the sums use distance
  |t-i| (so for T <= 32, one token per chunk, it is the *symmetric* form: the formula with ``u + w`` in place of
  u), inside a chunk the left recurrence uses |t-i|-1, and the right-hand update subtracts ``e^{k+w}`` where
  ``e^{k}`` was added, which leaves a "ghost" term ``(1 - e^w) e^{k_j + (t-j) w}`` for the chunk's tokens up
  to t;
* it adds ``eps = 1e-6`` to the denominator after rescaling by its running maximum exponent o_t, i.e.
  ``eps e^{o_t}`` on the raw scale, so a common offset on all keys changes nothing.

:func:`bi_wkv_official_ref` ports the kernel operation by operation (the reference); :func:`bi_wkv_official`
computes the same result exactly in O(T C), in the matmul, scan and compact forms above ("official" in the
models; the compact form also gets the kernel's eps maximum o_t from dense masked maxima, [Lc, Lc] inside the
chunks and [n, n] across them, O(T Lc C)).
The gap to the formula is largest for few tokens (the logits of a VRWKV-T differ by about 8e-3 at 64 px and
6e-5 at 224 px); ``biwkv_kernel_deviation`` in ``benchmarks/results/vision_rwkv.json`` measures it for
model-like inputs (w = decay/T, k ~ N(0, 2^2), v ~ N(0, 1)): |kernel - formula| averages 1e-5 .. 3e-4 at
T = 196 and 1e-6 .. 3e-5 at T = 784.

**VRWKV6 (RWKV-6 style, per head, data-dependent decay).** ``r, k, v, w_log``: [B, T, H, N] with
``w_log = -exp(w)`` the log decay (may be -inf); ``u`` (``time_faaaa``): [H, N]::

    y_t[j] = sum_i r_t[i] ( u[i] k_t[i] v_t[j]
                            + sum_{s<t} prod_{s<m<t} e^{w_log_m[i]} k_s[i] v_s[j]
                            + sum_{s>t} prod_{t<m<s} e^{w_log_m[i]} k_s[i] v_s[j] )

No normaliser.  :func:`bi_wkv6_ref` is this formula, O(T^2); :func:`bi_wkv6` runs the causal chunked WKV-6 of
:mod:`vrwkv_edge.ops.wkv6` forwards and on the reversed sequence (both without the bonus) and adds the bonus.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .wkv6 import DEFAULT_CHUNK, wkv6_chunked

# Logit of an empty partial sum: finite, so that empty - empty is 0 and never NaN; exp(NEG - x) is 0.
NEG = -1e30
# Lengths of the official kernel (doc 7): the sequence is split into this many chunks.
KERNEL_TOKEN_SPLIT = 32
KERNEL_EPS = 1e-6
KERNEL_MIN_VALUE = -1e38                 # the kernel's MIN_VALUE: its empty running maximum


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


def bi_wkv_official_ref(w: Tensor, u: Tensor, k: Tensor, v: Tensor, dtype: torch.dtype | None = None,
                        token_split: int = KERNEL_TOKEN_SPLIT, eps: float = KERNEL_EPS) -> Tensor:
    """A port of the official forward kernel (``cuda_new/bi_wkv_kernel.cu``, doc 7), operation by operation.

    The kernel runs one thread per (b, c, lane): lane p owns the tokens ``[p Lc, p Lc + Lc)``, ``Lc =
    ceil(T / token_split)``.  Every thread's arithmetic is reproduced in its order (its two per-chunk sums, the
    cross-lane combines read in ascending lane order, the recurrence with its running maximum exponents and its
    subtractive right-hand update, and ``eps`` added to the denominator *after* rescaling by the running maximum,
    i.e. ``eps * e^{max exponent}`` on the raw scale).  Threads are independent, so this is vectorised over
    (b, c) and lanes; it loops over positions and lanes (about 2 Lc + 2 token_split steps).  Differentiable, but
    with the kernel's cancellations: a reference, not a model path.  Computed in ``dtype``
    (default fp32 as the official wrapper, fp64 for fp64 inputs); returns [B, T, C] in that dtype."""
    _check_biwkv_shapes(w, u, k, v)
    dt = dtype or _compute_dtype(k)
    w, u, k, v = (x.to(dt) for x in (w, u, k, v))
    B, T, C = k.shape
    Lc = -(-T // token_split)
    # Lanes past the last token (T = 196: 28 of 32 hold tokens) write nothing, and in the combines they come
    # after every other lane with nothing to add (sums 0, maxima -1e38), so they are left out.
    P = -(-T // Lc)
    lane = torch.arange(P, device=k.device)
    length = (T - lane * Lc).clamp(max=Lc).view(1, P, 1)                 # tokens per lane; the last may be short
    pad = lambda x: F.pad(x, (0, 0, 0, P * Lc - T)).view(B, P, Lc, C)    # noqa: E731  (pads are never used)
    k4, v4 = pad(k), pad(v)
    kn4, vn4 = pad(k.roll(-1, 1)), pad(v.roll(-1, 1))                    # token (i + 1) % T, as the kernel reads
    zero = k.new_zeros(B, P, C)
    a, b, c, d = zero, zero, zero, zero
    o1, o2 = (torch.full_like(zero, KERNEL_MIN_VALUE),) * 2
    for m in range(Lc):     # per lane: (c, d; o1) seen from its first token, (a, b; o2) from just past its last
        on = m < length
        kk, vv = k4[:, :, m], v4[:, :, m]
        no = torch.maximum(o1, kk - w * m)
        e1, e3 = torch.exp(o1 - no), torch.exp(kk - w * m - no)
        c, d, o1 = (torch.where(on, x, y) for x, y in ((e1 * c + e3 * vv, c), (e1 * d + e3, d), (no, o1)))
        back = (length - 1 - m).clamp(min=0).expand(B, P, C).unsqueeze(2)  # token len-1-m of the lane
        kk, vv = k4.gather(2, back).squeeze(2), v4.gather(2, back).squeeze(2)
        no = torch.maximum(o2, kk - w * (m + 1))
        e2, e3 = torch.exp(o2 - no), torch.exp(kk - w * (m + 1) - no)
        a, b, o2 = (torch.where(on, x, y) for x, y in ((e2 * a + e3 * vv, a), (e2 * b + e3, b), (no, o2)))
    # Cross-lane combines (__shfl_sync), lane i read in ascending order: lanes before p into (a, b), p and after
    # into (c, d), each decayed by whole chunks.
    a2, b2, c2, d2 = zero, zero, zero, zero
    o3, o4 = (torch.full_like(zero, KERNEL_MIN_VALUE),) * 2
    lanes = lane.view(1, P, 1)
    for i in range(P):
        dist = ((lanes - i - 1) * Lc).to(dt)
        no = torch.maximum(o2[:, i:i + 1] - w * dist, o4)
        e_old, e_new = torch.exp(o4 - no), torch.exp(o2[:, i:i + 1] - w * dist - no)
        left = lanes > i
        a2, b2, o4 = (torch.where(left, x, y) for x, y in
                      ((a2 * e_old + a[:, i:i + 1] * e_new, a2), (b2 * e_old + b[:, i:i + 1] * e_new, b2), (no, o4)))
        dist = ((i - lanes) * Lc).to(dt)
        no = torch.maximum(o1[:, i:i + 1] - w * dist, o3)
        e_old, e_new = torch.exp(o3 - no), torch.exp(o1[:, i:i + 1] - w * dist - no)
        right = lanes <= i
        c2, d2, o3 = (torch.where(right, x, y) for x, y in
                      ((c2 * e_old + c[:, i:i + 1] * e_new, c2), (d2 * e_old + d[:, i:i + 1] * e_new, d2), (no, o3)))
    a, b, o2 = a2, b2, o4
    first = torch.exp(k4[:, :, 0] - o3)
    c, d, o1 = c2 - first * v4[:, :, 0], d2 - first, o3                 # the lane's first token leaves (c, d)
    ys = []
    for m in range(Lc):     # inactive positions of a short last lane compute padding, which is cut off below
        kk, vv, kn, vn = k4[:, :, m], v4[:, :, m], kn4[:, :, m], vn4[:, :, m]
        no = torch.maximum(torch.maximum(o1, u + kk), o2)
        e1, e2, e3 = torch.exp(o1 - no), torch.exp(o2 - no), torch.exp(u + kk - no)
        ys.append((c * e1 + a * e2 + e3 * vv) / (d * e1 + b * e2 + e3 + eps))
        no = torch.maximum(o2 - w, kk)
        e2, e3 = torch.exp(o2 - w - no), torch.exp(kk - no)
        a, b, o2 = e2 * a + e3 * vv, e2 * b + e3, no
        no = torch.maximum(o1 + w, kn + w)
        e1, e3 = torch.exp(o1 + w - no), torch.exp(kn + w - no)
        c, d, o1 = e1 * c - e3 * vn, e1 * d - e3, no
    return torch.stack(ys, 2).reshape(B, P * Lc, C)[:, :T]


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


# Bounds under which the matmul forms are exact in fp32: with keys within MATMUL_MAX_SPREAD of their maximum
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


def _causal_matmul(z: Tensor, w: Tensor, L: int) -> Tensor:
    """Exclusive causal sums ``S_t = sum_{j<t} e^{-(t-1-j) w} z_j`` along the last dim of z [C, R, T] (w: [C],
    any sign), by per-channel Toeplitz matmuls: inside chunks of L (one bmm, which also gives each chunk's
    total seen from just past its end), then across chunks, decaying by e^{-L w} per chunk.  Channel-major, so
    that every matmul is a plain bmm over channels."""
    C, R, T = z.shape
    n = -(-T // L)
    z = F.pad(z, (0, n * L - T)).reshape(C, R * n, L)                            # zeros add nothing
    pos = torch.arange(L, device=w.device, dtype=w.dtype)
    wc = w.view(C, 1, 1)
    out = torch.bmm(z, torch.cat([_toeplitz_decay(w, L, 1).mT, torch.exp(-(L - 1 - pos) * wc).mT], 2))
    totals = out[..., L].reshape(C, R, n).contiguous()                            # strided: a slow bmm
    carry = torch.bmm(totals, _toeplitz_decay(w, n, L).mT).view(C, R * n, 1)
    return torch.baddbmm(out[..., :L], carry, torch.exp(-pos * wc)).view(C, R, n * L)[..., :T]


def _matmul_terms(w: Tensor, k: Tensor, v: Tensor, L: int) -> tuple:
    """``z = e^{k - max k} (v, 1)`` as [C, 2B, T] (num rows, then den rows), and the formula's sums over i < t and
    over i > t (distance |t-i|-1) by :func:`_causal_matmul` (both directions in one call)."""
    B = k.shape[0]
    ek = torch.exp(k - k.amax(1, keepdim=True))
    z = torch.cat([ek * v, ek]).permute(2, 0, 1)                                 # [C, 2B, T]
    both = _causal_matmul(torch.cat([z, z.flip(-1)], 1), w, L)
    return z, both[:, :2 * B], both[:, 2 * B:].flip(-1)


def _ratio(total: Tensor, eps_scale: Tensor | float = 0.0) -> Tensor:
    """[C, 2B, T] (num rows, den rows) -> num / (den + eps_scale) as [B, T, C]."""
    B = total.shape[1] // 2
    return (total[:, :B] / (total[:, B:] + eps_scale)).permute(1, 2, 0)


def _bi_wkv_matmul(w: Tensor, u: Tensor, k: Tensor, v: Tensor, L: int) -> Tensor:
    """The formula by Toeplitz matmuls around e^{max k}: exact only within the MATMUL_* bounds
    (see :func:`_matmul_is_exact`)."""
    z, fwd, bwd = _matmul_terms(w, k, v, L)
    return _ratio(fwd + bwd + torch.exp(u).view(-1, 1, 1) * z)


def _scan_padded(w: Tensor, k: Tensor, v: Tensor, L: int) -> tuple:
    """:func:`_exclusive_scan` of [N, T, C] for any T: padded at the end of the scanned order, after every real
    token, so the padding never enters an exclusive sum of a real position, and cut back to T."""
    T = k.shape[1]
    pad = (0, 0, 0, (-T) % L)
    return tuple(x[:, :T] for x in _exclusive_scan(w, F.pad(k, pad), F.pad(v, pad), L))


def _both_scans(w: Tensor, k: Tensor, v: Tensor, L: int) -> tuple:
    """The formula's partial sums over i < t and over i > t (each at distance |t-i|-1), anchored, in one scan:
    the backward sums are forward sums over the reversed sequence."""
    B = k.shape[0]
    both = _scan_padded(w, torch.cat([k, k.flip(1)]), torch.cat([v, v.flip(1)]), L)
    return tuple(x[:B] for x in both), tuple(x[B:].flip(1) for x in both)


def _current(u: Tensor, k: Tensor, v: Tensor) -> tuple:
    """The current token's term e^{u + k_t} (v_t, 1), anchored on itself."""
    return v, torch.ones_like(v), u + k, torch.zeros_like(v)


def _logit(p: tuple, w: Tensor) -> Tensor:
    """Logit of a partial sum's anchor, which is its largest term (:func:`_merge` keeps the larger anchor)."""
    return p[2] - p[3] * w


def _bi_wkv_scan(w: Tensor, u: Tensor, k: Tensor, v: Tensor, L: int) -> Tensor:
    """Bi-WKV by the anchored exclusive scans: exact for any finite input."""
    fwd, bwd = _both_scans(w, k, v, L)
    num, den, _, _ = _merge(_merge(fwd, bwd, w), _current(u, k, v), w)
    return num / den                                                            # den >= 1: the anchor's own term


# ---- VRWKV: the compact form (exported graphs) ---------------------------------------------------------------

# Bounds under which the compact form is exact in fp32.  They bind w and u only, never the keys: w and u are
# weights, so an exported graph's check on them folds to a constant.  With |w| T <= COMPACT_MAX_WT every frame
# factor e^{+-(j - (T-1)/2) w} lies in [e^-15, e^15]; the largest key (the scale e^{max k}) reaches every token
# with a weight >= e^{-|w| T} >= e^-30, so the terms lost to underflow (k more than ~70 below the maximum) are
# below 1e-18 of every row's denominator, whatever the key spread; |u| <= COMPACT_MAX_U keeps e^u normal.
# (The official semantics subtract: at |w| T = 30, w > 0, with |u| or the key spread far beyond 20 and 30, the
# kernel's own ghost term cancels and every fp32 form, scan and matmul included, loses the same digits.)
# Trained models sit far inside: w = spatial_decay / T and u = spatial_first / T.
COMPACT_MAX_WT, COMPACT_MAX_U = 30.0, 20.0


def compact_form_is_exact(w: Tensor, u: Tensor, T: int) -> Tensor:
    """Per channel ([C] bool): whether the compact form is exact for w, u ([C], already divided by T) at T tokens."""
    return (w.abs() * T <= COMPACT_MAX_WT) & (u.abs() <= COMPACT_MAX_U)


def _check_compact_bounds(name: str, w: Tensor, u: Tensor, T: int) -> None:
    if not bool(compact_form_is_exact(w, u, T).all()):
        raise ValueError(f"{name}: method='compact' needs |w| T <= {COMPACT_MAX_WT} and |u| <= {COMPACT_MAX_U} "
                         f"(got max |w| T = {w.abs().max().item() * T:.4g}, max |u| = {u.abs().max().item():.4g}); "
                         f"use method='scan', exact for any finite input")


def _chunk_tokens(x: Tensor, Lc: int, value: float = 0.0) -> Tensor:
    """[B, T, D] -> [B, n, Lc, D], n = ceil(T / Lc), padded with ``value`` after the last token (the batch as -1:
    a constant shape in a graph with a dynamic batch)."""
    T, D = x.shape[1], x.shape[2]
    n = -(-T // Lc)
    return F.pad(x, (0, 0, 0, n * Lc - T), value=value).reshape(-1, n, Lc, D)


def _unchunk_tokens(x: Tensor, T: int) -> Tensor:
    """[B, n, Lc, D] -> [B, T, D] (narrow: see :func:`~.chunk_scan.from_chunks`)."""
    return x.reshape(-1, x.shape[1] * x.shape[2], x.shape[3]).narrow(1, 0, T)


@functools.lru_cache(maxsize=32)
def _compact_layout(T: int, Lc: int) -> dict:
    """The index constants of the compact form for T tokens in n = ceil(T / Lc) chunks of Lc, as Python lists
    (cached), so that a traced graph holds each as one constant (built from aranges and comparisons, each would
    cost several traced ops per layer).  Rows: the token (or chunk) computed; columns: its sources.

    ``frame`` [n, Lc, 1]: j - (T-1)/2 (centred positions); ``inner`` [Lc, Lc]: 1 where j < t in the chunk;
    ``ghost`` [Lc, Lc]: 1 where 0 < j <= t; ``chunks`` [n, n]: 1 for the earlier chunks; ``chunk_mask`` [n, n, 2, 1]
    and ``inner_mask`` [Lc, Lc, 2, 1]: 0 / NEG, the sources of the left (earlier chunks; j < t) and right (this
    chunk and later ones; 0 < j <= t) running maxima of the kernel's o_t."""
    n = -(-T // Lc)

    def matrix(size, keep, on=1.0, off=0.0):
        return [[on if keep(r, c) else off for c in range(size)] for r in range(size)]

    def masks(size, left, right):
        return [[[[0.0 if left(r, c) else NEG], [0.0 if right(r, c) else NEG]] for c in range(size)]
                for r in range(size)]

    earlier, ghost = (lambda r, c: c < r), (lambda r, c: 0 < c <= r)
    return {"frame": [[[p * Lc + i - (T - 1) / 2] for i in range(Lc)] for p in range(n)],
            "inner": matrix(Lc, earlier), "ghost": matrix(Lc, ghost), "chunks": matrix(n, earlier),
            "chunk_mask": masks(n, earlier, lambda r, c: c >= r), "inner_mask": masks(Lc, earlier, ghost)}


def _constant(T: int, Lc: int, name: str, like: Tensor) -> Tensor:
    return torch.tensor(_compact_layout(T, Lc)[name], dtype=like.dtype, device=like.device)


def _compact_sums(w2: Tensor, k: Tensor, v: Tensor, Lc: int, ghost: bool) -> tuple:
    """The sums of the compact form in chunks of Lc tokens, layout [B, n, Lc, 2C] (numerator channels, then
    denominator channels; ``w2`` is w repeated over both halves).

    ``z_j = e^{k_j - max k} (v_j, 1)``; with the frames ``a_j = (j - (T-1)/2) w`` a weight e^{-(t-j) w} is
    e^{-a_t} e^{a_j}, two factors in [e^{-|w| T / 2}, e^{|w| T / 2}] (centred: half the range).  For t in the
    chunk starting at s, by 0/1 matrices over the Lc tokens of a chunk and over the n chunks (MatMuls: no loop,
    nothing subtracted, each sum at most max(Lc, n) terms)::

        left  = sum_{j<s} e^{a_j} z_j  (as [B, n, 1, 2C]),    inside = sum_{s<=j<t} e^{a_j} z_j
        right = sum_{j>=s+Lc} e^{-a_j} z_j  ([B, n, 1, 2C]),  inside_r = sum_{t<j<s+Lc} e^{-a_j} z_j
        ghost = sum_{s<j<=t} e^{-a_j} z_j   (only when ``ghost``: the official kernel's term)

    Returns ``(kc, m, e^{a}, e^{-a}, z, left, inside, right, inside_r, ghost_or_None)``: the chunked keys (NEG
    padding: e^{NEG - max k} = 0 adds nothing) and their maximum [B, 1, 1, C]."""
    T = k.shape[1]
    kc = _chunk_tokens(k, Lc, NEG)
    m = kc.amax((1, 2), keepdim=True)
    ek = torch.exp(kc - m)
    z = torch.cat([ek * _chunk_tokens(v, Lc), ek], -1)
    a2 = _constant(T, Lc, "frame", k) * w2
    fp, fm = torch.exp(a2), torch.exp(-a2)
    fwd, bwd = z * fp, z * fm
    inner, chunks = _constant(T, Lc, "inner", k), _constant(T, Lc, "chunks", k)
    g = _constant(T, Lc, "ghost", k) @ bwd if ghost else None
    return (kc, m, fp, fm, z, (chunks @ fwd.sum(2)).unsqueeze(2), inner @ fwd, (chunks.mT @ bwd.sum(2)).unsqueeze(2),
            inner.mT @ bwd, g)


def _per_channel_guard(y: Tensor, w: Tensor, u: Tensor, T: int) -> Tensor:
    """NaN in the channels whose w or u break the compact form's bounds: an exported graph cannot raise, and
    with weights inside the bounds (every trained model) this folds to a constant and selects y."""
    return torch.where(compact_form_is_exact(w, u, T), y, float("nan"))


def _bi_wkv_compact(w: Tensor, u: Tensor, k: Tensor, v: Tensor, L: int) -> Tensor:
    """The formula from :func:`_compact_sums` in chunks of L: O(T (L + T/L) C) work, a fixed handful of ops for
    any T (no loop), exact within the COMPACT_* bounds.  The sums over i < t and i > t at distance |t-i| - 1 are
    ``e^{w} e^{-a_t} (left + inside)`` and ``e^{w} e^{a_t} (right + inside_r)``."""
    B, T, C = k.shape
    w2, u2 = torch.cat([w, w]), torch.cat([u, u])
    _, _, fp, fm, z, left, inside, right, inside_r, _ = _compact_sums(w2, k, v, L, ghost=False)
    total = torch.exp(w2) * (fm * (left + inside) + fp * (right + inside_r)) + torch.exp(u2) * z
    return _unchunk_tokens(_per_channel_guard(total[..., :C] / total[..., C:], w, u, T), T)


def _official_compact(w: Tensor, u: Tensor, k: Tensor, v: Tensor, Lc: int, eps: float) -> Tensor:
    """The kernel's result (:func:`bi_wkv_official`) from :func:`_compact_sums` in its own chunks of Lc: the left
    sums ``e^{-a_t} (left + e^{w} inside)`` (distance t-j before the chunk, t-j-1 inside it), the right sums
    ``e^{a_t} (right + inside_r)`` (distance j-t), the ghost ``(1 - e^w) e^{a_t} ghost`` and the current token;
    the running maximum o_t of the eps term (see :func:`_official_max_logit`)::

        o_t = max( max_{j<s} k_j + a_j,  max_{s<=j<t} k_j + a_j + w ) - a_t
            ∨ max( max_{j>=s} k_j - a_j, max_{s<j<=t} k_j - a_j + w ) + a_t   ∨  u + k_t

    from dense masked maxima over the chunks ([n, n]) and inside them ([Lc, Lc]), both sides at once.
    O(T Lc C) work, a fixed handful of ops; exact within the COMPACT_* bounds."""
    B, T, C = k.shape
    w2, u2 = torch.cat([w, w]), torch.cat([u, u])
    kc, m, fp, fm, z, left, inside, right, inside_r, ghost = _compact_sums(w2, k, v, Lc, ghost=True)
    total = (fm * (left + torch.exp(w2) * inside) + fp * (right + inside_r - torch.expm1(w2) * ghost)
             + torch.exp(u2) * z)
    a = _constant(T, Lc, "frame", k) * w                                          # [n, Lc, C]
    sides = torch.stack([kc + a, kc - a], 3)                                      # [B, n, Lc, 2, C]: left, right
    over_chunks = (sides.amax(2).unsqueeze(1) + _constant(T, Lc, "chunk_mask", k)).amax(2).unsqueeze(2)
    in_chunk = (sides.unsqueeze(2) + _constant(T, Lc, "inner_mask", k)).amax(3) + w
    o = (torch.maximum(over_chunks, in_chunk) + torch.stack([-a, a], 2)).amax(3)
    o = torch.maximum(o, u + kc)
    y = total[..., :C] / (total[..., C:] + eps * torch.exp(o - m))
    return _unchunk_tokens(_per_channel_guard(y, w, u, T), T)


BI_WKV_METHODS = ("auto", "matmul", "scan", "compact")


def _prepare(name: str, w: Tensor, u: Tensor, k: Tensor, v: Tensor, method: str, chunk_size: int | None) -> tuple:
    """Checks, casts to the compute dtype, picks the method and the chunk length of the full-length sums."""
    _check_biwkv_shapes(w, u, k, v)
    if method not in BI_WKV_METHODS:
        raise ValueError(f"{name}: method must be one of {BI_WKV_METHODS}, got {method!r}")
    dt = _compute_dtype(k)
    w, u, k, v = (x if x.dtype == dt else x.to(dt) for x in (w, u, k, v))       # (a traced .to is two ops)
    # A traced graph (ONNX export) cannot branch on the data, nor raise on the weights: it takes the compact form
    # (a fixed handful of ops, not ~sqrt(T) unrolled steps), whose graph answers NaN in any channel whose w or u
    # break its bounds (:func:`_per_channel_guard`).  Eager calls check those bounds first.
    exporting = torch.compiler.is_exporting() or torch.jit.is_tracing()
    if method == "auto":
        method = "compact" if exporting else "matmul" if _matmul_is_exact(w, u, k) else "scan"
    elif method == "compact" and not exporting:
        _check_compact_bounds(name, w, u, k.shape[1])
    return w, u, k, v, method, chunk_size or math.isqrt(max(k.shape[1] - 1, 0)) + 1     # ceil(sqrt(T))


def bi_wkv(w: Tensor, u: Tensor, k: Tensor, v: Tensor, method: str = "auto", chunk_size: int | None = None) -> Tensor:
    """Exact Bi-WKV in O(T C) work: same contract and result as :func:`bi_wkv_ref` (up to rounding).

    ``method``: "matmul" (per-channel Toeplitz matmuls, few large ops; exact while keys, w*T and u stay within
    the MATMUL_* bounds, which trained models do), "scan" (anchored log-space scans, exact for any finite
    input, ~4 sqrt(T) small ops), "compact" (prefix sums by MatMuls, a fixed handful of ops; exact while
    |w| T and |u| stay within the COMPACT_* bounds, refused eagerly outside them), or "auto": matmul when the
    bounds hold for this input, else scan (one host sync to decide); compact while a graph is being exported,
    which cannot branch on data.  ``chunk_size`` defaults to ceil(sqrt(T)).  Computed in fp32 (fp64 for fp64
    inputs); returns that dtype."""
    w, u, k, v, method, L = _prepare("bi_wkv", w, u, k, v, method, chunk_size)
    return {"matmul": _bi_wkv_matmul, "scan": _bi_wkv_scan, "compact": _bi_wkv_compact}[method](w, u, k, v, L)


def _shift_in(x: Tensor, dim: int, step: int = 1) -> Tensor:
    """x moved ``step`` places along ``dim``, empty maxima (NEG) entering first: exclusive running maxima."""
    pad = [0, 0] * (x.dim() - 1 - dim) + [step, 0]
    return F.pad(x.narrow(dim, 0, x.shape[dim] - step), pad, value=NEG)


def _running_max(x: Tensor, dim: int) -> Tensor:
    """Inclusive running maximum along ``dim`` by doubling: log2 steps of vectorised maxima, faster on CPU than
    ``cummax``, which walks element by element."""
    step = 1
    while step < x.shape[dim]:
        x = torch.maximum(x, _shift_in(x, dim, step))
        step *= 2
    return x


def _official_max_logit(w: Tensor, u: Tensor, k: Tensor, Lc: int) -> Tensor:
    """The kernel's running maximum exponent o_t (see :func:`bi_wkv_official`), [B, T, C], from running maxima
    of ``k_j +- j w`` inside the chunks and over the chunks' maxima (the scan form reads the same maxima off its
    anchors)."""
    B, T, C = k.shape
    n = -(-T // Lc)
    tw = torch.arange(T, device=k.device).to(k.dtype).view(1, T, 1) * w         # t w
    chunked = lambda x: F.pad(x, (0, 0, 0, n * Lc - T), value=NEG).view(B, n, Lc, C)   # noqa: E731
    plus, minus = chunked(k + tw), chunked(k - tw)
    # Left: k_j - (t-1-j) w for s <= j < t, k_j - (t-j) w for j < s.
    left = torch.maximum(_shift_in(_running_max(plus, 2), 2) + w,
                         _shift_in(_running_max(plus.amax(2), 1), 1).unsqueeze(2))
    # Right: k_j + (t-j) w for every j >= s (the maximum at the chunk start, then + w per step), and
    # k_j + (t-j+1) w for s < j <= t (each step's new maximum candidate k_{t} + w).
    from_start = _running_max(minus.amax(2).flip(1), 1).flip(1).unsqueeze(2)
    steps = _running_max(torch.cat([torch.full_like(minus[:, :, :1], NEG), minus[:, :, 1:]], 2), 2) + w
    flat = lambda x: x.reshape(B, n * Lc, C)[:, :T]                                     # noqa: E731
    o = torch.maximum(flat(left) - tw, flat(torch.maximum(from_start, steps)) + tw)
    return torch.maximum(o, u + k)


def _official_matmul(w: Tensor, u: Tensor, k: Tensor, v: Tensor, L: int, Lc: int, eps: float) -> Tensor:
    """The kernel's result by Toeplitz matmuls (within the MATMUL_* bounds): the formula's sums (chunks of L),
    and one :func:`_causal_matmul` inside the kernel chunks over 2C channels (decay w: the in-chunk left sums
    over s <= j < t; decay -w over the values shifted by one: the ghost sums over s < j <= t)."""
    B, T, C = k.shape
    n = -(-T // Lc)
    z, fwd, bwd = _matmul_terms(w, k, v, L)
    # (The shifted chunk's last entry, the next chunk's first value, is in no exclusive sum of a real position.)
    zc = F.pad(z, (0, n * Lc - T)).reshape(C, 2 * B * n, Lc)
    # Whole kernel chunks as one Toeplitz block up to 64 tokens (T <= 2048): bmm costs per matrix, not per size.
    L_in = Lc if Lc <= 64 else math.isqrt(Lc - 1) + 1
    inner = _causal_matmul(torch.cat([zc, zc.roll(-1, -1)]), torch.cat([w, -w]), L_in)
    inner = inner.reshape(2 * C, 2 * B, n * Lc)[..., :T]
    wc = w.view(C, 1, 1)
    m = (torch.arange(T, device=k.device) % Lc).to(k.dtype)                     # position inside the chunk
    before = fwd[..., ::Lc].unsqueeze(-1).expand(C, 2 * B, n, Lc).reshape(C, 2 * B, n * Lc)[..., :T]
    total = (inner[:C] + torch.exp(-(m + 1) * wc) * before + torch.exp(-wc) * bwd - torch.expm1(wc) * inner[C:]
             + torch.exp(u).view(C, 1, 1) * z)
    eps_scale = eps * torch.exp(_official_max_logit(w, u, k, Lc) - k.amax(1, keepdim=True))
    return _ratio(total, eps_scale.permute(2, 0, 1))


def _official_scan(w: Tensor, u: Tensor, k: Tensor, v: Tensor, L: int, Lc: int, eps: float) -> Tensor:
    """The kernel's result from anchored scans, exact for any finite input: the formula's forward/backward
    scans, and one scan inside the kernel chunks over 2C channels (decay w: the in-chunk left sums over
    s <= j < t; decay -w over the keys shifted by one: the ghost sums over s < j <= t).  The maxima are the
    anchors' logits."""
    B, T, C = k.shape
    n = -(-T // Lc)
    fwd, bwd = _both_scans(w, k, v, L)
    # (The shifted chunk's last entry, the next chunk's first key, is in no exclusive sum of a real position.)
    chunked = lambda x: F.pad(x, (0, 0, 0, n * Lc - T)).view(B * n, Lc, C)   # noqa: E731
    kc, vc = chunked(k), chunked(v)
    inner = _scan_padded(torch.cat([w, -w]), torch.cat([kc, kc.roll(-1, 1)], -1),
                         torch.cat([vc, vc.roll(-1, 1)], -1), math.isqrt(Lc - 1) + 1)
    inner = [x.reshape(B, n * Lc, 2 * C)[:, :T] for x in inner]
    in_chunk = tuple(x[..., :C] for x in inner)
    num, den, K, D = (x[..., C:] for x in inner)
    ghost_sum = (num, den, K, -D)                               # the -w scan's distances, counted for w
    m = (torch.arange(T, device=k.device) % Lc).to(k.dtype).view(1, T, 1)       # position inside the chunk
    at_start = lambda x: x[:, ::Lc].unsqueeze(2).expand(B, n, Lc, C).reshape(B, n * Lc, C)[:, :T]  # noqa: E731
    before = tuple(at_start(x) for x in fwd)                    # sum over j < s at distance s-1-j, ...
    left = _merge(in_chunk, before[:3] + (before[3] + m + 1,), w)                  # ... seen from t: t-j
    right = bwd[:3] + (bwd[3] + 1,)
    g = -torch.expm1(w)
    ghost = (ghost_sum[0] * g, ghost_sum[1] * g) + ghost_sum[2:]
    total = _merge(_merge(left, right, w), _merge(ghost, _current(u, k, v), w), w)
    o_max = torch.maximum(torch.maximum(_logit(left, w), u + k), _logit(right, w))
    o_max = torch.maximum(o_max, torch.maximum(at_start(k) + m * w, _logit(ghost_sum, w) + w.clamp(min=0)))
    return total[0] / (total[1] + eps * torch.exp(o_max - _logit(total, w)))


def bi_wkv_official(w: Tensor, u: Tensor, k: Tensor, v: Tensor, method: str = "auto", chunk_size: int | None = None,
                    token_split: int = KERNEL_TOKEN_SPLIT, eps: float = KERNEL_EPS) -> Tensor:
    """What the official CUDA kernel computes (:func:`bi_wkv_official_ref`), exactly, in O(T C) work.

    With ``Lc = ceil(T / token_split)`` and s the start of t's kernel chunk (doc 5.4; every sum per channel)::

        left_t  = sum_{j<s} e^{k_j - (t-j) w} + sum_{s<=j<t} e^{k_j - (t-j-1) w}      (chunk starts: distance |t-j|)
        right_t = sum_{j>t} e^{k_j - (j-t) w}
        ghost_t = (1 - e^w) sum_{s<j<=t} e^{k_j + (t-j) w}       (the kernel's right-hand update subtracts
                                                                 e^{k+w} where e^{k} was added)
        y_t = (left + right + ghost + e^{u+k_t}) over (v, 1), as num / (den + eps e^{o_t})

    where o_t is the kernel's running maximum exponent at t, by which it rescales before adding its eps: the
    largest of u + k_t, the left logits, the right logits, k_s + (t-s) w and the ghost logits (+ w when w > 0).
    For T <= token_split every chunk is one token: the symmetric form (distance |t-j|), plus the eps.

    ``method`` as :func:`bi_wkv`: "matmul" (Toeplitz matmuls within the MATMUL_* bounds), "scan" (anchored scans,
    exact for any finite input: loops over about 2 sqrt(T) + 2 sqrt(Lc) positions, none per token), "compact"
    (within the COMPACT_* bounds; the kernel's own chunks, ``chunk_size`` unused), "auto" (default; compact while
    exporting).  ``chunk_size``: the chunk of the full-length sums (default ceil(sqrt(T))); the kernel's
    own chunks are handled separately.  Nothing is subtracted beyond small multiples (1 - e^{+-w}), so the fp32
    result is closer to the kernel's exact value than the kernel itself, whose right-hand update cancels.
    Differentiable.  fp32 (fp64 for fp64 inputs); returns [B, T, C]."""
    w, u, k, v, method, L = _prepare("bi_wkv_official", w, u, k, v, method, chunk_size)
    Lc = -(-k.shape[1] // token_split)
    if method == "compact":
        return _official_compact(w, u, k, v, Lc, eps)
    return (_official_matmul if method == "matmul" else _official_scan)(w, u, k, v, L, Lc, eps)


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
