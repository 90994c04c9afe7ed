"""The TensorRT plugin compiles for the GPUs it targets: its kernel glue with nvcc for sm_87 (Jetson Orin), sm_89
(L20) and sm_90 (+ PTX), the IPluginV3 classes with g++ against the TensorRT 10.x headers, every warning an error,
into a shared library that exports getCreators and setLoggerFinder and needs no TensorRT library.  The recurrence
kernels themselves are compile-checked by tests/native/test_compile_matrix.py; the CMake project
(csrc/plugins/trt_wkv/CMakeLists.txt) links all of them into libvrwkv_trt_wkv.so."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.trt.harness import CSRC, CUDA_INCLUDE, PLUGIN
from vrwkv_edge.native.build import CUDA_ARCHS
from vrwkv_edge.trt.headers import include_dir

NVCC = shutil.which("nvcc")


def _run(cmd):
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stdout[-3000:]}{res.stderr[-3000:]}"
    return res


@pytest.mark.skipif(NVCC is None, reason="nvcc not found on PATH: the plugin's CUDA compile cannot run here")
def test_plugin_compiles_for_orin_l20_h100_with_warnings_as_errors(tmp_path):
    trt = include_dir()
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in CUDA_ARCHS]
    gencode.append(f"-gencode=arch=compute_{CUDA_ARCHS[-1]},code=compute_{CUDA_ARCHS[-1]}")
    assert CUDA_ARCHS == ("87", "89", "90")
    glue = tmp_path / "glue.o"
    _run([NVCC, "-O3", "-std=c++17", "--use_fast_math", "-Xcompiler", "-fPIC,-fvisibility=hidden", "-Werror",
          "all-warnings", "-Xcompiler", "-Wall,-Wextra,-Werror", *gencode, f"-I{CSRC / 'include'}", f"-I{CSRC}",
          "-c", str(CSRC / PLUGIN / "wkv_plugin_kernels.cu"), "-o", str(glue)])
    plugin = tmp_path / "plugin.o"
    _run(["g++", "-std=c++17", "-O2", "-fPIC", "-fvisibility=hidden", "-Wall", "-Wextra", "-Wpedantic", "-Werror",
          f"-I{CSRC / 'include'}", "-isystem", str(trt), "-isystem", str(CUDA_INCLUDE), "-c",
          str(CSRC / PLUGIN / "wkv_plugin.cpp"), "-o", str(plugin)])
    lib = tmp_path / "libvrwkv_trt_wkv_plugin_only.so"
    _run([NVCC, "-shared", *gencode, str(glue), str(plugin), "-o", str(lib)])
    exported = _run(["nm", "-D", "--defined-only", str(lib)]).stdout
    assert " T getCreators" in exported and " T setLoggerFinder" in exported
    undefined = _run(["nm", "-DC", "--undefined-only", str(lib)]).stdout
    # Pure interfaces: nothing from libnvinfer; the launchers come from csrc/kernels at the full link.
    assert "nvinfer" not in undefined.lower()
    assert "vrwkv::wkv6_forward_cuda" in undefined and "vrwkv::biwkv_forward_cuda" in undefined
    assert "vrwkv::biwkv_official_forward_cuda" in undefined
