"""Which implementation computes the language models' WKV: chosen explicitly, per model, by name.

A :class:`WkvImpl` bundles the four WKV entry points the models call.  ``"torch"`` (the default) is this
package's pure-PyTorch ops (the per-token step and the exact chunked form; exportable, differentiable).  Other
implementations register themselves under their own name, e.g. ``"native"`` (the C++ / CUDA kernels of
``csrc/``, bound by :mod:`vrwkv_edge.native` once built with ``vrwkv-edge build-native``) and ``"custom"``
(:mod:`vrwkv_edge.ops.custom_ops`: each WKV one torch custom op, which the exporter writes as one node of the
``vrwkv`` ONNX domain: ``vrwkv-edge export --wkv custom``).  Every implementation
keeps the contract of :mod:`vrwkv_edge.ops.wkv6` / :mod:`vrwkv_edge.ops.wkv7`: ``[B, T, H, N]`` activations,
float32 key-major state ``[B, H, N, N]`` in and out, float32 outputs, inputs never modified.

Select with ``model.set_wkv_impl("native")`` or ``load_model(path, wkv_impl="native")``.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Optional

from .biwkv import bi_wkv, bi_wkv6
from .wkv6 import wkv6_chunked, wkv6_step
from .wkv7 import wkv7_chunked, wkv7_step

DEFAULT_WKV_IMPL = "torch"
# Implementations that live in modules of their own, imported (by name, so no import edge is created) the first
# time they are asked for; importing the module registers the implementation or explains why it cannot.
PROVIDERS = {"native": "vrwkv_edge.native", "custom": "vrwkv_edge.ops.custom_ops"}


@dataclass(frozen=True)
class WkvImpl:
    name: str
    wkv6_step: Callable        # (r, k, v, w_log, u, state) -> (y, state), one token: [B, H, N]
    wkv6_seq: Callable         # (r, k, v, w_log, u, state, chunk_size=...) -> (y, state), [B, T, H, N]
    wkv7_step: Callable        # (r, w_log, k, v, a, b, state) -> (y, state)
    wkv7_seq: Callable         # (r, w_log, k, v, a, b, state, chunk_size=...) -> (y, state)
    bi_wkv: Optional[Callable] = None     # Vision-RWKV (w, u, k, v) -> y; None: the PyTorch form
    bi_wkv6: Optional[Callable] = None    # Vision-RWKV6 (r, k, v, w_log, u) -> y; None: the PyTorch form


_IMPLS: dict[str, WkvImpl] = {
    DEFAULT_WKV_IMPL: WkvImpl(DEFAULT_WKV_IMPL, wkv6_step, wkv6_chunked, wkv7_step, wkv7_chunked, bi_wkv, bi_wkv6),
}


def register_wkv_impl(impl: WkvImpl) -> None:
    """Makes ``impl`` selectable by ``impl.name`` (replacing an earlier registration of that name)."""
    if impl.name == DEFAULT_WKV_IMPL and impl is not _IMPLS[DEFAULT_WKV_IMPL]:
        raise ValueError(f"the {DEFAULT_WKV_IMPL!r} WKV implementation cannot be replaced")
    _IMPLS[impl.name] = impl


def unregister_wkv_impl(name: str) -> None:
    if name == DEFAULT_WKV_IMPL:
        raise ValueError(f"the {DEFAULT_WKV_IMPL!r} WKV implementation cannot be removed")
    _IMPLS.pop(name, None)


def available_wkv_impls() -> list[str]:
    return sorted(set(_IMPLS) | set(PROVIDERS))


def get_wkv_impl(name: str = DEFAULT_WKV_IMPL) -> WkvImpl:
    """The implementation registered as ``name``; a provider module is imported on first use."""
    if name not in _IMPLS and name in PROVIDERS:
        module = importlib.import_module(PROVIDERS[name])      # registers it when it can
        if name not in _IMPLS and getattr(module, "UNAVAILABLE", None):
            raise RuntimeError(f"WKV implementation {name!r} is unavailable: {module.UNAVAILABLE}")
    try:
        return _IMPLS[name]
    except KeyError:
        raise ValueError(f"unknown WKV implementation {name!r}; choose one of {available_wkv_impls()}") from None
