"""Export of vrwkv_edge models: ONNX graphs, ONNX Runtime backend, validation (installed as vrwkv_edge.export).

    from vrwkv_edge.export import export_model, load_onnx_model, validate
    export_model("RWKV-x070-World-0.1B.pth", "out/rwkv7-0.1b", dtype="fp32")      # decode/prefill graphs
    model = load_onnx_model("out/rwkv7-0.1b")                                    # the PyTorch model's API
    report = validate("out/rwkv7-0.1b", "RWKV-x070-World-0.1B.pth", prompt_ids, n_tokens=256)

Modules: :mod:`.graphs` (the traced modules, graph I/O, precision), :mod:`.wkv` (the WKV seam used while
tracing), :mod:`.visual` (VisualRWKV vision graph, Vision-RWKV classifier), :mod:`.artefact` (the directory,
metadata, quantization), :mod:`.ort_backend` (``OrtModel``, ``OrtVisualModel``),
:mod:`.validation`, :mod:`.cli` (``add_export_cli``).  Imports are lazy so that ``import vrwkv_edge.export``
needs neither onnx nor onnxruntime.
"""
from __future__ import annotations

_LAZY = {
    "export_model": ".artefact", "read_metadata": ".artefact", "verify_hashes": ".artefact",
    "ArtefactError": ".artefact", "FORMAT_VERSION": ".artefact",
    "OrtModel": ".ort_backend", "OrtVisualModel": ".ort_backend", "load_onnx_model": ".ort_backend",
    "export_vision_rwkv": ".visual", "export_vision_graph": ".visual",
    "validate": ".validation", "ValidationReport": ".validation",
    "add_export_cli": ".cli",
    "prepare_model": ".graphs", "export_graph": ".graphs", "graph_io": ".graphs",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'vrwkv_edge.export' has no attribute {name!r}")
