"""The ``vrwkv`` ONNX domain's nodes as torch custom ops, so that the exporter traces each WKV as ONE call.

:mod:`vrwkv_edge.ops.custom_op_contract` fixes the nodes (``WKV6``, ``WKV7``, ``BiWKV``, ``BiWKV6``: inputs,
outputs, attributes, version).  Here each is a ``torch.library`` custom op in the torch namespace ``vrwkv``:

* the eager kernel is this package's exact PyTorch form (:func:`~vrwkv_edge.ops.wkv6.wkv6_chunked`,
  :func:`~vrwkv_edge.ops.wkv7.wkv7_chunked`, :func:`~vrwkv_edge.ops.biwkv.bi_wkv_official` /
  :func:`~vrwkv_edge.ops.biwkv.bi_wkv`, :func:`~vrwkv_edge.ops.biwkv.bi_wkv6`), so a model running on these ops
  computes what the standard flavour computes (the tests compare both with the O(T) references);
* the fake kernel gives the output shapes and dtypes (float32), which is all ``torch.export`` looks at;
* :mod:`vrwkv_edge.export.custom_nodes` translates each op to its ``vrwkv`` node.

They are selected like any other implementation: :data:`CUSTOM_WKV_IMPL` is a registered
:class:`~vrwkv_edge.ops.dispatch.WkvImpl` for the language models (``model.set_wkv_impl("custom")``), and the
Vision-RWKV backbone's tables hold ``custom_official`` / ``custom_formula`` (Bi-WKV, the node's ``semantics``)
and ``custom`` (Bi-WKV6).  Every input is cast to float32 before the op (exact for fp16 and bf16 activations: the
nodes compute in float32 anyway, and the language models' decay inputs are float32 already), so the exported
nodes have one element type, as the contract asks.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .biwkv import bi_wkv, bi_wkv6, bi_wkv_official
from .custom_op_contract import BIWKV_SEMANTICS, DEFAULT_BIWKV_SEMANTICS
from .dispatch import WkvImpl, register_wkv_impl
from .wkv6 import wkv6_chunked
from .wkv7 import wkv7_chunked

# The name under which the language models select these ops (ops.dispatch), and the namespace of the torch ops:
# not "vrwkv", which the native extension's TORCH_LIBRARY owns (csrc/torch/binding.cpp).
CUSTOM_WKV_IMPL = "custom"
TORCH_NAMESPACE = "vrwkv_onnx"


@torch.library.custom_op(f"{TORCH_NAMESPACE}::wkv6", mutates_args=())
def wkv6_op(r: Tensor, k: Tensor, v: Tensor, w_log: Tensor, u: Tensor, state_in: Tensor) -> tuple[Tensor, Tensor]:
    """The ``WKV6`` node: ``[B, T, H, N]`` inputs, ``u`` ``[H, N]``, state ``[B, H, N, N]`` -> ``(y, state_out)``."""
    y, s = wkv6_chunked(r, k, v, w_log, u, state_in)
    return y.float().contiguous(), s.float().contiguous()


@wkv6_op.register_fake
def _(r, k, v, w_log, u, state_in):
    return r.new_empty(r.shape, dtype=torch.float32), state_in.new_empty(state_in.shape, dtype=torch.float32)


@torch.library.custom_op(f"{TORCH_NAMESPACE}::wkv7", mutates_args=())
def wkv7_op(r: Tensor, w_log: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor,
            state_in: Tensor) -> tuple[Tensor, Tensor]:
    """The ``WKV7`` node: six ``[B, T, H, N]`` inputs and the state ``[B, H, N, N]`` -> ``(y, state_out)``."""
    y, s = wkv7_chunked(r, w_log, k, v, a, b, state_in)
    return y.float().contiguous(), s.float().contiguous()


@wkv7_op.register_fake
def _(r, w_log, k, v, a, b, state_in):
    return r.new_empty(r.shape, dtype=torch.float32), state_in.new_empty(state_in.shape, dtype=torch.float32)


@torch.library.custom_op(f"{TORCH_NAMESPACE}::biwkv", mutates_args=())
def biwkv_op(w: Tensor, u: Tensor, k: Tensor, v: Tensor, semantics: str = DEFAULT_BIWKV_SEMANTICS) -> Tensor:
    """The ``BiWKV`` node (Vision-RWKV v1): ``w, u`` ``[C]`` (already divided by T), ``k, v`` ``[B, T, C]``."""
    if semantics not in BIWKV_SEMANTICS:
        raise ValueError(f"BiWKV semantics must be one of {BIWKV_SEMANTICS}, got {semantics!r}")
    fn = bi_wkv_official if semantics == "official" else bi_wkv
    return fn(w, u, k, v).float().contiguous()


@biwkv_op.register_fake
def _(w, u, k, v, semantics=DEFAULT_BIWKV_SEMANTICS):
    return k.new_empty(k.shape, dtype=torch.float32)


@torch.library.custom_op(f"{TORCH_NAMESPACE}::biwkv6", mutates_args=())
def biwkv6_op(r: Tensor, k: Tensor, v: Tensor, w_log: Tensor, u: Tensor) -> Tensor:
    """The ``BiWKV6`` node (Vision-RWKV6): ``r, k, v, w_log`` ``[B, T, H, N]``, ``u`` ``[H, N]``."""
    return bi_wkv6(r, k, v, w_log, u).float().contiguous()


@biwkv6_op.register_fake
def _(r, k, v, w_log, u):
    return r.new_empty(r.shape, dtype=torch.float32)


def _f32(*ts: Tensor) -> tuple[Tensor, ...]:
    return tuple(t.float() for t in ts)


# ---- the entry points with the signatures the models call (ops.dispatch.WkvImpl, vision_rwkv BI_WKV tables) ----
def wkv6_seq(r, k, v, w_log, u, state, chunk_size=None):
    """``chunk_size`` is the standard form's; the node has none (its kernels choose their own blocking)."""
    return wkv6_op(*_f32(r, k, v, w_log, u, state))


def wkv6_step(r, k, v, w_log, u, state):
    """One token ``[B, H, N]``: the node with T = 1."""
    y, s = wkv6_op(*_f32(*(t.unsqueeze(1) for t in (r, k, v, w_log)), u, state))
    return y.squeeze(1), s


def wkv7_seq(r, w_log, k, v, a, b, state, chunk_size=None):
    return wkv7_op(*_f32(r, w_log, k, v, a, b, state))


def wkv7_step(r, w_log, k, v, a, b, state):
    y, s = wkv7_op(*_f32(*(t.unsqueeze(1) for t in (r, w_log, k, v, a, b)), state))
    return y.squeeze(1), s


def bi_wkv_custom_official(w, u, k, v):
    return biwkv_op(*_f32(w, u, k, v), "official")


def bi_wkv_custom_formula(w, u, k, v):
    return biwkv_op(*_f32(w, u, k, v), "formula")


def bi_wkv6_custom(r, k, v, w_log, u):
    return biwkv6_op(*_f32(r, k, v, w_log, u))


register_wkv_impl(WkvImpl(CUSTOM_WKV_IMPL, wkv6_step, wkv6_seq, wkv7_step, wkv7_seq,
                          bi_wkv_custom_official, bi_wkv6_custom))
