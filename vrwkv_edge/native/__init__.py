"""The native (C++ / CUDA) WKV kernels of ``csrc/``, as ``torch.ops.vrwkv`` ops and the ``"native"`` WkvImpl.

Nothing is compiled at import: ``vrwkv-edge build-native`` (:mod:`vrwkv_edge.native.build`) builds the library
into a cache folder, and importing this package loads it from there if it exists.  When it does, the
``torch.ops.vrwkv`` ops get their fake kernels and autograd (:mod:`.ops`) and ``WkvImpl("native")`` is registered,
so ``model.set_wkv_impl("native")`` selects it.  When it does not, ``UNAVAILABLE`` says why and how to build, and
:func:`require` raises that as an ImportError; everything else keeps using the pure-PyTorch ops.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..ops.dispatch import WkvImpl, register_wkv_impl
from . import build, ops

BUILD_HINT = "run `vrwkv-edge build-native` (or `python -m vrwkv_edge.native`) to build them"


def _load() -> Optional[str]:
    """Loads the built library and registers the ops and the WkvImpl; returns why not, or None."""
    try:
        path = build.library_path()
    except FileNotFoundError as e:           # an install without the C++ sources
        return f"the native WKV kernels cannot be built here: {e}"
    if not path.is_file():
        return f"the native WKV kernels are not built (no {path}); {BUILD_HINT}"
    if not hasattr(torch.ops.vrwkv, "wkv7"):       # loaded (and its ops registered) once per process
        torch.ops.load_library(str(path))
        ops.register()
    register_wkv_impl(WkvImpl("native", ops.wkv6_step, ops.wkv6_seq, ops.wkv7_step, ops.wkv7_seq,
                              bi_wkv=ops.bi_wkv, bi_wkv6=ops.bi_wkv6))
    return None


UNAVAILABLE: Optional[str] = _load()


def require() -> None:
    """Raises ImportError (with the way to build) unless the native kernels are loaded."""
    if UNAVAILABLE is not None:
        raise ImportError(UNAVAILABLE)


def available() -> bool:
    return UNAVAILABLE is None
