"""The WKV as the exporter sees it: the seam where a graph's WKV can be swapped while it is traced.

The models call ``wkv6_chunked`` / ``wkv7_chunked`` (sequence path) and ``wkv6_step`` / ``wkv7_step`` (token
path) through their module globals (``vrwkv_edge.models.rwkv6`` / ``rwkv7``).  The chunked forms of
``vrwkv_edge.ops`` carry the state from chunk to chunk through :func:`vrwkv_edge.ops.chunk_scan.chunk_scan`,
a Python loop when run eagerly and ``torch.scan`` inside :func:`~vrwkv_edge.ops.chunk_scan.traced_chunk_loop`,
so the exported prefill graph has one ONNX ``Scan`` per layer over a dynamic number of chunks and takes any
``T >= 1`` (time is padded to a multiple of the chunk inside the graph).  The eager model and the graph run
the same functions: there is one implementation of the chunked algebra.

:func:`wkv_for_export` enters that traced loop and, for implementations other than the default ``"ops"``,
replaces the models' WKV functions for the duration of one trace.  This is the seam for a fused WKV node: a
replacement set (e.g. one ``torch.library.custom_op`` per version, translated to an ``rwkv::RwkvWkv7`` node)
goes into :data:`WKV_IMPLS` and is selected by name; nothing else in the graphs changes.  Every replacement
must keep the ops' contract (layouts of ``vrwkv_edge/ops/wkv6.py`` and ``wkv7.py``, fp32 key-major state).
"""
from __future__ import annotations

import contextlib
import threading
from typing import Callable, Iterator

from vrwkv_edge.ops.chunk_scan import traced_chunk_loop

# name -> {module global in vrwkv_edge.models.<version module>: replacement}; "ops": the package's own WKV.
WKV_IMPLS: dict[str, dict[str, dict[str, Callable]]] = {"ops": {}}
DEFAULT_WKV_IMPL = "ops"

_PATCH_LOCK = threading.RLock()


@contextlib.contextmanager
def wkv_for_export(impl: str = DEFAULT_WKV_IMPL, tracing: bool = True) -> Iterator[None]:
    """Within the block, the models' WKV functions are those of ``WKV_IMPLS[impl]`` (module globals swapped
    and restored afterwards, under a lock so two exports in one process cannot interleave) and, with
    ``tracing``, the chunked WKV's chunk loop is emitted as ``torch.scan``."""
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
            with traced_chunk_loop(tracing):
                yield
        finally:
            for mod, name, fn in reversed(saved):
                setattr(mod, name, fn)
