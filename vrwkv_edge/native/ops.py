"""The native ops' Python side: fake (meta) kernels, autograd, and functions with the exact signatures of the
pure-PyTorch ops (:mod:`vrwkv_edge.ops.wkv6`, :mod:`~vrwkv_edge.ops.wkv7`, :mod:`~vrwkv_edge.ops.biwkv`).

Imported by :mod:`vrwkv_edge.native` after the built library is loaded (the ``torch.ops.vrwkv`` schemas come from
it).  Ops: ``vrwkv::wkv6`` / ``vrwkv::wkv7`` (``[B, T, H, N]`` inputs of one dtype, fp32 state in, ``(y fp32,
new state)`` out; ``[B, H, N]`` inputs are one decode step) with autograd (registered in C++) through
``vrwkv::wkv6_backward`` / ``wkv7_backward`` (gradients of every input including the initial state), and
``vrwkv::bi_wkv`` (Vision-RWKV v1) with autograd through ``vrwkv::bi_wkv_backward``.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..ops.biwkv import bi_wkv as bi_wkv_torch

KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
OPS = torch.ops.vrwkv


def kernel_dtype(*ts: Tensor) -> torch.dtype:
    """The dtype the kernels read: the inputs' own when they share one the kernels support, else float32 (e.g. the
    models' fp32 log decay beside bf16 activations: the decay exponent must stay fp32)."""
    d = ts[0].dtype
    return d if d in KERNEL_DTYPES and all(t.dtype == d for t in ts) else torch.float32


def _f32(t: Tensor) -> Tensor:
    return t.new_empty(t.shape, dtype=torch.float32)


def _wkv6_fake(r, k, v, w_log, u, state):
    return _f32(r), _f32(state)


def _wkv7_fake(r, w_log, k, v, a, b, state):
    return _f32(r), _f32(state)


def _wkv6_backward_fake(r, k, v, w_log, u, state, dy, dstate):
    return [_f32(x) for x in (r, k, v, w_log, u, state)]


def _wkv7_backward_fake(r, w_log, k, v, a, b, state, dy, dstate):
    return [_f32(x) for x in (r, w_log, k, v, a, b, state)]


def _bi_wkv_fake(w, u, k, v):
    return _f32(k)


def _bi_wkv_backward_fake(w, u, k, v, dy):
    return [_f32(x) for x in (w, u, k, v)]


def _bi_wkv_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _bi_wkv_backward(ctx, dy):
    grads = OPS.bi_wkv_backward(*ctx.saved_tensors, dy)
    return tuple(g.to(x.dtype) for g, x in zip(grads, ctx.saved_tensors))


def register() -> None:
    """Gives the loaded ``torch.ops.vrwkv`` ops their fake (meta) kernels and the Bi-WKV its autograd; called
    once, after the library is loaded (the ops must exist before anything can be registered on them)."""
    for op, fake in FAKES.items():
        torch.library.register_fake(op)(fake)
    # Bi-WKV runs once per layer and image, so its autograd lives here in Python; the WKV-6/7 autograd, on the
    # per-token decode path, is registered in C++ (csrc/torch/binding.cpp).
    torch.library.register_autograd("vrwkv::bi_wkv", _bi_wkv_backward, setup_context=_bi_wkv_setup)


FAKES = {"vrwkv::wkv6": _wkv6_fake, "vrwkv::wkv7": _wkv7_fake, "vrwkv::wkv6_backward": _wkv6_backward_fake,
         "vrwkv::wkv7_backward": _wkv7_backward_fake, "vrwkv::bi_wkv": _bi_wkv_fake,
         "vrwkv::bi_wkv_backward": _bi_wkv_backward_fake}


# ---- the WkvImpl entry points: the pure-PyTorch ops' signatures and results ---------------------------------------

def _as(dt: torch.dtype, *xs: Tensor) -> list[Tensor]:
    return [x if x.dtype == dt else x.to(dt) for x in xs]


def wkv6_seq(r: Tensor, k: Tensor, v: Tensor, w_log: Tensor, u: Tensor, state: Tensor,
             chunk_size: Optional[int] = None) -> tuple[Tensor, Tensor]:
    """Like :func:`vrwkv_edge.ops.wkv6.wkv6_chunked`; ``chunk_size`` is accepted and ignored (the kernels stage
    tokens in chunks of their own).  With [B, H, N] inputs it is the decode step (:func:`wkv6_step`)."""
    dt = kernel_dtype(r, k, v, w_log, u)
    return OPS.wkv6(*_as(dt, r, k, v, w_log, u), state if state.dtype == torch.float32 else state.float())


def wkv6_step(r: Tensor, k: Tensor, v: Tensor, w_log: Tensor, u: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
    return wkv6_seq(r, k, v, w_log, u, state)


def wkv7_seq(r: Tensor, w_log: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor, state: Tensor,
             chunk_size: Optional[int] = None) -> tuple[Tensor, Tensor]:
    """Like :func:`vrwkv_edge.ops.wkv7.wkv7_chunked` (any log decay, no chunk-form bound); ``chunk_size`` is
    accepted and ignored.  With [B, H, N] inputs it is the decode step (:func:`wkv7_step`)."""
    dt = kernel_dtype(r, w_log, k, v, a, b)
    return OPS.wkv7(*_as(dt, r, w_log, k, v, a, b), state if state.dtype == torch.float32 else state.float())


def wkv7_step(r: Tensor, w_log: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor,
              state: Tensor) -> tuple[Tensor, Tensor]:
    return wkv7_seq(r, w_log, k, v, a, b, state)


def bi_wkv6(r: Tensor, k: Tensor, v: Tensor, w_log: Tensor, u: Tensor, chunk_size: Optional[int] = None) -> Tensor:
    """Like :func:`vrwkv_edge.ops.biwkv.bi_wkv6`: the native WKV-6 on the sequence and on its reverse (one call,
    stacked on the batch, zero states, no bonus), plus the bonus once; differentiable through ``vrwkv::wkv6``."""
    B, T, H, N = r.shape
    dt = kernel_dtype(r, k, v, w_log, u)
    both = [torch.cat([x, x.flip(1)]).to(dt) for x in (r, k, v, w_log)]
    state0 = torch.zeros(2 * B, H, N, N, dtype=torch.float32, device=r.device)
    y, _ = OPS.wkv6(*both, torch.zeros_like(u, dtype=dt), state0)
    bonus = (r.float() * u.float() * k.float()).sum(-1, keepdim=True) * v.float()
    return y[:B] + y[B:].flip(1) + bonus


def bi_wkv(w: Tensor, u: Tensor, k: Tensor, v: Tensor, method: str = "auto",
           chunk_size: Optional[int] = None) -> Tensor:
    """Like :func:`vrwkv_edge.ops.biwkv.bi_wkv` (the paper formula, exact for any finite input), differentiable;
    ``method`` and ``chunk_size`` are accepted and ignored.  float64 inputs run the PyTorch form."""
    if k.dtype == torch.float64:
        return bi_wkv_torch(w, u, k, v, method=method, chunk_size=chunk_size)
    dt = kernel_dtype(k, v)
    return OPS.bi_wkv(w.float(), u.float(), *_as(dt, k, v))
