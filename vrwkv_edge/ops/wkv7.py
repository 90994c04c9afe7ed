"""RWKV-7 (x070) WKV: the per-token reference, the step function and the exact chunked-parallel form.

Layout (the package-wide contract, see ``vrwkv_edge/state.py``): ``r, w_log, k, v, a, b`` are
``[B, T, H, N]``; the state ``S`` is ``[B, H, N, N]`` float32 and KEY-MAJOR (``S[b, h, key, value]``), the
transpose of the official kernels' [value, key] matrix.  ``w_log`` is the LOG decay; for x070 it is
``-exp(-0.5) * sigmoid(w_hat)``, in ``(-0.6066, 0)``.  The model passes ``a = -kk`` and ``b = kk * iclr``.

Recurrence, per head (the generalized delta rule, "diagonal plus rank one"; state read AFTER the update)::

    S_t = diag(exp(w_log_t)) S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T
    y_t = S_t^T r_t

Chunked form (``wkv7_chunked``), for a chunk of L tokens starting from S_0.  Only the rank-one read-outs
``u_t = a_t^T S_{t-1}`` couple the tokens non-diagonally, so with the inclusive cumulative log decay ``c_t``
and ``c'_t = c_t - w_log_t``::

    S_t = e^{c_t} S_0 + sum_{s<=t} e^{c_t - c_s} (b_s u_s + k_s v_s^T)
    U   = (I - A_ab)^{-1} ((a e^{c'}) S_0 + A_ak V)           A_xy[t, s] = sum_i x_ti y_si e^{c'_ti - c_si}, s < t
    Y   = (r e^{c}) S_0 + B_rb U + B_rk V                    B_xy[t, s] = sum_i x_ti y_si e^{c_ti - c_si},  s <= t
    S_L = e^{c_L} S_0 + (b e^{c_L - c})^T U + (k e^{c_L - c})^T V

The decay factors are split as ``(x e^{c'_t}) . (y e^{-c_s})``: exact in fp32 because x070's per-token log decay
is bounded (>= -0.6066), so over a chunk of 16 the largest factor is e^{9.7}.  ``(I - A_ab)^{-1}`` of the
strictly lower-triangular ``A_ab`` is the finite product ``(I + A)(I + A^2)(I + A^4)(I + A^8)`` (A is
nilpotent), which needs only matmuls, so the same code exports to standard ONNX.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .chunk_scan import chunk_scan, from_chunks, to_chunks

DEFAULT_CHUNK = 16
# The largest |w_log| a token may have for the factorised chunk form: x070's bound is exp(-0.5) = 0.6065.
MAX_ABS_LOG_DECAY = 0.6065306597126334


def wkv7_step(r: Tensor, w_log: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor,
              state: Tensor) -> tuple[Tensor, Tensor]:
    """One token. ``r, w_log, k, v, a, b``: [B, H, N]; ``state``: [B, H, N, N] fp32 key-major.
    Returns ``(y [B, H, N] fp32, new_state)``; the inputs are not modified."""
    r, w_log, k, v, a, b = (t.float() for t in (r, w_log, k, v, a, b))
    sa = (a.unsqueeze(-2) @ state).squeeze(-2)                                   # a^T S_{t-1}
    new_state = (torch.exp(w_log).unsqueeze(-1) * state + b.unsqueeze(-1) * sa.unsqueeze(-2)
                 + k.unsqueeze(-1) * v.unsqueeze(-2))
    y = (r.unsqueeze(-2) @ new_state).squeeze(-2)
    return y, new_state


def wkv7_ref(r: Tensor, w_log: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor,
             state: Tensor) -> tuple[Tensor, Tensor]:
    """The specification: a loop of :func:`wkv7_step` over T. Returns ``(y [B, T, H, N] fp32, state)``."""
    ys = []
    for t in range(r.shape[1]):
        y, state = wkv7_step(r[:, t], w_log[:, t], k[:, t], v[:, t], a[:, t], b[:, t], state)
        ys.append(y)
    return torch.stack(ys, 1), state


def unit_lower_inverse(A: Tensor) -> Tensor:
    """``(I - A)^{-1}`` for strictly lower-triangular ``A`` [..., L, L], by the product
    ``(I + A)(I + A^2)(I + A^4)...`` (exact because A^L = 0).  Matmuls only, so it exports to ONNX."""
    L = A.shape[-1]
    eye = torch.eye(L, dtype=A.dtype, device=A.device)
    inv = eye + A
    power = A
    span = 2
    while span < L:
        power = power @ power
        inv = inv + inv @ power
        span *= 2
    return inv


def wkv7_chunked(r: Tensor, w_log: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor, state: Tensor,
                 chunk_size: int = DEFAULT_CHUNK) -> tuple[Tensor, Tensor]:
    """Exact chunked-parallel WKV-7 (fp32 throughout). Same contract as :func:`wkv7_ref`.  The chunk-to-chunk
    carry is :func:`~.chunk_scan.chunk_scan`, so this one function is also the exported prefill graph's WKV.

    Requires ``w_log >= -MAX_ABS_LOG_DECAY`` (true for every x070 model); ``chunk_size`` <= 32 keeps every
    factor below e^{20}."""
    B, T, H, N = r.shape
    L = chunk_size
    # Padding tokens have k = b = 0 and w_log = 0: they add nothing and keep the state.
    r, w_log, k, v, a, b = (to_chunks(t, L) for t in (r, w_log, k, v, a, b))              # [nc, B, H, L, N]
    c = torch.cumsum(w_log, -2)                              # inclusive
    c_excl = c - w_log
    c_last = c[..., -1:, :]                                  # [nc, B, H, 1, N]
    a_in = a * torch.exp(c_excl)                             # reads S_{t-1}
    r_in = r * torch.exp(c)                                  # reads S_t
    inv_decay = torch.exp(-c)
    b_src, k_src = b * inv_decay, k * inv_decay
    to_end = torch.exp(c_last - c)
    b_out, k_out = b * to_end, k * to_end

    strict = torch.ones(L, L, dtype=torch.bool, device=r.device).tril(-1)
    incl = torch.ones(L, L, dtype=torch.bool, device=r.device).tril(0)
    A_ab = (a_in @ b_src.transpose(-1, -2)).masked_fill(~strict, 0.0)
    A_ak = (a_in @ k_src.transpose(-1, -2)).masked_fill(~strict, 0.0)
    B_rb = (r_in @ b_src.transpose(-1, -2)).masked_fill(~incl, 0.0)
    B_rk = (r_in @ k_src.transpose(-1, -2)).masked_fill(~incl, 0.0)
    solve = unit_lower_inverse(A_ab)
    u_from_state = solve @ a_in                              # U = u_from_state @ S_0 + u_from_v
    u_from_v = solve @ (A_ak @ v)
    y_from_v = B_rk @ v
    decay_col = torch.exp(c_last).transpose(-1, -2)          # [nc, B, H, N, 1]
    b_outT = b_out.transpose(-1, -2)
    kv_out = k_out.transpose(-1, -2) @ v

    def carry(S: Tensor, xs: tuple[Tensor, ...]):
        us_c, uv_c, r_c, brb_c, yv_c, d_c, bT_c, kv_c = xs
        U = us_c @ S + uv_c
        y = r_c @ S + brb_c @ U + yv_c
        return d_c * S + bT_c @ U + kv_c, y

    state, ys = chunk_scan(carry, state.float(),
                           (u_from_state, u_from_v, r_in, B_rb, y_from_v, decay_col, b_outT, kv_out))
    return from_chunks(ys, T), state
