"""Backends that run export artefacts, and the artefact schema they read (:mod:`.artefact`).

:mod:`.ort` is the ONNX Runtime backend (``load_onnx_model`` -> :class:`OrtModel` / :class:`OrtVisualModel`,
the :class:`vrwkv_edge.protocol.LanguageModel` API).  The native C++ runtime and TensorRT runners join here.
onnxruntime itself is imported only when a session is created.
"""
from .artefact import FORMAT_VERSION, ArtefactError, read_metadata, verify_hashes
from .ort import OrtModel, OrtVisualModel, load_onnx_model

__all__ = ["ArtefactError", "FORMAT_VERSION", "OrtModel", "OrtVisualModel", "load_onnx_model", "read_metadata",
           "verify_hashes"]
