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
