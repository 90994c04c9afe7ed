"""The TensorRT plugins driven through their IPluginV3 interfaces on the CPU (csrc/plugins/trt_wkv/tests/harness.cpp):
creator and fields, output types and shapes (with the harness's IExprBuilder), every type / format pair,
configurePlugin, a serialisation round trip, clone, attachToContext and enqueue, whose kernels (the GPU source,
emulated by cuda_on_cpu) must match the PyTorch references within 1e-5 (relative to the largest reference value)."""
from __future__ import annotations

import re

import pytest
import torch

from tests.native.conftest import rel_err, wkv6_inputs, wkv7_inputs
from vrwkv_edge.ops import custom_op_contract as contract
from vrwkv_edge.ops.biwkv import bi_wkv6_ref, bi_wkv_official_ref, bi_wkv_ref
from vrwkv_edge.ops.wkv6 import wkv6_ref
from vrwkv_edge.ops.wkv7 import wkv7_ref

TOL = 1e-5
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _cast(xs, dtype):
    return [x.to(dtype) for x in xs]


def wkv6_case(B, T, H, N, dtype, seed=0):
    r, k, v, w, u, s = wkv6_inputs(B, T, H, N, seed=seed)
    r, k, v, w, u = _cast((r, k, v, w, u), dtype)
    # The reference sees exactly the rounded activations the plugin reads.
    y, s_out = wkv6_ref(*(x.float() for x in (r, k, v, w, u)), s)
    return [r, k, v, w, u, s], [y, s_out], (B, T, H, N)


def wkv7_case(B, T, H, N, dtype, seed=0):
    r, w, k, v, a, b, s = wkv7_inputs(B, T, H, N, seed=seed)
    r, w, k, v, a, b = _cast((r, w, k, v, a, b), dtype)
    y, s_out = wkv7_ref(*(x.float() for x in (r, w, k, v, a, b)), s)
    return [r, w, k, v, a, b, s], [y, s_out], (B, T, H, N)


def biwkv6_case(B, T, H, N, dtype, seed=0):
    r, k, v, w, u, _ = wkv6_inputs(B, T, H, N, seed=seed)
    w = w.clamp_min(-8.0)       # bi_wkv6_ref's running products of e^{w_log}: no -inf here
    r, k, v, w, u = _cast((r, k, v, w, u), dtype)
    return [r, k, v, w, u], [bi_wkv6_ref(*(x.float() for x in (r, k, v, w, u)))], (B, T, H, N)


def biwkv_case(B, T, C, dtype, seed=0, semantics="formula"):
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(C, generator=g) * 2 / T
    u = torch.randn(C, generator=g) / T
    k, v = (torch.randn(B, T, C, generator=g).to(dtype) for _ in range(2))
    ref = bi_wkv_official_ref if semantics == "official" else bi_wkv_ref
    return [w, u, k, v], [ref(*(x.double() for x in (w, u, k, v))).float()], (B, T, C)


CASES = {contract.WKV6: wkv6_case, contract.WKV7: wkv7_case, contract.BIWKV6: biwkv6_case}


def _check(harness, op, inputs, refs, dims, dtype, semantics=None):
    outs, err = harness.run(op, inputs, dims, [r.shape for r in refs], semantics=semantics, dtype=dtype)
    assert not err, f"{op} {dtype}: {err}"
    for name, ref, out in zip(contract.OUTPUTS[op], refs, outs):
        e = rel_err(ref, out)
        assert e <= TOL, f"{op} {dtype} {name}: relative error {e:.3g} > {TOL}"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("op", sorted(CASES))
@pytest.mark.parametrize("T", [1, 19], ids=["decode", "prefill"])
def test_per_head_nodes_match_reference(harness, op, T, dtype):
    inputs, refs, dims = CASES[op](2, T, 2, 16, dtype, seed=T)
    assert [i for i in contract.INPUTS[op]] and len(inputs) == len(contract.INPUTS[op])
    _check(harness, op, inputs, refs, dims, dtype)


@pytest.mark.parametrize("N", [8, 64])
def test_head_sizes(harness, N):
    inputs, refs, dims = wkv7_case(1, 5, 1, N, torch.float32, seed=N)
    _check(harness, contract.WKV7, inputs, refs, dims, torch.float32)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("semantics", [*contract.BIWKV_SEMANTICS, None], ids=lambda s: s or "default")
def test_biwkv_matches_reference(harness, semantics, dtype):
    """T = 45: the official kernel's 32 lanes hold 2 tokens each, the last lanes fewer (or none)."""
    expected = semantics or contract.DEFAULT_BIWKV_SEMANTICS
    inputs, refs, dims = biwkv_case(2, 45, 40, dtype, seed=len(expected), semantics=expected)
    _check(harness, contract.BIWKV, inputs, refs, dims, dtype, semantics=semantics)


def test_biwkv_semantics_differ(harness):
    """The two semantics are different arithmetic: the attribute reaches the kernel through fields and serialisation."""
    inputs, refs, dims = biwkv_case(1, 9, 8, torch.float32)
    (formula,), _ = harness.run(contract.BIWKV, inputs, dims, [refs[0].shape], semantics="formula")
    (official,), _ = harness.run(contract.BIWKV, inputs, dims, [refs[0].shape], semantics="official")
    assert rel_err(formula, official) > 1e-3


def test_bad_attribute_and_dims_are_refused_by_name(harness):
    inputs, refs, dims = biwkv_case(1, 4, 8, torch.float32)
    _, err = harness.run(contract.BIWKV, inputs, dims, [r.shape for r in refs], semantics="bogus")
    assert "createPlugin(kBUILD) returned null" in err and "'semantics' = 'bogus'" in err
    refused, log = harness.refuses_bad_dims()
    assert refused and "configurePlugin" in log and "dimension N" in log


def test_plugin_version_is_the_contracts():
    header = (contract_header := __import__("tests.trt.harness", fromlist=["CSRC"]).CSRC /
              "plugins/trt_wkv/wkv_plugin_kernels.h").read_text()
    m = re.search(r"constexpr int kOpVersion = (\d+);", header)
    assert m and int(m.group(1)) == contract.OP_VERSION, contract_header
    assert contract.DOMAIN == re.search(r'kPluginNamespace\[\] = "(\w+)"', (
        contract_header.parent / "wkv_plugin.h").read_text()).group(1)


@pytest.mark.parametrize("bug, message", [("shape", r"getOutputShapes: output 0 is \[2, 4, 2, 16\], expected \[2, 3, 2, 16\]"),
                                          ("dtype", r"getOutputDataTypes: output 0 has type 1")])
def test_harness_catches_a_deliberately_wrong_plugin(broken_harness, bug, message):
    inputs, refs, dims = wkv6_case(2, 3, 2, 16, torch.float16)
    _, err = broken_harness[bug].run(contract.WKV6, inputs, dims, [r.shape for r in refs], dtype=torch.float16)
    assert re.search(message, err), err
