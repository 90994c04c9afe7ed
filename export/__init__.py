"""Export of vrwkv_edge models to ONNX artefacts (installed as ``vrwkv_edge.export``).  This package only
writes; reading an artefact is :mod:`vrwkv_edge.runtime` (the ONNX Runtime backend and the artefact schema).

    from vrwkv_edge.export import export_model, load_onnx_model, validate
    export_model("RWKV-x070-World-0.1B.pth", "out/rwkv7-0.1b", dtype="fp32")      # decode/prefill graphs
    model = load_onnx_model("out/rwkv7-0.1b")                                    # the PyTorch model's API
    report = validate("out/rwkv7-0.1b", "RWKV-x070-World-0.1B.pth", prompt_ids, n_tokens=256)

Modules: :mod:`.graphs` (the traced block templates, graph assembly, precision), :mod:`.opset` (opset 17),
:mod:`.visual` (VisualRWKV vision graph, Vision-RWKV classifier), :mod:`.artefact` (the directory and
quantization), :mod:`.validation`, :mod:`.cli`.  onnx and onnxruntime are imported only when used.
"""
from vrwkv_edge.runtime.artefact import FORMAT_VERSION, ArtefactError, read_metadata, verify_hashes
from vrwkv_edge.runtime.ort import OrtModel, OrtVisualModel, load_onnx_model

from .artefact import export_model
from .cli import add_export_cli
from .graphs import assemble_graph, prepare_model
from .validation import ValidationReport, validate
from .visual import export_vision_graph, export_vision_rwkv

__all__ = ["ArtefactError", "FORMAT_VERSION", "OrtModel", "OrtVisualModel", "ValidationReport", "add_export_cli",
           "assemble_graph", "export_model", "export_vision_graph", "export_vision_rwkv", "load_onnx_model",
           "prepare_model", "read_metadata", "validate", "verify_hashes"]
