"""The CUDA kernels compile with nvcc for Jetson Orin (sm_87), L20/L40 (sm_89) and H100/H200 (sm_90) plus PTX,
with every warning an error (nvcc's and the host compiler's), printing each kernel's registers / shared memory
(--resource-usage), and without register spills.  Compiling is all this machine can do: no GPU runs them here."""
from __future__ import annotations

import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from vrwkv_edge.native.build import CUDA_ARCHS, CUDA_SOURCES, csrc_dir

NVCC = shutil.which("nvcc")
ENTRY = re.compile(r"'(\w+)' for '(sm_\d+)'.*?(\d+) bytes spill stores.*?Used (\d+) registers"
                   r"(?:[^\n]*?(\d+) bytes smem)?", re.S)


def resource_usage(ptxas_output: str) -> list[tuple[str, str, int, int, int]]:
    """(kernel, arch, spill store bytes, registers, static shared memory bytes) per compiled entry function."""
    rows = []
    for part in ptxas_output.split("Compiling entry function")[1:]:
        m = ENTRY.search(part)
        rows.append((m.group(1), m.group(2), int(m.group(3)), int(m.group(4)), int(m.group(5) or 0)))
    return rows


def _demangle(name: str) -> str:
    m = re.search(r"((?:bi)?wkv\d?_(?:forward|backward)_kernel)I(?:Li(\d+)E)?(?:NS_6)?(\w+?)EE", name)
    return f"{m.group(1)}<{m.group(2) or ''}{',' if m.group(2) else ''}{m.group(3)}>" if m else name


@pytest.mark.slow
def test_nvcc_compile_matrix(tmp_path):
    if NVCC is None:
        pytest.skip("nvcc not found on PATH: the CUDA compile matrix cannot run here")
    root = csrc_dir()
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in CUDA_ARCHS]
    gencode.append(f"-gencode=arch=compute_{CUDA_ARCHS[-1]},code=compute_{CUDA_ARCHS[-1]}")

    def compile_one(src: str) -> subprocess.CompletedProcess:
        cmd = [NVCC, "-O3", "-std=c++17", "--use_fast_math", f"-I{root / 'include'}", f"-I{root}",
               "-Werror", "all-warnings", "-Xcompiler", "-Wall,-Wextra,-Werror", "--resource-usage", *gencode,
               "-c", str(root / src), "-o", str(tmp_path / (src.replace("/", "_") + ".o"))]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=600)

    with ThreadPoolExecutor(2) as pool:
        results = dict(zip(CUDA_SOURCES, pool.map(compile_one, CUDA_SOURCES)))
    spills = []
    for src, res in results.items():
        assert res.returncode == 0, f"{src}:\n{res.stderr[-4000:]}"
        rows = resource_usage(res.stdout + res.stderr)
        assert {arch for _, arch, *_ in rows} == {f"sm_{a}" for a in CUDA_ARCHS}
        print(f"\n{src}: kernel, arch, registers, shared memory (bytes), spill stores (bytes)")
        for fn, arch, spill, regs, smem in rows:
            print(f"  {_demangle(fn):40s} {arch}  {regs:>3} regs  {smem:>6} B smem  {spill} B spills")
            if spill:
                spills.append(f"{_demangle(fn)} {arch}")
    assert not spills, f"register spills: {spills}"
