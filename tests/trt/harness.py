"""Builds the CPU harness of the TensorRT plugin and runs it through ctypes.

The library holds the plugin (``csrc/plugins/trt_wkv/wkv_plugin.cpp``, compiled against the TensorRT 10.x headers),
the harness (``csrc/plugins/trt_wkv/tests/harness.cpp``), and the plugin's kernel glue plus ``csrc/kernels``' CUDA
sources compiled as C++20 against ``cuda_on_cpu.h``: enqueue runs the GPU kernels' own source on the CPU.  Objects
are cached one by one (by the hash of the source tree, the file and the flags) under the native cache folder, so the
deliberately broken variants recompile only the plugin file.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import torch

from vrwkv_edge.native.build import cache_root, csrc_dir
from vrwkv_edge.trt.headers import include_dir

CSRC = csrc_dir()
PLUGIN = "plugins/trt_wkv"
EMULATED_SOURCES = (f"{PLUGIN}/wkv_plugin_kernels.cu", "kernels/wkv6/wkv6_cuda.cu", "kernels/wkv7/wkv7_cuda.cu",
                    "kernels/biwkv/biwkv_cuda.cu", "kernels/biwkv/biwkv_official_cuda.cu")
INTERFACE_SOURCES = (f"{PLUGIN}/wkv_plugin.cpp", f"{PLUGIN}/tests/harness.cpp")
WARNINGS = ("-Wall", "-Wextra", "-Werror", "-Wno-unknown-pragmas")
CUDA_INCLUDE = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "include"
DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
# Compile-time switches of wkv_plugin.cpp that break it on purpose (the harness must catch each).
BREAKS = {"shape": "-DVRWKV_TRT_TEST_BREAK_OUTPUT_SHAPE", "dtype": "-DVRWKV_TRT_TEST_BREAK_OUTPUT_DTYPE"}


def _tree_hash() -> str:
    h = hashlib.sha256()
    for d in ("include", "kernels", "cuda_on_cpu", PLUGIN):
        for f in sorted((CSRC / d).rglob("*")):
            if f.suffix in (".h", ".cuh", ".cpp", ".cu"):
                h.update(str(f.relative_to(CSRC)).encode() + f.read_bytes())
    return h.hexdigest()[:16]


def _compile(src: str, flags: Sequence[str], out_dir: Path, tree: str) -> Path:
    key = hashlib.sha256(f"{tree}|{src}|{flags}".encode()).hexdigest()[:16]
    obj = out_dir / f"{src.replace('/', '_')}-{key}.o"
    if obj.is_file():
        return obj
    fd, tmp = tempfile.mkstemp(suffix=".o", dir=out_dir)
    os.close(fd)
    try:
        subprocess.run(["g++", *flags, "-c", str(CSRC / src), "-o", tmp], check=True, capture_output=True, text=True)
        os.replace(tmp, obj)
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"{' '.join(e.cmd)}\n{e.stderr[-6000:]}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return obj


def build_harness(break_: str | None = None) -> Path:
    """The harness library (cached); ``break_`` = ``shape`` / ``dtype`` builds the plugin with that deliberate bug."""
    trt = include_dir()
    out_dir = cache_root() / "trt-harness"
    out_dir.mkdir(parents=True, exist_ok=True)
    tree = _tree_hash()
    emulated = ("-std=c++20", "-O0", "-fPIC", "-fopenmp-simd", *WARNINGS, "-x", "c++", f"-I{CSRC / 'include'}",
                f"-I{CSRC}")
    interface = ("-std=c++17", "-O1", "-fPIC", *WARNINGS, "-Wpedantic", f"-I{CSRC / 'include'}",
                 "-isystem", str(trt), "-isystem", str(CUDA_INCLUDE), *([BREAKS[break_]] if break_ else []))
    jobs = [(s, emulated) for s in EMULATED_SOURCES] + [(s, interface) for s in INTERFACE_SOURCES]
    with ThreadPoolExecutor(2) as pool:
        objs = list(pool.map(lambda j: _compile(j[0], j[1], out_dir, tree), jobs))
    lib = out_dir / f"libvrwkv_trt_harness-{hashlib.sha256(repr(objs).encode()).hexdigest()[:16]}.so"
    if not lib.is_file():
        tmp = Path(tempfile.mkdtemp(dir=out_dir))
        try:
            subprocess.run(["g++", "-shared", *map(str, objs), "-o", str(tmp / lib.name), "-pthread"], check=True,
                           capture_output=True, text=True)
            os.replace(tmp / lib.name, lib)
        except subprocess.CalledProcessError as e:
            raise RuntimeError(f"{' '.join(e.cmd)}\n{e.stderr[-6000:]}") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return lib


class Harness:
    """One built harness library: :meth:`run` drives a plugin node through TensorRT's interfaces on the CPU."""

    def __init__(self, path: Path):
        self.lib = ctypes.CDLL(str(path))
        self.lib.vrwkv_trt_harness_run.restype = ctypes.c_int
        self.lib.vrwkv_trt_harness_run.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int,
                                                   ctypes.POINTER(ctypes.c_int64), ctypes.c_int,
                                                   ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_void_p),
                                                   ctypes.c_char_p, ctypes.c_int]
        self.lib.vrwkv_trt_harness_refuses_bad_dims.argtypes = [ctypes.c_char_p, ctypes.c_int]

    def run(self, op: str, inputs: Sequence[torch.Tensor], dims: Sequence[int], output_shapes: Sequence[tuple],
            semantics: str | None = None, dtype: torch.dtype = torch.float32) -> tuple[list[torch.Tensor], str]:
        """(outputs, '') on success, ([], the harness's message) when a check failed."""
        inputs = [x.contiguous() for x in inputs]
        outputs = [torch.full(s, float("nan"), dtype=torch.float32) for s in output_shapes]
        in_ptrs = (ctypes.c_void_p * len(inputs))(*[x.data_ptr() for x in inputs])
        out_ptrs = (ctypes.c_void_p * len(outputs))(*[y.data_ptr() for y in outputs])
        d = (ctypes.c_int64 * len(dims))(*dims)
        log = ctypes.create_string_buffer(8192)
        rc = self.lib.vrwkv_trt_harness_run(op.encode(), semantics.encode() if semantics else None,
                                            DTYPE_CODES[dtype], d, len(dims), in_ptrs, out_ptrs, log, len(log))
        return (outputs, "") if rc == 0 else ([], log.value.decode(errors="replace"))

    def refuses_bad_dims(self) -> tuple[bool, str]:
        log = ctypes.create_string_buffer(4096)
        return bool(self.lib.vrwkv_trt_harness_refuses_bad_dims(log, len(log))), log.value.decode()
