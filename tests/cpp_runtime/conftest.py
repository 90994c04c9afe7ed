"""C++ runtime tests: CMake builds csrc/runtime once per session (in the background, overlapping the exports),
installs it into a temporary prefix, and builds csrc/examples against the installed package
(find_package(vrwkv_runtime)); the tests run those binaries.

The ONNX Runtime headers come from $VRWKV_ORT_INCLUDE_DIR when set (a directory with onnxruntime_c_api.h),
otherwise CMake fetches Debian's libonnxruntime-dev (csrc/runtime/cmake/fetch_ort_headers.sh).  The library is
the installed onnxruntime wheel's, loaded at run time.
"""
from __future__ import annotations

import importlib
import os
import shlex
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


@pytest.fixture(scope="session", autouse=True)
def _background_build(tmp_path_factory):
    """Starts the CMake build as soon as the first test of this directory runs, so that it overlaps the model
    exports (tests ask for their exports before the binaries)."""
    if shutil.which("cmake") is None:
        pytest.fail("cmake is not installed (apt-get install cmake ninja-build g++ libjpeg-dev libpng-dev)")
    root = tmp_path_factory.mktemp("cpp_runtime")
    prefix = root / "prefix"
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    ort_inc = os.environ.get("VRWKV_ORT_INCLUDE_DIR")
    extra = [f"-DVRWKV_ORT_INCLUDE_DIR={ort_inc}"] if ort_inc else []
    steps = [["cmake", "-S", REPO / "csrc" / "runtime", "-B", root / "build", *gen, "-DCMAKE_BUILD_TYPE=Release",
              f"-DCMAKE_INSTALL_PREFIX={prefix}", "-DVRWKV_RUNTIME_BUILD_EXAMPLES=OFF", *extra],
             ["cmake", "--build", root / "build", "-j", JOBS],
             ["cmake", "--install", root / "build"],
             ["cmake", "-S", REPO / "csrc" / "examples", "-B", root / "examples", *gen, "-DCMAKE_BUILD_TYPE=Release",
              f"-DCMAKE_PREFIX_PATH={prefix}"],
             ["cmake", "--build", root / "examples", "-j", JOBS]]
    log = root / "build.log"
    script = " && ".join(shlex.join(map(str, step)) for step in steps)
    with open(log, "w") as f:
        proc = subprocess.Popen(["sh", "-c", f"set -x; {script}"], stdout=f, stderr=subprocess.STDOUT)
    yield proc, root, log
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def cpp_build(_background_build) -> dict:
    """Paths of the installed runtime and the example binaries (waits for the background build)."""
    proc, root, log = _background_build
    if proc.wait() != 0:
        pytest.fail(f"building csrc/runtime and csrc/examples failed ({proc.returncode}); {log}:\n"
                    f"{log.read_text()[-6000:]}")
    bins = root / "examples"
    return {"root": root, "prefix": root / "prefix", "chat": bins / "vrwkv-chat", "tokenize": bins / "vrwkv-tokenize",
            "embed": bins / "embed_minimal"}


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
