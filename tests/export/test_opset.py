"""Opset 17 (TensorRT 8.6 / JetPack 6.0): every graph is written at opset 17, passes the ONNX checker with
full shape inference, uses no opset-18 signature, and computes what the opset-18 graph computes."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.helpers import require_extra  # noqa: E402

require_extra("export")
import onnx  # noqa: E402

from vrwkv_edge.export import export_model, load_onnx_model  # noqa: E402
from vrwkv_edge.export.opset import REDUCE_AXES_18, OpsetConversionError, to_opset17  # noqa: E402
from vrwkv_edge.visualrwkv.builders import tiny_v7  # noqa: E402

pytestmark = [pytest.mark.usefixtures("quiet_torch"), pytest.mark.export]


def _nodes(graph):
    for n in graph.node:
        yield n
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from _nodes(a.g)


def test_opset17_export_equals_opset18(tmp_path):
    """A VisualRWKV v7 export (RWKV-7 LM: ReduceL2 in the key normalisation; SAM/DINOv2/SigLIP: ReduceMean)."""
    model = tiny_v7(seed=31)
    d17 = export_model(model, tmp_path / "o17", opset=17, embeds=False, progress=False)
    meta = json.loads((d17 / "metadata.json").read_text())         # a 65536-row model: the World vocabulary, shipped
    assert meta["tokenizer"] == {"kind": "world", "file": "rwkv_vocab_v20230424.txt"}
    assert (d17 / meta["tokenizer"]["file"]).is_file() and meta["prompt_template"] == "rwkv-world-chat"
    for f in sorted(d17.glob("*.onnx")):
        m = onnx.load(str(f))
        assert [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")] == [17], f.name
        onnx.checker.check_model(m, full_check=True)
        for n in _nodes(m.graph):
            if n.op_type in REDUCE_AXES_18:
                assert len(n.input) == 1 and any(a.name == "axes" for a in n.attribute), (f.name, n.name)
    om = load_onnx_model(d17)
    img = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    prompt = [[1, 2, 3, 4, 5], img, [6, 7, 8]]
    ref, ref_state = model.prefill(prompt)
    got, state = om.prefill(prompt)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=0)
    lg, _ = om.step(torch.tensor([9]), state)
    torch.testing.assert_close(lg, model.step(torch.tensor([9]), ref_state)[0], atol=1e-4, rtol=0)


def test_conversion_refuses_what_it_cannot_express():
    from onnx import TensorProto, helper
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    g = helper.make_graph([helper.make_node("Shape", ["x"], ["s"]),
                           helper.make_node("ReduceMean", ["x", "s"], ["y"], name="computed_axes")], "g", [x], [y])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(OpsetConversionError, match="computed_axes"):
        to_opset17(m)


def test_opset17_rwkv6_graphs_declare_ir8_and_hold_no_einsum(tmp_path):
    """TensorRT 8.6 (JetPack 6.0) parses no Einsum with an ellipsis or three operands, and the ONNX Runtime of
    older JetPack images refuses files newer than IR 8/9: the opset-17 export satisfies both readers."""
    from tests.helpers import random_model
    model = random_model("x060", n_layer=2, n_embd=64, head_size=32, vocab_size=256, seed=3)
    d = export_model(model, tmp_path / "v6", opset=17, embeds=False, progress=False)
    for f in sorted(d.glob("*.onnx")):
        m = onnx.load(str(f))
        assert m.ir_version == 8, f.name                       # the lowest IR version opset 17 allows
        assert not [n.name for n in _nodes(m.graph) if n.op_type == "Einsum"], f.name
    ids = torch.tensor([[3, 1, 4, 1, 5]])
    got, _ = load_onnx_model(d).forward(ids, last_only=True)
    torch.testing.assert_close(got, model.forward(ids, last_only=True)[0], atol=1e-4, rtol=0)
