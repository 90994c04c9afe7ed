"""Builds the ONNX Runtime custom-op library ``libvrwkv_ort_ops.so`` (``csrc/ort_ops``) for custom-flavour exports.

Part of ``vrwkv-edge build-native``.  It needs only ONNX Runtime's C API header (``onnxruntime_c_api.h``), given
by ``--ort-include DIR`` or ``$VRWKV_ORT_INCLUDE_DIR`` (``DIR`` or ``DIR/onnxruntime`` holding it; fetch it with
``csrc/runtime/cmake/fetch_ort_headers.sh DEST`` then use ``DEST/include``), and no torch.  The library goes to
``$VRWKV_EDGE_NATIVE_DIR/ort_ops-<key>/`` where the key hashes the sources, the flags and the CPU's instruction
set (``-march=native``): the C API is stable across ONNX Runtime releases, so the headers' version is not part of
it and a library built once serves every ONNX Runtime >= 1.16.  The CUDA execution provider's kernels are added
when ``nvcc`` is found and the installed ``onnxruntime`` offers the CUDA provider (a separate key).  Built in a
temporary folder renamed into place, like the torch extension.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

from .toolchain import CFLAGS, CUDA_ARCHS, cache_root, cpu_flags, csrc_dir, publish_build

LIB_NAME = "libvrwkv_ort_ops.so"
INCLUDE_ENV = "VRWKV_ORT_INCLUDE_DIR"
CPU_SOURCES = ("ort_ops/src/ort_ops.cpp", "kernels/wkv6/wkv6_cpu.cpp", "kernels/wkv7/wkv7_cpu.cpp",
               "kernels/biwkv/biwkv_cpu.cpp", "kernels/biwkv/biwkv_official_cpu.cpp")
CUDA_SOURCES = ("ort_ops/src/ort_ops_cuda.cu", "kernels/wkv6/wkv6_cuda.cu", "kernels/wkv7/wkv7_cuda.cu",
                "kernels/biwkv/biwkv_cuda.cu", "kernels/biwkv/biwkv_official_cuda.cu")
# What the library is built from (the key hashes exactly these folders of csrc/).
SOURCE_DIRS = ("include", "kernels", "ort_ops")
CXXFLAGS = ("-std=c++17", "-fPIC", "-fvisibility=hidden", "-Wall", "-Wextra", "-Wno-unknown-pragmas", *CFLAGS)
NVCC_FLAGS = ("-std=c++17", "-O3", "--use_fast_math", "-Xcompiler=-fPIC,-fvisibility=hidden",
              *(f"-gencode=arch=compute_{a},code=sm_{a}" for a in CUDA_ARCHS),
              f"-gencode=arch=compute_{CUDA_ARCHS[-1]},code=compute_{CUDA_ARCHS[-1]}")
MISSING_HEADERS = ("the ONNX Runtime custom-op library needs ONNX Runtime's C API header (onnxruntime_c_api.h): "
                   f"pass --ort-include DIR or set {INCLUDE_ENV}; get the headers with "
                   "`sh csrc/runtime/cmake/fetch_ort_headers.sh DEST` (then DIR = DEST/include)")


class OrtOpsBuildError(RuntimeError):
    """The custom-op library cannot be built here (no headers, compiler error); the message says why."""


def find_ort_include(explicit: Optional[str] = None) -> Optional[Path]:
    """The folder holding onnxruntime_c_api.h: ``explicit``, else $VRWKV_ORT_INCLUDE_DIR (each as given or its
    ``onnxruntime/`` subfolder, Debian's layout); None when neither names one.  A named folder without the
    header is an error (a typo should not silently skip the build)."""
    given = explicit or os.environ.get(INCLUDE_ENV)
    if not given:
        return None
    for d in (Path(given), Path(given) / "onnxruntime"):
        if (d / "onnxruntime_c_api.h").is_file():
            return d
    source = "--ort-include" if explicit else f"${INCLUDE_ENV}"
    raise OrtOpsBuildError(f"{source} {given}: no onnxruntime_c_api.h there (nor in {given}/onnxruntime)")


def nvcc() -> Optional[str]:
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home and (Path(home) / "bin" / "nvcc").is_file():
        return str(Path(home) / "bin" / "nvcc")
    return shutil.which("nvcc")


def want_cuda() -> bool:
    """CUDA kernels are useful only to an ONNX Runtime with the CUDA execution provider, and need nvcc."""
    if nvcc() is None:
        return False
    try:
        import onnxruntime
    except ImportError:
        return False
    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def build_key(cuda: bool) -> str:
    root = csrc_dir()
    h = hashlib.sha256()
    for p in sorted(p for d in SOURCE_DIRS for p in (root / d).rglob("*") if p.suffix in (".h", ".hpp", ".cuh", ".cpp", ".cu")):
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    h.update(repr((CPU_SOURCES, CXXFLAGS, cpu_flags(), cuda and (CUDA_SOURCES, NVCC_FLAGS))).encode())
    return h.hexdigest()[:16]


def library_path(cuda: Optional[bool] = None) -> Path:
    """Where the library for this checkout is (or would be) built; CUDA variant when ``cuda`` (default: when
    :func:`want_cuda`)."""
    cuda = want_cuda() if cuda is None else cuda
    return cache_root() / f"ort_ops{'-cuda' if cuda else ''}-{build_key(cuda)}" / LIB_NAME


def _run(cmd: list) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise OrtOpsBuildError(f"{' '.join(map(str, cmd))}\n{r.stdout}{r.stderr}")


def build(include_dir: Optional[str] = None, force: bool = False, cuda: Optional[bool] = None,
          verbose: bool = False) -> Path:
    """Builds the library unless the cache has it (or ``force``); returns its path.  ``include_dir``: the ORT
    headers (default $VRWKV_ORT_INCLUDE_DIR); raises :class:`OrtOpsBuildError` when there are none."""
    cuda = want_cuda() if cuda is None else cuda
    target = library_path(cuda)
    include = find_ort_include(include_dir)          # a folder named but wrong is an error even when cached
    if target.is_file() and not force:
        return target
    if include is None:
        raise OrtOpsBuildError(MISSING_HEADERS)
    root = csrc_dir()
    includes = [f"-I{root / 'ort_ops' / 'include'}", f"-I{root / 'include'}", f"-I{root}", f"-I{include}"]
    cache_root().mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="ort_ops-", dir=cache_root()))
    try:
        def compile_one(src: str) -> Path:
            obj = tmp / (src.replace("/", "_") + ".o")
            if src.endswith(".cu"):
                cmd = [nvcc(), *NVCC_FLAGS, "-DVRWKV_ORT_OPS_WITH_CUDA", *includes, "-c", str(root / src), "-o", str(obj)]
            else:
                cmd = ["g++", *CXXFLAGS, *(["-DVRWKV_ORT_OPS_WITH_CUDA"] if cuda else []), *includes,
                       "-c", str(root / src), "-o", str(obj)]
            if verbose:
                print(" ".join(map(str, cmd)))
            _run(cmd)
            return obj
        with ThreadPoolExecutor(2) as pool:
            objs = list(pool.map(compile_one, CPU_SOURCES + (CUDA_SOURCES if cuda else ())))
        link = ["g++", "-shared", *map(str, objs), "-o", str(tmp / LIB_NAME), "-Wl,--no-undefined"]
        if cuda:
            cuda_home = Path(nvcc()).resolve().parents[1]
            link += [f"-L{cuda_home / 'lib64'}", "-lcudart"]
        _run(link)
        publish_build(tmp, target, force)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
