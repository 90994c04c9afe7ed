"""Broken inputs to the vrwkv custom ops give an ONNX Runtime error naming the node and the input, never a
crash, and the session keeps working; the library's version and its loading (vrwkv_edge.runtime.custom_ops)."""
from __future__ import annotations

import re

import pytest
import torch

from tests.helpers import REPO, require_extra

require_extra("export")

import onnxruntime as ort  # noqa: E402

from tests.native.conftest import wkv6_inputs, wkv7_inputs  # noqa: E402
from tests.ort_ops.graphs import node_model, run, session  # noqa: E402
from vrwkv_edge.ops import custom_op_contract as contract  # noqa: E402
from vrwkv_edge.runtime import custom_ops  # noqa: E402

NODE = "blocks.3.att.wkv"


def wkv7_feeds():
    return list(wkv7_inputs(1, 4, 2, 32, seed=1))


def replace(xs, op, name, value):
    xs = list(xs)
    xs[contract.INPUTS[op].index(name)] = value
    return xs


def nan_state(xs):
    s = xs[-1].clone()
    s[0, 1, 3, 5] = float("nan")
    return replace(xs, "WKV7", "state_in", s)


def inf_state(xs):
    s = xs[-1].clone()
    s[0, 0, 0, 0] = float("inf")
    return replace(xs, "WKV7", "state_in", s)


# (what is broken, the inputs, the message expected after the node name)
BROKEN_WKV7 = [
    ("head size of k", lambda xs: replace(xs, "WKV7", "k", xs[2][..., :16].contiguous()),
     "input 'k' must have the shape of 'r' [1, 4, 2, 32], got [1, 4, 2, 16]"),
    ("state shape", lambda xs: replace(xs, "WKV7", "state_in", xs[-1][:, :, :16, :16].contiguous()),
     "input 'state_in' must be [B, H, N, N] (float32, key-major) = [1, 2, 32, 32], got [1, 2, 16, 16]"),
    ("state rank", lambda xs: replace(xs, "WKV7", "state_in", xs[-1].reshape(2, 32, 32)),
     "input 'state_in' must be [B, H, N, N] (float32, key-major) = [1, 2, 32, 32], got [2, 32, 32]"),
    ("NaN state", nan_state, "input 'state_in' holds a non-finite value (nan at flat index 1125)"),
    ("Inf state", inf_state, "input 'state_in' holds a non-finite value (inf at flat index 0)"),
    ("unsupported head size", lambda xs: [x[..., :24, :24] if i == 6 else x[..., :24] for i, x in enumerate(xs)],
     "head size N = 24 (last dimension of input 'r' [1, 4, 2, 24]) is not supported"),
    ("T = 0", lambda xs: [x if i == 6 else x[:, :0] for i, x in enumerate(xs)],
     "input 'r' has T = 0 tokens; T must be >= 1"),
    ("rank of r", lambda xs: [x if i == 6 else x.reshape(1, 4, 64) for i, x in enumerate(xs)],
     "input 'r' must have rank 4 [B, T, H, N], got [1, 4, 64]"),
]


@pytest.fixture(scope="module")
def wkv7_session(op_library):
    return session(node_model("WKV7", node_name=NODE), op_library)


@pytest.mark.parametrize("what, broken, message", BROKEN_WKV7, ids=[c[0] for c in BROKEN_WKV7])
def test_wkv7_broken_inputs(wkv7_session, what, broken, message):
    xs = wkv7_feeds()
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.InvalidArgument) as e:
        run(wkv7_session, "WKV7", broken(xs))
    text = str(e.value)
    assert f"Name:'{NODE}'" in text                        # ONNX Runtime names the node ...
    assert f"WKV7: {message}" in text                      # ... the library the op and the input
    y, s = run(wkv7_session, "WKV7", xs)                   # the process and the session survive
    assert torch.isfinite(torch.from_numpy(y)).all()


def test_wkv6_u_and_state_checks(op_library):
    sess = session(node_model("WKV6", node_name="l0.wkv6"), op_library)
    xs = list(wkv6_inputs(2, 3, 2, 64, seed=2))
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.InvalidArgument, match=re.escape(
            "Name:'l0.wkv6' Status Message: WKV6: input 'u' must be [H, N] = [2, 64], got [2, 32]")):
        run(sess, "WKV6", replace(xs, "WKV6", "u", xs[4][:, :32].contiguous()))
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.InvalidArgument, match=re.escape(
            "WKV6: input 'state_in' must be [B, H, N, N] (float32, key-major) = [2, 2, 64, 64], got [1, 2, 64, 64]")):
        run(sess, "WKV6", replace(xs, "WKV6", "state_in", xs[5][:1].contiguous()))


def test_unsupported_type(op_library):
    """A float64 activation reaches the kernel (E inputs accept any type in the graph) and is refused by name."""
    sess = session(node_model("BiWKV6", torch.float64, node_name="vit.blocks.0.att"), op_library)
    r, k, v, w_log, u, _ = wkv6_inputs(1, 2, 1, 32)
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.InvalidArgument, match=re.escape(
            "Name:'vit.blocks.0.att' Status Message: BiWKV6: input 'r' has unsupported type float64 "
            "(supported: float32, float16, bfloat16)")):
        run(sess, "BiWKV6", [r, k, v, w_log, u])


def test_biwkv_checks(op_library):
    sess = session(node_model("BiWKV", node_name="vrwkv.blocks.1.att"), op_library)
    w, u, k, v = torch.zeros(8), torch.zeros(8), torch.randn(1, 5, 8), torch.randn(1, 5, 8)
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.InvalidArgument,
                       match=re.escape("BiWKV: input 'w' must be [C] (float32) = [8], got [7]")):
        run(sess, "BiWKV", [w[:7], u, k, v])
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.InvalidArgument,
                       match=re.escape("BiWKV: input 'v' must have the shape of 'k' [1, 5, 8], got [1, 4, 8]")):
        run(sess, "BiWKV", [w, u, k, v[:, :4]])


def test_bad_semantics_attribute(op_library):
    with pytest.raises(Exception, match=re.escape(
            "BiWKV: attribute 'semantics' must be \"official\" or \"formula\", got \"paper\"")):
        sess = session(node_model("BiWKV", attrs={"semantics": "paper"}), op_library)
        run(sess, "BiWKV", [torch.zeros(8), torch.zeros(8), torch.randn(1, 5, 8), torch.randn(1, 5, 8)])


# ---- versions and loading ----------------------------------------------------------------------------------

def test_header_version_is_the_contract():
    header = (REPO / "csrc" / "ort_ops" / "include" / "vrwkv_ort_ops.h").read_text()
    assert re.search(r"#define VRWKV_ORT_OPS_OP_VERSION (\d+)", header).group(1) == str(contract.OP_VERSION)
    assert f'#define VRWKV_ORT_OPS_DOMAIN "{contract.DOMAIN}"' in header


def test_library_reports_its_versions(op_library):
    lib = custom_ops.inspect(op_library)
    assert (lib.domain, lib.min_version, lib.max_version, lib.providers) == (
        contract.DOMAIN, contract.OP_VERSION, contract.OP_VERSION, ("cpu",))


def custom_meta(version=contract.OP_VERSION):
    return {"wkv": {"flavour": "custom", "domain": contract.DOMAIN, "op_version": version}}


def test_register_for_artefact(op_library):
    so = ort.SessionOptions()
    assert custom_ops.register_for_artefact(so, {}, op_library) is None                       # no wkv section
    assert custom_ops.register_for_artefact(
        so, {"wkv": {"flavour": "standard", "domain": None, "op_version": None}}, op_library) is None
    lib = custom_ops.register_for_artefact(so, custom_meta(), op_library)
    assert lib.path == op_library
    sess = ort.InferenceSession(node_model("WKV7"), so, providers=["CPUExecutionProvider"])
    assert len(run(sess, "WKV7", wkv7_feeds())) == 2


def test_version_mismatch_names_both(op_library):
    with pytest.raises(custom_ops.CustomOpsError, match=re.escape(
            f"out/m/metadata.json needs vrwkv op version {contract.OP_VERSION + 1}, but {op_library} implements "
            f"vrwkv version {contract.OP_VERSION}")):
        custom_ops.register_for_artefact(ort.SessionOptions(), custom_meta(contract.OP_VERSION + 1), op_library,
                                         where="out/m/metadata.json")


def test_library_not_built(tmp_path, monkeypatch):
    monkeypatch.setenv("VRWKV_EDGE_NATIVE_DIR", str(tmp_path))
    monkeypatch.delenv(custom_ops.LIBRARY_ENV, raising=False)
    with pytest.raises(custom_ops.CustomOpsError, match=r"not built .*run `vrwkv-edge build-native --ort-ops-only"):
        custom_ops.register_for_artefact(ort.SessionOptions(), custom_meta())
    monkeypatch.setenv(custom_ops.LIBRARY_ENV, str(tmp_path / "nope.so"))
    with pytest.raises(custom_ops.CustomOpsError, match=r"\$VRWKV_ORT_OPS_LIBRARY .*nope.so: no such file"):
        custom_ops.register_for_artefact(ort.SessionOptions(), custom_meta())


def test_not_an_op_library(tmp_path):
    import onnxruntime
    from pathlib import Path
    other = next((Path(onnxruntime.__file__).parent / "capi").glob("libonnxruntime.so*"))
    with pytest.raises(custom_ops.CustomOpsError, match="not a vrwkv ONNX Runtime custom-op library"):
        custom_ops.inspect(other)


def test_bad_wkv_metadata():
    with pytest.raises(custom_ops.CustomOpsError, match="wkv.domain 'rwkv'"):
        custom_ops.required_op_version({"wkv": {"flavour": "custom", "domain": "rwkv", "op_version": 1}})
    with pytest.raises(custom_ops.CustomOpsError, match="wkv.op_version '1' is not an integer"):
        custom_ops.required_op_version({"wkv": {"flavour": "custom", "domain": "vrwkv", "op_version": "1"}})
