"""The vrwkv custom ops in ONNX Runtime (CPU execution provider) against the PyTorch references of
vrwkv_edge.ops, on hand-made single-node graphs.

Tolerances: 1e-5 of the largest output (fp32 accumulation).  fp16 / bf16 nodes get their inputs rounded by a Cast
inside the graph and the reference takes the same rounded values, so the only difference left is the fp32
accumulation order and the bound stays 1e-5 (the input rounding itself, ~4e-3 for bf16, is the same on both
sides; comparing against unrounded inputs would only measure that rounding).
"""
from __future__ import annotations

import pytest
import torch

from tests.helpers import require_extra

require_extra("export")

from tests.native.conftest import rel_err, wkv6_inputs, wkv7_inputs  # noqa: E402
from tests.ort_ops.graphs import node_model, rounded, run, session  # noqa: E402
from vrwkv_edge.ops.biwkv import bi_wkv6_ref, bi_wkv_official_ref, bi_wkv_ref  # noqa: E402
from vrwkv_edge.ops.wkv6 import wkv6_ref  # noqa: E402
from vrwkv_edge.ops.wkv7 import wkv7_ref  # noqa: E402

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# (B, T, H, N): decode; prefill not a multiple of the kernels' 16-token chunk; head sizes 32 and 64.
SHAPES = [(1, 1, 2, 64), (2, 37, 3, 32), (3, 5, 1, 64)]
TOL = 1e-5


def ids(shape):
    return "x".join(map(str, shape))


@pytest.fixture(scope="module")
def sessions(op_library):
    """One session per (op, dtype, semantics), shared by the tests (session creation dominates small runs)."""
    cache = {}

    def get(op, dtype, **attrs):
        key = (op, dtype, tuple(sorted(attrs.items())))
        if key not in cache:
            cache[key] = session(node_model(op, dtype, attrs=attrs or None), op_library)
        return cache[key]
    return get


def low(xs, dtype, n_tokens_inputs):
    """The first ``n_tokens_inputs`` tensors rounded to ``dtype`` (as the graph's Cast does), the rest as is."""
    return [rounded(x, dtype).float() if i < n_tokens_inputs else x for i, x in enumerate(xs)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=ids)
def test_wkv6(sessions, shape, dtype):
    xs = list(wkv6_inputs(*shape, seed=sum(shape)))
    y, s = run(sessions("WKV6", dtype), "WKV6", xs)
    y_ref, s_ref = wkv6_ref(*low(xs, dtype, 5))
    assert rel_err(y_ref, torch.from_numpy(y)) <= TOL
    assert rel_err(s_ref, torch.from_numpy(s)) <= TOL


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=ids)
def test_wkv7(sessions, shape, dtype):
    xs = list(wkv7_inputs(*shape, seed=sum(shape)))
    y, s = run(sessions("WKV7", dtype), "WKV7", xs)
    y_ref, s_ref = wkv7_ref(*low(xs, dtype, 6))
    assert rel_err(y_ref, torch.from_numpy(y)) <= TOL
    assert rel_err(s_ref, torch.from_numpy(s)) <= TOL


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1, 1, 2, 32), (2, 19, 2, 64)], ids=ids)
def test_biwkv6(sessions, shape, dtype):
    r, k, v, w_log, u, _ = wkv6_inputs(*shape, seed=sum(shape))
    xs = [r, k, v, w_log, u]
    (y,) = run(sessions("BiWKV6", dtype), "BiWKV6", xs)
    y_ref = bi_wkv6_ref(*(rounded(x, dtype) for x in xs))
    assert rel_err(y_ref, torch.from_numpy(y)) <= TOL


# Every type and semantics at T = 33 (the official kernel's Lc = 2 with a short last lane); one token; and T = 196
# (a 14 x 14 patch grid: 28 of the official kernel's 32 lanes hold tokens).
BIWKV_CASES = ([(33, d, s) for d in DTYPES for s in ("official", "formula", None)]
               + [(1, torch.float32, "official"), (1, torch.bfloat16, "formula"), (196, torch.float32, None),
                  (196, torch.float16, "formula")])


@pytest.mark.parametrize("T, dtype, semantics", BIWKV_CASES, ids=str)
def test_biwkv(sessions, T, dtype, semantics):
    """Both semantics; no attribute means the official kernel's (the contract's default)."""
    g = torch.Generator().manual_seed(T)
    B, C = 2, 70
    w, u = torch.randn(C, generator=g) * 3 / T, torch.randn(C, generator=g) * 3 / T
    k, v = 2 * torch.randn(B, T, C, generator=g), torch.randn(B, T, C, generator=g)
    attrs = {"semantics": semantics} if semantics else {}
    (y,) = run(sessions("BiWKV", dtype, **attrs), "BiWKV", [w, u, k, v])
    ref = bi_wkv_ref if semantics == "formula" else bi_wkv_official_ref
    y_ref = ref(w.double(), u.double(), rounded(k, dtype), rounded(v, dtype))
    assert rel_err(y_ref, torch.from_numpy(y)) <= TOL


def test_threads_agree(op_library):
    """ORT's intra-op thread pool runs the heads in parallel: the same numbers as one thread."""
    xs = list(wkv7_inputs(2, 20, 4, 32, seed=3))
    one = run(session(node_model("WKV7"), op_library, threads=1), "WKV7", xs)
    two = run(session(node_model("WKV7"), op_library, threads=2), "WKV7", xs)
    for a, b in zip(one, two):
        assert (a == b).all()


def test_shape_inference(op_library):
    """Output shapes (symbolic dimensions included) and types come from the library's shape inference."""
    shapes = {n: ["B", "T", 2, 32] for n in ("r", "w_log", "k", "v", "a", "b")} | {"state_in": ["B", 2, 32, 32]}
    sess = session(node_model("WKV7", shapes=shapes), op_library)
    outs = {o.name: (o.shape, o.type) for o in sess.get_outputs()}
    assert outs == {"y": (["B", "T", 2, 32], "tensor(float)"), "state_out": (["B", 2, 32, 32], "tensor(float)")}
    sess = session(node_model("BiWKV", torch.float16, shapes={"k": ["B", 196, 64], "v": ["B", 196, 64]}), op_library)
    assert [(o.shape, o.type) for o in sess.get_outputs()] == [(["B", 196, 64], "tensor(float)")]
