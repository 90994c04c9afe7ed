"""RWKV-6 (x060) WKV: the per-token reference, the step function and the exact chunked-parallel form.

Layout (the package-wide contract, see ``vrwkv_edge/state.py``): ``r, k, v, w_log`` are ``[B, T, H, N]``,
``u`` (``time_faaaa``, the current-token bonus) is ``[H, N]``, the state ``S`` is ``[B, H, N, N]`` float32 and
KEY-MAJOR (``S[b, h, key, value]``).  ``w_log`` is the LOG decay, ``-exp(w_hat)`` for official x060, in
``(-inf, 0]``; it may be ``-inf`` (full forgetting), which every function here handles.

Recurrence, per head (state read BEFORE the update; the current token enters through the bonus ``u``)::

    y_t = r_t^T (S_{t-1} + diag(u) k_t v_t^T)
    S_t = diag(exp(w_log_t)) S_{t-1} + k_t v_t^T

Chunked form (``wkv6_chunked``), for a chunk of L tokens starting from S_0::

    y_t = (r_t * exp(g_t))^T S_0 + sum_{s<t} [sum_i r_ti k_si exp(G_tsi)] v_s + (r_t . (u * k_t)) v_t
    S_L = exp(g_L) * S_0 + sum_s (k_s * exp(h_s)) v_s^T

with ``g_t = sum_{m<t} w_log_m`` (exclusive prefix), ``G_tsi = sum_{s<m<t} w_log_mi`` and
``h_s = sum_{m>s} w_log_m`` (exclusive suffix).  Every exponent is a direct sum of log decays, never a
difference of two cumulative sums: RWKV-6's log decay is unbounded below, so differences of cumsums would
overflow ``exp`` or cancel catastrophically (the NaN of fla issue #77).  The pairwise sums ``G`` cost
``L*L*N`` per head and chunk; with L = 16 that is cheap next to the projections.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .chunk_scan import chunk_scan, from_chunks, to_chunks

DEFAULT_CHUNK = 16


def wkv6_step(r: Tensor, k: Tensor, v: Tensor, w_log: Tensor, u: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
    """One token. ``r, k, v, w_log``: [B, H, N] (any float dtype, computed in fp32); ``u``: [H, N];
    ``state``: [B, H, N, N] fp32. Returns ``(y [B, H, N] fp32, new_state)``; the inputs are not modified."""
    r, k, v, w_log, u = (t.float() for t in (r, k, v, w_log, u))
    kv = k.unsqueeze(-1) * v.unsqueeze(-2)                                   # [B, H, N, N]
    y = (r.unsqueeze(-2) @ (state + u.unsqueeze(-1) * kv)).squeeze(-2)                   # r^T (S + diag(u) k v^T)
    new_state = torch.exp(w_log).unsqueeze(-1) * state + kv
    return y, new_state


def wkv6_ref(r: Tensor, k: Tensor, v: Tensor, w_log: Tensor, u: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
    """The specification: a loop of :func:`wkv6_step` over T. Returns ``(y [B, T, H, N] fp32, state)``."""
    ys = []
    for t in range(r.shape[1]):
        y, state = wkv6_step(r[:, t], k[:, t], v[:, t], w_log[:, t], u, state)
        ys.append(y)
    return torch.stack(ys, 1), state


def wkv6_chunked(r: Tensor, k: Tensor, v: Tensor, w_log: Tensor, u: Tensor, state: Tensor,
                 chunk_size: int = DEFAULT_CHUNK) -> tuple[Tensor, Tensor]:
    """Exact chunked-parallel WKV-6 (fp32 throughout). Same contract as :func:`wkv6_ref`.  The chunk-to-chunk
    carry is :func:`~.chunk_scan.chunk_scan`, so this one function is also the exported prefill graph's WKV."""
    B, T, H, N = r.shape
    L = chunk_size
    # Padding tokens have k = 0 (add nothing) and w_log = 0 (decay 1): the final state is unchanged.
    r, k, v, w_log = (to_chunks(t, L) for t in (r, k, v, w_log))                           # [nc, B, H, L, N]
    u = u.float().view(1, 1, H, 1, N)

    # Exclusive prefix sums g_t = sum_{m<t} w_m and exclusive suffix sums h_s = sum_{m>s} w_m, per chunk.
    zeros = torch.zeros_like(w_log[..., :1, :])
    g = torch.cumsum(torch.cat([zeros, w_log[..., :-1, :]], -2), -2)
    h = torch.flip(torch.cumsum(torch.flip(torch.cat([w_log[..., 1:, :], zeros], -2), [-2]), -2), [-2])
    chunk_decay = g[..., -1:, :] + w_log[..., -1:, :]                                       # sum over the chunk

    # Pairwise G[t, s] = sum_{s<m<t} w_m, as a cumulative sum down t of w_m masked to m > s.
    idx = torch.arange(L, device=r.device)
    after = (idx.view(L, 1) > idx.view(1, L)).view(L, L, 1)                                 # [m, s, 1]: m > s
    seg = torch.cumsum(torch.where(after, w_log.unsqueeze(-2), 0.0), -3)                    # sum_{s<m<=t}
    # shift by one token: G[t, s] = seg[t-1, s]; only s < t is used (the same mask, read as [t, s]).
    G = torch.cat([torch.zeros_like(seg[..., :1, :, :]), seg[..., :-1, :, :]], -3)
    decay_ts = torch.where(after, torch.exp(G), 0.0)
    # sum_n r[t, n] k[s, n] decay[t, s, n], elementwise (a three-operand Einsum would not parse in TensorRT 8.6)
    scores = (r.unsqueeze(-2) * k.unsqueeze(-3) * decay_ts).sum(-1)                          # [nc,B,H,L,L]
    bonus = (r * u * k).sum(-1, keepdim=True)
    y_intra = scores @ v + bonus * v                                                        # [nc,B,H,L,N]
    r_in = r * torch.exp(g)                                                                 # reads S_0
    kv_out = (k * torch.exp(h)).transpose(-1, -2) @ v                                       # writes S_L
    decay_col = torch.exp(chunk_decay).transpose(-1, -2)                                    # [nc,B,H,N,1]

    def carry(S: Tensor, xs: tuple[Tensor, ...]):
        y_c, r_c, d_c, kv_c = xs
        return d_c * S + kv_c, y_c + r_c @ S

    state, ys = chunk_scan(carry, state.float(), (y_intra, r_in, decay_col, kv_out))
    return from_chunks(ys, T), state
