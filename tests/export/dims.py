"""The dimension names of an ONNX graph: every dynamic dimension of an input or output must carry a name a user
understands (``batch``, ``seq``), never a tracer's symbol (``s81``) or no name at all; intermediate shapes show
no bare tracer symbol either (the exporter renames it wherever the boundary dimension appears)."""
from __future__ import annotations

import re

MEANINGFUL = {"batch", "seq"}
TRACER_SYMBOL = re.compile(r"^(s\d+|unk__\d+|[a-z]?\d+)$")


def io_dims(proto) -> dict[str, list]:
    """``{tensor name: [dim_value or dim_param or None]}`` of every graph input and output."""
    return {v.name: [d.dim_param if d.HasField("dim_param") else d.dim_value if d.HasField("dim_value") else None
                     for d in v.type.tensor_type.shape.dim]
            for v in list(proto.graph.input) + list(proto.graph.output)}


def check_named_dims(proto, where: str) -> set[str]:
    """Asserts that every dynamic input/output dimension is named meaningfully and returns the names used."""
    names = set()
    for tensor, dims in io_dims(proto).items():
        for i, d in enumerate(dims):
            assert d is not None and d != 0, f"{where}: {tensor} dimension {i} is unnamed and unknown: {dims}"
            if isinstance(d, str):
                assert d in MEANINGFUL, f"{where}: {tensor} dimension {i} is named {d!r}: {dims}"
                names.add(d)
    tracer = {d.dim_param for v in proto.graph.value_info for d in v.type.tensor_type.shape.dim
              if d.HasField("dim_param") and TRACER_SYMBOL.match(d.dim_param)}
    assert not tracer, f"{where}: intermediate shapes use the tracer's symbols {sorted(tracer)[:5]}"
    return names
