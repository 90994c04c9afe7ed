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


@pytest.fixture(scope="session")
def tiny_exports(tmp_path_factory):
    """{"fp32": DIR (VisualRWKV: every LM and visual graph), "fp16": DIR (its language model: decode, prefill),
    "classifier": FILE}: tiny standard-op exports of every graph kind."""
    from tests.helpers import require_extra
    require_extra("export")
    from tests.trt.exports import export_classifier, export_language_model, export_visual
    root = tmp_path_factory.mktemp("trt-exports")
    return {"fp32": export_visual(root / "fp32", "fp32"), "fp16": export_language_model(root / "fp16", "fp16"),
            "classifier": export_classifier(root / "classifier.onnx")}
