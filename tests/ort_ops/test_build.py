"""Building the custom-op library: ``vrwkv-edge build-native`` options and messages, and a compile check of the
CUDA execution provider's variant with nvcc (nothing CUDA can run on this machine)."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.helpers import REPO
from tests.ort_ops.conftest import ort_include_dir
from vrwkv_edge.native import build, ort_ops


def cli(*args) -> int:
    return build.main(list(args))


def test_missing_headers_are_explained(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VRWKV_EDGE_NATIVE_DIR", str(tmp_path))
    monkeypatch.delenv(ort_ops.INCLUDE_ENV, raising=False)
    assert cli("--ort-ops-only") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the ONNX Runtime custom-op library needs ONNX Runtime's C API header")
    assert "--ort-include DIR" in err and "fetch_ort_headers.sh" in err
    assert cli("--ort-ops-only", "--ort-include", str(tmp_path / "nowhere")) == 2
    assert f"--ort-include {tmp_path / 'nowhere'}: no onnxruntime_c_api.h there" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())                    # nothing half-built left behind


def test_print_path(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VRWKV_EDGE_NATIVE_DIR", str(tmp_path))
    assert cli("--print-ort-ops-path", "--no-cuda") == 0
    path = capsys.readouterr().out.strip()
    assert path == str(ort_ops.library_path(cuda=False)) and path.startswith(str(tmp_path))
    assert path.endswith("libvrwkv_ort_ops.so")


def test_key_covers_the_sources(op_library):
    """The cached library is this checkout's: its folder is named by the hash of the sources it was built from."""
    assert op_library == ort_ops.library_path(cuda=False)
    assert ort_ops.library_path(cuda=True) != op_library


def test_exports_only_the_entry_points(op_library):
    nm = subprocess.run(["nm", "-D", "--defined-only", str(op_library)], capture_output=True, text=True, check=True)
    exported = sorted(line.split()[-1] for line in nm.stdout.splitlines() if " T " in line)
    assert exported == ["RegisterCustomOps", "vrwkv_ort_ops_domain", "vrwkv_ort_ops_max_op_version",
                        "vrwkv_ort_ops_min_op_version", "vrwkv_ort_ops_providers"]
    undefined = subprocess.run(["nm", "-D", "--undefined-only", str(op_library)], capture_output=True, text=True,
                               check=True).stdout
    assert "Ort" not in undefined                          # no ONNX Runtime symbol: the API table comes at run time


@pytest.mark.skipif(ort_ops.nvcc() is None, reason="nvcc not installed")
def test_cuda_variant_compiles(tmp_path):
    """The CUDA EP glue and the official Bi-WKV kernel through nvcc (sm_87, Jetson Orin), and the op table with
    the CUDA ops registered through g++; the other .cu kernels are compiled by tests/native/test_compile_matrix."""
    csrc = REPO / "csrc"
    inc = [f"-I{csrc / 'ort_ops' / 'include'}", f"-I{csrc / 'include'}", f"-I{csrc}",
           f"-I{ort_ops.find_ort_include(str(ort_include_dir()))}"]      # DIR or DIR/onnxruntime
    for src in ("ort_ops/src/ort_ops_cuda.cu", "kernels/biwkv/biwkv_official_cuda.cu"):
        r = subprocess.run([ort_ops.nvcc(), "-std=c++17", "-O2", "-gencode=arch=compute_87,code=sm_87",
                            "-DVRWKV_ORT_OPS_WITH_CUDA", "-Werror", "all-warnings", *inc, "-c", str(csrc / src),
                            "-o", str(tmp_path / "k.o")], capture_output=True, text=True)
        assert r.returncode == 0, f"{src}:\n{r.stderr[-3000:]}"
    r = subprocess.run(["g++", "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", "-Wno-unknown-pragmas",
                        "-DVRWKV_ORT_OPS_WITH_CUDA", *inc, str(csrc / "ort_ops" / "src" / "ort_ops.cpp")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake not installed")
def test_cmake_option_configures(tmp_path):
    """csrc/ with -DVRWKV_BUILD_ORT_OPS=ON configures the library target (the build itself is the one above)."""
    r = subprocess.run(["cmake", "-S", str(REPO / "csrc"), "-B", str(tmp_path), "-DVRWKV_BUILD_ORT_OPS=ON",
                        "-DVRWKV_BUILD_EMULATION=OFF", "-DVRWKV_BUILD_KERNELS=OFF",
                        f"-DVRWKV_ORT_INCLUDE_DIR={ort_include_dir()}"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "vrwkv_ort_ops" in (tmp_path / "build.ninja" if (tmp_path / "build.ninja").exists()
                               else tmp_path / "ort_ops" / "Makefile").read_text()
