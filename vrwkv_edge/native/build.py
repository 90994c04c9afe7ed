"""Builds the native WKV kernels (``csrc/``) into a PyTorch extension library, on request only.

``vrwkv-edge build-native`` (or ``python -m vrwkv_edge.native``) compiles ``csrc/torch/binding.cpp`` and the
C++ CPU kernels with ninja through ``torch.utils.cpp_extension``, plus the CUDA kernels when this torch has CUDA;
then, where ONNX Runtime's headers are available, the ONNX Runtime custom-op library (:mod:`.ort_ops`).
The library goes to ``$VRWKV_EDGE_NATIVE_DIR`` (default ``~/.cache/vrwkv_edge/native``) under a key that hashes the
sources, the flags, the CPU's instruction-set flags (the build uses ``-march=native``), and the torch and Python
versions, so a stale library is never loaded.  The build happens in a temporary folder that is renamed into place:
a failed or concurrent build never leaves a half-written library where the loader looks.

Nothing here runs at import of :mod:`vrwkv_edge.native`; that module only looks for :func:`library_path`.
"""
from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

from . import ort_ops
from .toolchain import CFLAGS, CUDA_ARCHS, cache_root, cpu_flags, csrc_dir, publish_build

EXT_NAME = "vrwkv_edge_native"
CPU_SOURCES = ("torch/binding.cpp", "kernels/wkv6/wkv6_cpu.cpp", "kernels/wkv7/wkv7_cpu.cpp",
               "kernels/biwkv/biwkv_cpu.cpp", "kernels/reference.cpp")
CUDA_SOURCES = ("kernels/wkv6/wkv6_cuda.cu", "kernels/wkv7/wkv7_cuda.cu", "kernels/biwkv/biwkv_cuda.cu")
# The parts of csrc/ the extension is built from (csrc/ also holds other parts, which must not change the key).
SOURCE_DIRS = ("include", "kernels", "cuda_on_cpu", "torch")
NVCC_FLAGS = ("-O3", "--use_fast_math", "-std=c++17",
              *(f"-gencode=arch=compute_{a},code=sm_{a}" for a in CUDA_ARCHS),
              f"-gencode=arch=compute_{CUDA_ARCHS[-1]},code=compute_{CUDA_ARCHS[-1]}")


def want_cuda() -> bool:
    import torch
    from torch.utils import cpp_extension
    return torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None


def build_key(cuda: bool) -> str:
    import torch
    root = csrc_dir()
    h = hashlib.sha256()
    files = sorted(p for d in SOURCE_DIRS for p in (root / d).rglob("*") if p.suffix in (".h", ".cuh", ".cpp", ".cu"))
    for p in files:
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    for part in (CFLAGS, NVCC_FLAGS if cuda else (), (cpu_flags(), torch.__version__, sys.version, str(cuda))):
        h.update(repr(part).encode())
    return h.hexdigest()[:16]


def library_path(cuda: Optional[bool] = None) -> Path:
    cuda = want_cuda() if cuda is None else cuda
    return cache_root() / build_key(cuda) / f"{EXT_NAME}.so"


def build(force: bool = False, cuda: Optional[bool] = None, verbose: bool = False) -> Path:
    """Builds the library if it is not already in the cache (or ``force``); returns its path."""
    from torch.utils import cpp_extension
    cuda = want_cuda() if cuda is None else cuda
    target = library_path(cuda)
    if target.is_file() and not force:
        return target
    root = csrc_dir()
    sources = [str(root / s) for s in CPU_SOURCES + (CUDA_SOURCES if cuda else ())]
    cache_root().mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="build-", dir=cache_root()))
    try:
        # The builder behind cpp_extension.load, without load()'s side effect of loading the library into this
        # process from the temporary folder (a second load from the final path would register the ops twice).
        cpp_extension.verify_ninja_availability()
        cpp_extension._write_ninja_file_and_build_library(
            name=EXT_NAME, sources=sources, build_directory=str(tmp), verbose=verbose, with_cuda=cuda,
            with_sycl=False, extra_include_paths=[str(root / "include"), str(root)],
            extra_cflags=list(CFLAGS) + (["-DVRWKV_WITH_CUDA"] if cuda else []),
            extra_cuda_cflags=list(NVCC_FLAGS) + ["-I" + str(root / "include"), "-I" + str(root)],
            extra_sycl_cflags=[], extra_ldflags=[])
        publish_build(tmp, target, force)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true", help="rebuild even if a matching build is cached")
    parser.add_argument("--no-cuda", action="store_true", help="build the CPU kernels only")
    parser.add_argument("--verbose", action="store_true", help="show the compiler commands")
    parser.add_argument("--print-path", action="store_true", help="print where the library is (or would be) and exit")
    parser.add_argument("--ort-include", metavar="DIR",
                        help="ONNX Runtime C API headers (onnxruntime_c_api.h in DIR or DIR/onnxruntime) for the "
                             "custom-op library; default $VRWKV_ORT_INCLUDE_DIR, skipped when neither is set")
    parser.add_argument("--ort-ops-only", action="store_true",
                        help="build only the ONNX Runtime custom-op library (no torch extension)")
    parser.add_argument("--print-ort-ops-path", action="store_true",
                        help="print where the ONNX Runtime custom-op library is (or would be) and exit")


def _build_ort_ops(args: argparse.Namespace, cuda) -> int:
    start = time.perf_counter()
    required = args.ort_ops_only or args.ort_include
    try:
        if not required and ort_ops.find_ort_include() is None and not ort_ops.library_path(cuda).is_file():
            print(f"ONNX Runtime custom-op library: skipped: {ort_ops.MISSING_HEADERS}")
            return 0
        path = ort_ops.build(args.ort_include, force=args.force, cuda=cuda, verbose=args.verbose)
    except ort_ops.OrtOpsBuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"ONNX Runtime custom-op library: {path} ({time.perf_counter() - start:.1f} s); "
          f"custom-flavour exports (export --wkv custom) load it automatically")
    return 0


def run(args: argparse.Namespace) -> int:
    cuda = False if args.no_cuda else None
    if args.print_path or args.print_ort_ops_path:
        if args.print_path:
            print(library_path(cuda))
        if args.print_ort_ops_path:
                    print(ort_ops.library_path(cuda))
        return 0
    if not args.ort_ops_only:
        start = time.perf_counter()
        path = build(force=args.force, cuda=cuda, verbose=args.verbose)
        print(f"native WKV kernels: {path} ({time.perf_counter() - start:.1f} s; "
              f"{'CPU + CUDA' if (want_cuda() and not args.no_cuda) else 'CPU only'}); "
              f"select with model.set_wkv_impl('native')")
    return _build_ort_ops(args, cuda)


HELP = ("build the C++ (and, with a CUDA torch, CUDA) WKV kernels of csrc/ for wkv_impl='native', and the ONNX "
        "Runtime custom-op library for custom-flavour exports")


def add_build_native_cli(subparsers) -> None:
    """Registers ``vrwkv-edge build-native`` on the package CLI's sub-parsers."""
    p = subparsers.add_parser("build-native", help=HELP, description=HELP)
    add_arguments(p)
    p.set_defaults(func=run)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vrwkv_edge.native", description=HELP)
    add_arguments(parser)
    return run(parser.parse_args(argv))
