"""TensorRT-RTX (pip ``tensorrt-rtx``; its builder runs without a GPU) parses and builds engines for SM89 (the L20's
architecture) from tiny standard-op exports of every graph kind (fp32: decode, prefill, vision, image_prefill,
classifier; fp16: decode, prefill), through build-trt's own build path (vrwkv_edge.trt.build: strongly typed
network, one optimisation profile per graph from its actual inputs)."""
from __future__ import annotations

import importlib.util
import json
import os

import pytest

from vrwkv_edge.trt import build as trt_build

pytestmark = pytest.mark.slow
RTX_PACKAGES = "tensorrt-rtx-cu13-libs==1.7.1.116 tensorrt-rtx-cu13-bindings==1.7.1.116"
if importlib.util.find_spec("tensorrt_rtx_bindings") is None:   # as tests.helpers.require_extra: fail in CI
    reason = f"needs TensorRT-RTX for the CPU-side build check (pip install {RTX_PACKAGES})"
    if os.environ.get("VRWKV_EDGE_REQUIRE_EXTRAS") == "1":
        pytest.fail(f"{reason} (VRWKV_EDGE_REQUIRE_EXTRAS=1)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)
import tensorrt_rtx_bindings as trt  # noqa: E402


EXPECTED = {"visual_fp32": ["decode", "image_prefill", "prefill", "vision"], "lm_fp16": ["decode", "prefill"],
            "classifier_fp32": ["classifier"]}


@pytest.mark.parametrize("which", sorted(EXPECTED))
def test_rtx_builds_every_graph_kind_for_sm89(request, which):
    bp = trt_build.plan(request.getfixturevalue(which), max_prefill=64, max_batch=2)
    expected = EXPECTED[which]
    assert sorted(g.kind for g in bp.graphs) == expected and bp.strongly_typed
    manifest = trt_build.build_engines(bp, trt, compute_capability=trt.ComputeCapability.SM89)
    record = json.loads(manifest.read_text())
    assert record["format"] == trt_build.MANIFEST_FORMAT and record["compute_capability"].endswith("SM89")
    assert record["state_dtype"] == "float32" and record["precision"] == which[-4:]
    for g in bp.graphs:
        entry = record["engines"][g.kind]
        assert g.engine.is_file() and g.engine.stat().st_size == entry["bytes"] > 10_000
        assert [p["name"] for p in entry["profile"]] == [p.name for p in g.inputs]
