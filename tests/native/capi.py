"""Test-only access to the kernels without torch in the C++: builds ``csrc/tests/capi.cpp`` with the emulated CUDA
kernels (the ``.cu`` files compiled as C++ against ``cuda_on_cpu.h``), the C++ CPU kernels and the scalar
references into one shared library, and calls it through ctypes on torch tensors' memory.

Builds are cached under ``$VRWKV_EDGE_NATIVE_DIR`` (default ``~/.cache/vrwkv_edge/native``) by a hash of the
sources and flags, and made in a temporary folder renamed into place.
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

from vrwkv_edge.native.build import SOURCE_DIRS, cache_root, csrc_dir

CSRC = csrc_dir()
CUDA_SOURCES = ("kernels/wkv6/wkv6_cuda.cu", "kernels/wkv7/wkv7_cuda.cu", "kernels/biwkv/biwkv_cuda.cu",
                "kernels/biwkv/biwkv_official_cuda.cu")
CPU_SOURCES = ("kernels/wkv6/wkv6_cpu.cpp", "kernels/wkv7/wkv7_cpu.cpp", "kernels/biwkv/biwkv_cpu.cpp",
               "kernels/biwkv/biwkv_official_cpu.cpp", "kernels/reference.cpp",
               "kernels/biwkv/biwkv_official_reference.cpp")
BASE_FLAGS = ("-std=c++20", "-fPIC", "-fopenmp-simd", "-Wall", "-Wextra", "-Werror", "-Wno-unknown-pragmas",
              f"-I{CSRC / 'include'}", f"-I{CSRC}")
# Order of the pointer array of vrwkv_capi_run (the Ptr enum of csrc/tests/capi.cpp).
PTRS = ("r", "k", "v", "w_log", "a", "b", "u", "state_in", "state_out", "y", "dy", "dstate_out", "dr", "dk", "dv",
        "dw_log", "da", "db", "du", "dstate_in", "workspace")
DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
SCHEDULES = {"fibers-forward": 0, "fibers-reverse": 1, "fibers-shuffled": 2, "threads": 3}


def _key(sources: Sequence[str], flags: Sequence[str]) -> str:
    h = hashlib.sha256(repr(tuple(flags)).encode())
    for f in sorted(p for d in (*SOURCE_DIRS, "tests") for p in (CSRC / d).rglob("*")
                    if p.suffix in (".h", ".cuh", ".cpp", ".cu")):
        h.update(f.read_bytes())
    h.update(repr(tuple(sources)).encode())
    return h.hexdigest()[:16]


def compile_and_link(name: str, sources: Sequence[str], flags: Sequence[str], shared: bool) -> Path:
    """Compiles ``sources`` (relative to csrc/, .cu as C++) with two jobs and links them; cached by hash."""
    out = cache_root() / f"{name}-{_key(sources, flags)}" / (f"lib{name}.so" if shared else name)
    if out.is_file():
        return out
    cache_root().mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=cache_root()))
    try:
        def compile_one(src: str) -> Path:
            obj = tmp / (src.replace("/", "_") + ".o")
            lang = ["-x", "c++"] if src.endswith(".cu") else []
            subprocess.run(["g++", *BASE_FLAGS, *flags, "-c", *lang, str(CSRC / src), "-o", str(obj)],
                           check=True, capture_output=True, text=True)
            return obj
        with ThreadPoolExecutor(2) as pool:
            objs = list(pool.map(compile_one, sources))
        link = ["-shared"] if shared else []
        subprocess.run(["g++", *flags, *link, *map(str, objs), "-o", str(tmp / out.name), "-pthread"],
                       check=True, capture_output=True, text=True)
        try:
            os.rename(tmp, out.parent)
        except OSError:
            if not out.is_file():
                raise
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"{' '.join(e.cmd)}\n{e.stderr}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


class Capi:
    """The kernels of ``csrc/`` through ``vrwkv_capi_run``; ``backend`` is ``cuda`` (emulated), ``cpu`` or
    ``reference``.  Inputs are contiguous tensors of one dtype; outputs are fp32 like the torch ops'."""

    def __init__(self, path: Path):
        self.lib = lib = ctypes.CDLL(str(path))
        lib.vrwkv_capi_run.restype = ctypes.c_char_p
        lib.vrwkv_capi_run.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_int64), ctypes.POINTER(ctypes.c_void_p)]
        lib.vrwkv_capi_set_schedule.argtypes = [ctypes.c_int, ctypes.c_uint64]
        lib.vrwkv_capi_workspace_floats.restype = ctypes.c_int64
        lib.vrwkv_capi_workspace_floats.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_int64)]

    def schedule(self, name: str, seed: int = 0) -> None:
        self.lib.vrwkv_capi_set_schedule(SCHEDULES[name], seed)

    def run(self, op: str, dims: Sequence[int], **tensors: torch.Tensor) -> None:
        ptrs = (ctypes.c_void_p * len(PTRS))()
        for name, t in tensors.items():
            assert t.is_contiguous(), name
            ptrs[PTRS.index(name)] = t.data_ptr()
        err = self.lib.vrwkv_capi_run(op.encode(), (ctypes.c_int64 * len(dims))(*dims), ptrs)
        if err:
            raise ValueError(err.decode())

    def _workspace(self, family: str, dims: Sequence[int]) -> torch.Tensor:
        n = self.lib.vrwkv_capi_workspace_floats(family.encode(), (ctypes.c_int64 * len(dims))(*dims))
        return torch.full((n,), float("nan"))            # NaN-poisoned: a read before a write shows up

    @staticmethod
    def _dims(r: torch.Tensor) -> list[int]:
        return [*r.shape, DTYPE_CODES[r.dtype]]

    def wkv6(self, backend, r, k, v, w_log, u, state):
        y, s_out = torch.empty(r.shape), torch.empty(state.shape)
        self.run(f"wkv6_forward_{backend}", self._dims(r), r=r, k=k, v=v, w_log=w_log, u=u, state_in=state,
                 state_out=s_out, y=y)
        return y, s_out

    def wkv7(self, backend, r, w_log, k, v, a, b, state):
        y, s_out = torch.empty(r.shape), torch.empty(state.shape)
        self.run(f"wkv7_forward_{backend}", self._dims(r), r=r, w_log=w_log, k=k, v=v, a=a, b=b, state_in=state,
                 state_out=s_out, y=y)
        return y, s_out

    def wkv6_backward(self, backend, r, k, v, w_log, u, state, dy, dstate):
        """Returns the gradients in the input order (r, k, v, w_log, u, state); du summed over the batch."""
        names = ("dr", "dk", "dv", "dw_log")
        g = {n: torch.empty(r.shape) for n in names}
        B, _, H, N = r.shape
        du, ds = torch.empty(B, H, N), torch.empty(state.shape)
        self.run(f"wkv6_backward_{backend}", self._dims(r), r=r, k=k, v=v, w_log=w_log, u=u, state_in=state, dy=dy,
                 dstate_out=dstate, du=du, dstate_in=ds, workspace=self._workspace("wkv", r.shape), **g)
        return (*(g[n] for n in names), du.sum(0), ds)

    def wkv7_backward(self, backend, r, w_log, k, v, a, b, state, dy, dstate):
        """Returns the gradients in the input order (r, w_log, k, v, a, b, state)."""
        names = ("dr", "dw_log", "dk", "dv", "da", "db")
        g = {n: torch.empty(r.shape) for n in names}
        ds = torch.empty(state.shape)
        self.run(f"wkv7_backward_{backend}", self._dims(r), r=r, w_log=w_log, k=k, v=v, a=a, b=b, state_in=state,
                 dy=dy, dstate_out=dstate, dstate_in=ds, workspace=self._workspace("wkv", r.shape), **g)
        return (*(g[n] for n in names), ds)

    def bi_wkv(self, backend, w, u, k, v):
        y = torch.empty(k.shape)
        dims = [*k.shape, DTYPE_CODES[k.dtype]]
        self.run(f"biwkv_forward_{backend}", dims, w_log=w.float().contiguous(), u=u.float().contiguous(), k=k, v=v,
                 y=y,
                 workspace=self._workspace("biwkv", k.shape))
        return y

    def bi_wkv_official(self, backend, w, u, k, v):
        """The official-kernel Bi-WKV (csrc/kernels/biwkv/biwkv_official.h); backend cpu, cuda or reference."""
        y = torch.empty(k.shape)
        self.run(f"biwkv_official_forward_{backend}", [*k.shape, DTYPE_CODES[k.dtype]], w_log=w.float().contiguous(),
                 u=u.float().contiguous(), k=k, v=v, y=y)
        return y

    def bi_wkv_backward(self, backend, w, u, k, v, dy):
        """Returns (dw, du, dk, dv); dw, du summed over the batch."""
        B, T, C = k.shape
        dk, dv, dw, du = torch.empty(k.shape), torch.empty(k.shape), torch.empty(B, C), torch.empty(B, C)
        self.run(f"biwkv_backward_{backend}", [*k.shape, DTYPE_CODES[k.dtype]], w_log=w.float().contiguous(),
                 u=u.float().contiguous(), k=k, v=v, dy=dy, dk=dk, dv=dv, dw_log=dw, du=du,
                 workspace=self._workspace("biwkv", k.shape))
        return dw.sum(0), du.sum(0), dk, dv


def build_capi() -> Capi:
    return Capi(compile_and_link("vrwkv_capi", CUDA_SOURCES + CPU_SOURCES + ("tests/capi.cpp",), ("-O2",), True))


def build_race_check(*flags: str) -> Path:
    """The WKV-7 race-check driver (csrc/tests/race_check.cpp) with extra flags, e.g. -DVRWKV_TEST_DROP_BARRIER."""
    return compile_and_link("race_check", ("kernels/wkv7/wkv7_cuda.cu", "kernels/reference.cpp",
                                           "tests/race_check.cpp"), ("-O1", "-g", *flags), False)
