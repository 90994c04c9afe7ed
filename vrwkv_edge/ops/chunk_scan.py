"""The chunk-to-chunk recurrence of the chunked WKV forms, written once for eager runs and for export.

``wkv6_chunked`` / ``wkv7_chunked`` compute everything inside a chunk for all chunks at once and then carry
the state from chunk to chunk.  That carry is :func:`chunk_scan`: a Python loop over the chunks when run
eagerly, and ``torch.scan`` (one ONNX ``Scan`` over a dynamic number of chunks) while ``torch.export`` traces
a graph (``torch.compiler.is_exporting()``, which the ONNX exporter's dynamo path sets).  Both run the same
``body`` on the same tensors, so the eager model and the exported graph share one implementation of the
chunked algebra.

Layout helpers: :func:`to_chunks` pads time to a multiple of the chunk length (always, even by zero rows, so
that a traced graph has no branch on the length) and gives ``[nc, B, H, L, N]`` (chunks first: the scanned
dimension); :func:`from_chunks` undoes it.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

try:                                                  # torch >= 2.7; a prototype API, hence the guarded import
    from torch._higher_order_ops.scan import scan as _torch_scan
except ImportError:                                   # pragma: no cover - older torch
    _torch_scan = None


def chunk_scan(body: Callable, init: Tensor, xs: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
    """``carry, y_i = body(carry, (x[i] for x in xs))`` over dim 0 of ``xs``; returns (final carry, stacked y)."""
    if torch.compiler.is_exporting():
        if _torch_scan is None:                       # pragma: no cover - older torch
            raise RuntimeError("this torch has no torch.scan: the dynamic-length prefill graph cannot be exported")
        return _torch_scan(body, init, xs)
    carry, ys = init, []
    for i in range(xs[0].shape[0]):
        carry, y = body(carry, tuple(x[i] for x in xs))
        ys.append(y)
    return carry, torch.stack(ys, 0)


def to_chunks(x: Tensor, L: int) -> Tensor:
    """[B, T, H, N] -> [nc, B, H, L, N] float32, zero-padded at the end of time to a multiple of L."""
    B, T, H, N = x.shape
    x = torch.nn.functional.pad(x.float(), (0, 0, 0, 0, 0, (-T) % L))
    return x.reshape(B, -1, L, H, N).permute(1, 0, 3, 2, 4)


def from_chunks(y: Tensor, T) -> Tensor:
    """[nc, B, H, L, N] -> [B, T, H, N]."""
    nc, B, H, L, N = y.shape
    # narrow (length exactly T), not [:, :T]: a slice's length is min(T, nc*L), a symbolic Min that the
    # dynamo exporter (torch 2.13) mistranslates into Min(L, T).
    return torch.narrow(y.permute(1, 0, 3, 2, 4).reshape(B, -1, H, N), 1, 0, T)
