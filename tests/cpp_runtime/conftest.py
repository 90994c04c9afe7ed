"""C++ runtime tests: CMake builds csrc/runtime once per session, installs it into a temporary prefix, and builds
csrc/examples against the installed package (find_package(vrwkv_runtime)); the tests run those binaries.

The ONNX Runtime headers come from $VRWKV_ORT_INCLUDE_DIR when set (a directory with onnxruntime_c_api.h),
otherwise CMake fetches Debian's libonnxruntime-dev (csrc/runtime/cmake/fetch_ort_headers.sh).  The library is
the installed onnxruntime wheel's, loaded at run time.
"""
from __future__ import annotations

import importlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TESTDATA = REPO.parent / "shared" / "testdata"
TINY_CKPT = {
    "x060": TESTDATA / "rwkv-cpp-tiny" / "derived" / "tiny-rwkv-6v0-1m-FP32.pth",
    "x070": TESTDATA / "rwkv-cpp-tiny" / "derived" / "tiny-rwkv-7v0-834K-FP32.pth",
}
JOBS = os.environ.get("VRWKV_BUILD_JOBS", "2")


def import_first(*candidates: str):
    """The first importable ``module:attr`` (the package's modules are being reorganised; old paths stay valid)."""
    errors = []
    for c in candidates:
        mod, attr = c.split(":")
        try:
            return getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError) as e:
            errors.append(f"{c}: {e}")
    raise ImportError("none of these imports worked:\n" + "\n".join(errors))


def _run(cmd, **kw):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if r.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}")
    return r


@pytest.fixture(scope="session")
def cpp_build(tmp_path_factory) -> dict:
    """Paths of the installed runtime and the example binaries."""
    if shutil.which("cmake") is None:
        pytest.fail("cmake is not installed (apt-get install cmake ninja-build g++)")
    root = tmp_path_factory.mktemp("cpp_runtime")
    prefix = root / "prefix"
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    ort_inc = os.environ.get("VRWKV_ORT_INCLUDE_DIR")
    extra = [f"-DVRWKV_ORT_INCLUDE_DIR={ort_inc}"] if ort_inc else []
    _run(["cmake", "-S", REPO / "csrc" / "runtime", "-B", root / "build", *gen, "-DCMAKE_BUILD_TYPE=Release",
          f"-DCMAKE_INSTALL_PREFIX={prefix}", "-DVRWKV_RUNTIME_BUILD_EXAMPLES=OFF", *extra])
    _run(["cmake", "--build", root / "build", "-j", JOBS])
    _run(["cmake", "--install", root / "build"])
    _run(["cmake", "-S", REPO / "csrc" / "examples", "-B", root / "examples", *gen, "-DCMAKE_BUILD_TYPE=Release",
          f"-DCMAKE_PREFIX_PATH={prefix}"])
    _run(["cmake", "--build", root / "examples", "-j", JOBS])
    bins = root / "examples"
    return {"root": root, "prefix": prefix, "chat": bins / "vrwkv-chat", "tokenize": bins / "vrwkv-tokenize",
            "embed": bins / "embed_minimal", "ort_include": ort_inc or
            str(root / "build" / "_deps" / "onnxruntime-headers" / "include" / "onnxruntime")}


@pytest.fixture(scope="session")
def ort_library() -> str:
    import onnxruntime

    capi = Path(onnxruntime.__file__).parent / "capi"
    libs = sorted(capi.glob("libonnxruntime.so.*"))
    if not libs:
        pytest.fail(f"no libonnxruntime.so.* in {capi}")
    return str(libs[0])


@pytest.fixture(scope="session")
def run_chat(cpp_build, ort_library):
    """Runs vrwkv-chat with the wheel's ONNX Runtime and one thread; returns the CompletedProcess."""
    def run(*args, ort_lib=None, check=True, stdin=None, timeout=120):
        cmd = [str(cpp_build["chat"]), "--ort-lib", ort_lib or ort_library, "--threads", "1", *map(str, args)]
        r = subprocess.run(cmd, capture_output=True, text=True, input=stdin, timeout=timeout)
        if check and r.returncode != 0:
            pytest.fail(f"vrwkv-chat failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-3000:]}")
        return r
    return run


@pytest.fixture(scope="session")
def text_exports(tmp_path_factory) -> dict:
    """The two trained rwkv.cpp tiny models (byte-level, 256 tokens) exported fp32."""
    import torch

    from vrwkv_edge.export import export_model

    out = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for version, ckpt in TINY_CKPT.items():
            if not ckpt.exists():
                pytest.fail(f"test data missing: {ckpt} (../shared/testdata must sit beside the repository)")
            out[version] = export_model(ckpt, tmp_path_factory.mktemp("export") / version, embeds=False,
                                        progress=False)
    finally:
        torch.set_num_threads(threads)
    return out
