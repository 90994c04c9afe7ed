"""The official-kernel Bi-WKV of csrc/kernels/biwkv/biwkv_official.h (C++ CPU kernel, the CUDA source run by
cuda_on_cpu, and the scalar double reference) against ``bi_wkv_official_ref``, the op-by-op PyTorch port of the
official CUDA kernel, computed in float64: 1e-5 relative to the largest output.

T covers one token, T <= 32 (one token per lane: the symmetric form), T = 33 (Lc = 2 with a short last lane),
a T whose last lanes are empty (196: 28 of 32 lanes hold tokens) and a multiple of 32; bf16 inputs are compared
with the reference on the same (rounded) values, so the bound stays 1e-5.
"""
from __future__ import annotations

import pytest
import torch

from tests.native.conftest import rel_err
from tests.native.test_kernels import backend
from vrwkv_edge.ops.biwkv import bi_wkv_official_ref


@pytest.mark.parametrize("name", ["cpu", "reference", "cuda:fibers-forward"])
@pytest.mark.parametrize("T", [1, 2, 31, 33, 64, 196])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_official_forward(capi, name, T, dtype):
    g = torch.Generator().manual_seed(T)
    B, C = 2, 70
    w, u = torch.randn(C, generator=g) * 3 / T, torch.randn(C, generator=g) * 3 / T
    k, v = (2 * torch.randn(B, T, C, generator=g)).to(dtype), torch.randn(B, T, C, generator=g).to(dtype)
    y_ref = bi_wkv_official_ref(w.double(), u.double(), k.double(), v.double())
    y = capi.bi_wkv_official(backend(capi, name), w, u, k, v)
    assert rel_err(y_ref, y) <= 1e-5


def test_official_differs_from_formula(capi):
    """The two semantics are different arithmetic (so the tests above cannot pass by running the formula)."""
    from vrwkv_edge.ops.biwkv import bi_wkv_ref
    g = torch.Generator().manual_seed(1)
    w, u, k, v = torch.randn(8, generator=g) / 9, torch.randn(8, generator=g) / 9, torch.randn(1, 9, 8), torch.randn(1, 9, 8)
    y = capi.bi_wkv_official("cpu", w, u, k, v)
    assert rel_err(bi_wkv_ref(w.double(), u.double(), k.double(), v.double()), y) > 1e-3
