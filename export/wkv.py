"""The WKV as the exporter sees it: one function per version and path, swappable while a graph is traced.

The models call ``wkv6_chunked`` / ``wkv7_chunked`` (sequence path) and ``wkv6_step`` / ``wkv7_step`` (token
path) through their module globals (``vrwkv_edge.models.rwkv6`` / ``rwkv7``).  The chunked forms in
``vrwkv_edge.ops`` run a Python loop over ``ceil(T / chunk)`` chunks, which ``torch.export`` cannot trace for a
dynamic ``T``.  :func:`wkv_for_export` replaces those names, for the duration of one trace only, with

* :func:`wkv6_chunked_scan` / :func:`wkv7_chunked_scan`: the SAME exact chunked algebra (intra-chunk parts
  computed for all chunks at once), with the chunk-to-chunk recurrence written as ``torch.scan``, which the
  dynamo exporter turns into one ONNX ``Scan`` over chunks.  Padding to a multiple of the chunk size happens
  inside the graph (``Pad`` by ``(-T) mod L``), so the prefill graph takes any ``T >= 1``;
* the step functions are left as they are (they are plain tensor code already).

This is also the seam for a fused WKV node: a replacement set (e.g. one ``torch.library.custom_op`` per
version, translated to an ``rwkv::RwkvWkv7`` node) goes into :data:`WKV_IMPLS` and is selected by name; nothing
else in the graphs changes.  Every replacement must keep the ops' contract (layouts of
``vrwkv_edge/ops/wkv6.py`` and ``wkv7.py``, fp32 key-major state).
"""
from __future__ import annotations

import contextlib
import threading
from typing import Callable, Iterator

import torch
from torch import Tensor

from vrwkv_edge.ops.wkv6 import DEFAULT_CHUNK as WKV6_CHUNK
from vrwkv_edge.ops.wkv7 import DEFAULT_CHUNK as WKV7_CHUNK
from vrwkv_edge.ops.wkv7 import unit_lower_inverse

try:                                                  # torch >= 2.7; a prototype API, hence the guarded import
    from torch._higher_order_ops.scan import scan as _torch_scan
except ImportError:                                   # pragma: no cover - older torch
    _torch_scan = None


def _scan(body: Callable, init: Tensor, xs: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
    """``torch.scan`` over dim 0 of ``xs`` (traced as one higher-order op, exported as ONNX ``Scan``);
    in eager mode outside a trace the same loop in Python, which gives identical numbers."""
    if _torch_scan is not None and _in_export():
        return _torch_scan(body, init, xs)
    carry, ys = init, []
    for i in range(xs[0].shape[0]):
        carry, y = body(carry, tuple(x[i] for x in xs))
        ys.append(y)
    return carry, torch.stack(ys, 0)


def _in_export() -> bool:
    return getattr(_STATE, "exporting", False)


def _chunks(x: Tensor, L: int, pad) -> Tensor:
    """[B, T, H, N] -> [nc, B, H, L, N] fp32, zero-padded at the end of time to a multiple of L."""
    B, _, H, N = x.shape
    x = torch.nn.functional.pad(x.float(), (0, 0, 0, 0, 0, pad))
    return x.reshape(B, -1, L, H, N).permute(1, 0, 3, 2, 4)


def _unchunk(y: Tensor, T) -> Tensor:
    """[nc, B, H, L, N] -> [B, T, H, N]."""
    nc, B, H, L, N = y.shape
    # narrow (length exactly T), not [:, :T]: a slice's length is min(T, nc*L), a symbolic Min that the
    # dynamo exporter (torch 2.13) mistranslates into Min(L, T).
    return torch.narrow(y.permute(1, 0, 3, 2, 4).reshape(B, -1, H, N), 1, 0, T)


def wkv6_chunked_scan(r: Tensor, k: Tensor, v: Tensor, w_log: Tensor, u: Tensor, state: Tensor,
                      chunk_size: int = WKV6_CHUNK) -> tuple[Tensor, Tensor]:
    """Exact chunked WKV-6 with the chunk recurrence as one scan; the contract of
    :func:`vrwkv_edge.ops.wkv6.wkv6_chunked` (and the same arithmetic, see that module for the derivation)."""
    B, T, H, N = r.shape
    L = chunk_size
    pad = (-T) % L
    # Padding tokens: k = 0 (adds nothing), w_log = 0 (decay 1), so the final state is unchanged.
    r, k, v, w_log = (_chunks(t, L, pad) for t in (r, k, v, w_log))           # [nc, B, H, L, N]
    u = u.float().view(1, 1, H, 1, N)

    zeros = torch.zeros_like(w_log[..., :1, :])
    g = torch.cumsum(torch.cat([zeros, w_log[..., :-1, :]], -2), -2)           # exclusive prefix
    h = torch.flip(torch.cumsum(torch.flip(torch.cat([w_log[..., 1:, :], zeros], -2), [-2]), -2), [-2])
    chunk_decay = g[..., -1:, :] + w_log[..., -1:, :]                           # [nc, B, H, 1, N]

    idx = torch.arange(L, device=r.device)
    after = idx.view(L, 1) > idx.view(1, L)                                    # [m, s]: m > s
    seg = torch.cumsum(torch.where(after.view(L, L, 1), w_log.unsqueeze(-2), 0.0), -3)
    G = torch.cat([torch.zeros_like(seg[..., :1, :, :]), seg[..., :-1, :, :]], -3)   # sum_{s<m<t} w_m
    decay_ts = torch.where(after.view(L, L, 1), torch.exp(G), 0.0)             # only s < t
    scores = torch.einsum("cbhtn,cbhsn,cbhtsn->cbhts", r, k, decay_ts)
    bonus = (r * u * k).sum(-1, keepdim=True)
    y_intra = scores @ v + bonus * v                                            # [nc, B, H, L, N]
    r_in = r * torch.exp(g)                                                     # reads S_0
    kv_out = (k * torch.exp(h)).transpose(-1, -2) @ v                           # [nc, B, H, N, N]
    decay_col = torch.exp(chunk_decay).transpose(-1, -2)                        # [nc, B, H, N, 1]

    def body(S: Tensor, xs: tuple[Tensor, ...]):
        y_c, r_c, d_c, kv_c = xs
        return d_c * S + kv_c, y_c + r_c @ S

    state, ys = _scan(body, state.float(), (y_intra, r_in, decay_col, kv_out))
    return _unchunk(ys, T), state


def wkv7_chunked_scan(r: Tensor, w_log: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor, state: Tensor,
                      chunk_size: int = WKV7_CHUNK) -> tuple[Tensor, Tensor]:
    """Exact chunked WKV-7 with the chunk recurrence as one scan; the contract of
    :func:`vrwkv_edge.ops.wkv7.wkv7_chunked` (and the same arithmetic, see that module for the derivation)."""
    B, T, H, N = r.shape
    L = chunk_size
    pad = (-T) % L
    # Padding tokens: k = b = 0 and w_log = 0, so they add nothing and keep the state.
    r, w_log, k, v, a, b = (_chunks(t, L, pad) for t in (r, w_log, k, v, a, b))
    c = torch.cumsum(w_log, -2)                                                 # inclusive
    c_excl = c - w_log
    c_last = c[..., -1:, :]
    a_in = a * torch.exp(c_excl)
    r_in = r * torch.exp(c)
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
    u_from_state = solve @ a_in
    u_from_v = solve @ (A_ak @ v)
    y_from_v = B_rk @ v
    decay_col = torch.exp(c_last).transpose(-1, -2)                             # [nc, B, H, N, 1]
    b_outT = b_out.transpose(-1, -2)
    kv_out = k_out.transpose(-1, -2) @ v

    def body(S: Tensor, xs: tuple[Tensor, ...]):
        us_c, uv_c, r_c, brb_c, yv_c, d_c, bT_c, kv_c = xs
        U = us_c @ S + uv_c
        y = r_c @ S + brb_c @ U + yv_c
        return d_c * S + bT_c @ U + kv_c, y

    state, ys = _scan(body, state.float(),
                      (u_from_state, u_from_v, r_in, B_rb, y_from_v, decay_col, b_outT, kv_out))
    return _unchunk(ys, T), state


# name -> {module global in vrwkv_edge.models.<version module>: replacement}
WKV_IMPLS: dict[str, dict[str, dict[str, Callable]]] = {
    "scan": {
        "vrwkv_edge.models.rwkv6": {"wkv6_chunked": wkv6_chunked_scan},
        "vrwkv_edge.models.rwkv7": {"wkv7_chunked": wkv7_chunked_scan},
    },
}

_STATE = threading.local()
_PATCH_LOCK = threading.RLock()


@contextlib.contextmanager
def wkv_for_export(impl: str = "scan", tracing: bool = True) -> Iterator[None]:
    """Within the block, the models' WKV functions are those of ``WKV_IMPLS[impl]`` (module globals swapped
    and restored afterwards, under a lock so two exports in one process cannot interleave).  ``tracing``:
    the block traces a graph (``torch.scan`` is emitted); False runs the same functions eagerly (tests)."""
    import importlib

    if impl not in WKV_IMPLS:
        raise ValueError(f"unknown WKV implementation {impl!r}; choose one of {sorted(WKV_IMPLS)}")
    with _PATCH_LOCK:
        saved = []
        try:
            for mod_name, repl in WKV_IMPLS[impl].items():
                mod = importlib.import_module(mod_name)
                for name, fn in repl.items():
                    if not hasattr(mod, name):
                        raise RuntimeError(f"{mod_name} has no {name}: the exporter's WKV seam is out of date")
                    saved.append((mod, name, getattr(mod, name)))
                    setattr(mod, name, fn)
            _STATE.exporting = tracing
            yield
        finally:
            _STATE.exporting = False
            for mod, name, fn in reversed(saved):
                setattr(mod, name, fn)
