"""Where the C++/CUDA sources and the build cache are, and the compiler settings every native build shares.

Imported by :mod:`.build` (the torch extension) and :mod:`.ort_ops` (the ONNX Runtime custom-op library) alike, so
neither needs the other for these.
"""
from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path

CFLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-DNDEBUG")
# Jetson Orin (sm_87), L20/L40 (sm_89), H100/H200 (sm_90), plus PTX for newer GPUs.
CUDA_ARCHS = ("87", "89", "90")


def csrc_dir() -> Path:
    """The C++/CUDA sources: ``csrc/`` beside the package in a source checkout (also for editable installs), or
    ``vrwkv_edge/native/csrc`` where a wheel installs them (see the package's setup.py)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "csrc", here.parents[1] / "csrc"):
        if (candidate / "include" / "vrwkv" / "params.h").is_file():
            return candidate
    raise FileNotFoundError(f"vrwkv_edge.native: the C++ sources (csrc/) were not found beside {here}")


def cache_root() -> Path:
    return Path(os.environ.get("VRWKV_EDGE_NATIVE_DIR") or Path.home() / ".cache" / "vrwkv_edge" / "native")


def cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def publish_build(tmp: Path, target: Path, force: bool) -> None:
    """Moves a finished build folder ``tmp`` to ``target.parent`` in one rename, so the loader never sees a
    half-written library; if a concurrent build got there first, its (identical, same key) result is kept."""
    final = target.parent
    if force and final.exists():
        shutil.rmtree(final)
    try:
        os.rename(tmp, final)
    except OSError:
        if not target.is_file():
            raise
