"""ONNX Runtime custom-op library tests: the library is built once per session by the same code as
``vrwkv-edge build-native --ort-ops-only`` (cached under $VRWKV_EDGE_NATIVE_DIR, so CI reuses the build step's
library), and hand-made single-node graphs run in the ``onnxruntime`` package with it registered.

ONNX Runtime's C API header comes from $VRWKV_ORT_INCLUDE_DIR, else ``.ci-cache/onnxruntime-headers/include``,
else it is fetched once (csrc/runtime/cmake/fetch_ort_headers.sh, Debian's libonnxruntime-dev) into the cache.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import REPO, require_extra


def ort_include_dir() -> Path:
    given = os.environ.get("VRWKV_ORT_INCLUDE_DIR")
    if given:
        return Path(given)
    local = REPO / ".ci-cache" / "onnxruntime-headers" / "include"
    if (local / "onnxruntime" / "onnxruntime_c_api.h").is_file():
        return local
    from vrwkv_edge.native.build import cache_root
    fetched = cache_root() / "onnxruntime-headers"
    if not (fetched / "include" / "onnxruntime" / "onnxruntime_c_api.h").is_file():
        r = subprocess.run(["sh", str(REPO / "csrc" / "runtime" / "cmake" / "fetch_ort_headers.sh"), str(fetched)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.fail(f"no ONNX Runtime headers: set VRWKV_ORT_INCLUDE_DIR (fetching them failed: {r.stderr[-2000:]})")
    return fetched / "include"


@pytest.fixture(scope="session")
def op_library() -> Path:
    """The built libvrwkv_ort_ops.so (CPU kernels; the CUDA variant is only compile-checked here)."""
    require_extra("export")
    from vrwkv_edge.native import ort_ops
    return ort_ops.build(str(ort_include_dir()), cuda=False)
