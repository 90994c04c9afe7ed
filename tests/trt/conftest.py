"""Fixtures of the TensorRT tests: the plugin's CPU harness libraries (built once per session, cached on disk)."""
from __future__ import annotations

import shutil

import pytest


def _need_gxx():
    if shutil.which("g++") is None:
        pytest.skip("g++ not found: the plugin harness cannot be built here")


@pytest.fixture(scope="session")
def harness():
    """The harness with the plugin as committed (fetches the TensorRT 10.x headers on first use)."""
    _need_gxx()
    from tests.trt.harness import Harness, build_harness
    return Harness(build_harness())


@pytest.fixture(scope="session")
def broken_harness():
    """name -> the harness with the plugin built with that deliberate bug (see tests.trt.harness.BREAKS)."""
    _need_gxx()
    from tests.trt.harness import BREAKS, Harness, build_harness
    return {name: Harness(build_harness(name)) for name in BREAKS}


def _exports_root(tmp_path_factory):
    from tests.helpers import require_extra
    require_extra("export")
    return tmp_path_factory.getbasetemp() / "trt-exports"


# Tiny standard-op exports (tests/trt/exports.py), one per session each: exporting is the slow part of these tests
# (~12 s of CPU per graph here), so each test asks only for the ones it needs.
@pytest.fixture(scope="session")
def lm_fp16(tmp_path_factory):
    """A tiny RWKV-7 language model exported fp16: decode.onnx, prefill.onnx."""
    from tests.trt.exports import export_language_model
    return export_language_model(_exports_root(tmp_path_factory) / "lm_fp16", "fp16")


@pytest.fixture(scope="session")
def classifier_fp32(tmp_path_factory):
    """A tiny Vision-RWKV classifier exported as one fp32 .onnx file."""
    from tests.trt.exports import export_classifier
    root = _exports_root(tmp_path_factory)
    root.mkdir(parents=True, exist_ok=True)
    return export_classifier(root / "classifier.onnx")


@pytest.fixture(scope="session")
def visual_fp32(tmp_path_factory):
    """A tiny VisualRWKV (RWKV-7 + Vision-RWKV tower) exported fp32: decode, prefill, vision, image_prefill."""
    from tests.trt.exports import export_visual
    return export_visual(_exports_root(tmp_path_factory) / "visual_fp32", "fp32")
