"""The custom-op flavour (``export --wkv custom``, issue #12): every WKV is one ``vrwkv`` node.

* the torch custom ops that stand for the nodes compute what the WKV references compute (random inputs);
* per graph kind (decode, prefill, the ``_embeds`` graphs, image_prefill, vision with a Vision-RWKV tower, the
  Vision-RWKV classifier): the node count, op types, domain, ``opset_import`` and attributes, and at run time
  every node input and output has the contract's shape and element type;
* the graphs compute what PyTorch computes (fp32, 1e-4): run by ``onnx.reference`` with the nodes implemented by
  the PyTorch forms, and by ONNX Runtime with the op library of ``csrc/ort_ops`` once it is built;
* the metadata records the flavour; the named dynamic dimensions of every graph.

Models: a random RWKV-6 with the trained tiny model's shapes (2 layers), the tiny VisualRWKV with an RWKV-7 and a
Vision-RWKV (v1, Bi-WKV) tower, a tiny Vision-RWKV6 classifier (Bi-WKV6)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tests.helpers import TINY_MODELS, require_extra

require_extra("export")
import onnx  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

from vrwkv_edge.export import export_model, read_metadata  # noqa: E402
from vrwkv_edge.export.custom_nodes import (TRANSLATION_TABLE, check_custom_graph, custom_nodes,  # noqa: E402
                                            op_schema, reference_ops)
from vrwkv_edge.export.visual import export_vision_rwkv  # noqa: E402
from vrwkv_edge.loading import load_model  # noqa: E402
from vrwkv_edge.models import build_model  # noqa: E402
from vrwkv_edge.ops import custom_ops  # noqa: E402
from vrwkv_edge.ops.biwkv import bi_wkv6_ref, bi_wkv_official_ref, bi_wkv_ref  # noqa: E402
from vrwkv_edge.ops.custom_op_contract import (BIWKV, BIWKV6, DOMAIN, INPUTS, OP_VERSION, OUTPUTS,  # noqa: E402
                                               WKV6, WKV7)
from vrwkv_edge.ops.wkv6 import wkv6_ref, wkv6_step  # noqa: E402
from vrwkv_edge.ops.wkv7 import wkv7_ref, wkv7_step  # noqa: E402
from vrwkv_edge.vision_rwkv.backbone import build_vision_rwkv  # noqa: E402
from vrwkv_edge.visualrwkv.builders import tiny_vrwkv  # noqa: E402

pytestmark = [pytest.mark.usefixtures("quiet_torch"), pytest.mark.export]
TOL = 1e-4
LM_KINDS = ("decode", "prefill", "decode_embeds", "prefill_embeds")


# ---- the torch custom ops against the references ------------------------------------------------------------
def _wkv_inputs(version, B=2, T=5, H=2, N=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=g)                     # noqa: E731
    r, k, v = rnd(B, T, H, N), rnd(B, T, H, N), rnd(B, T, H, N)
    state = rnd(B, H, N, N)
    if version == "x060":
        w_log = -torch.exp(rnd(B, T, H, N))
        return (r, k, v, w_log, rnd(H, N), state)
    w_log = -0.6 * torch.sigmoid(rnd(B, T, H, N))
    kk = torch.nn.functional.normalize(rnd(B, T, H, N), dim=-1)
    return (r, w_log, k, v, -kk, kk * torch.rand(B, T, H, N, generator=g), state)


@pytest.mark.parametrize("T", [1, 5, 37])
def test_torch_ops_match_the_wkv_references(T):
    for version, op, ref, step, seq in (("x060", custom_ops.wkv6_op, wkv6_ref, wkv6_step, custom_ops.wkv6_step),
                                        ("x070", custom_ops.wkv7_op, wkv7_ref, wkv7_step, custom_ops.wkv7_step)):
        args = _wkv_inputs(version, T=T, seed=T)
        y, s = op(*args)
        y_ref, s_ref = ref(*args)
        assert y.dtype == s.dtype == torch.float32
        torch.testing.assert_close(y, y_ref, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(s, s_ref, atol=1e-4, rtol=1e-4)
        # the decode entry point (one token [B, H, N]) is the node with T = 1; fp16 inputs are cast exactly
        one = tuple(a[:, 0].half() if a.dim() == 4 and a.shape[1] == T else a for a in args)
        y1, s1 = seq(*one)
        y1_ref, s1_ref = step(*one)
        torch.testing.assert_close(y1, y1_ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(s1, s1_ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("T", [1, 7, 40])
def test_torch_bi_wkv_ops_match_the_references(T):
    g = torch.Generator().manual_seed(T)
    B, C, H, N = 2, 12, 3, 4
    w, u = torch.rand(C, generator=g) * 3 / T, torch.randn(C, generator=g) / T
    k, v = torch.randn(B, T, C, generator=g), torch.randn(B, T, C, generator=g)
    torch.testing.assert_close(custom_ops.biwkv_op(w, u, k, v, "official"), bi_wkv_official_ref(w, u, k, v),
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(custom_ops.biwkv_op(w, u, k, v, "formula"), bi_wkv_ref(w, u, k, v),
                               atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="semantics must be one of"):
        custom_ops.biwkv_op(w, u, k, v, "paper")
    r, k6, v6 = (torch.randn(B, T, H, N, generator=g) for _ in range(3))
    w_log, u6 = -torch.exp(torch.randn(B, T, H, N, generator=g)), torch.randn(H, N, generator=g)
    torch.testing.assert_close(custom_ops.biwkv6_op(r, k6, v6, w_log, u6), bi_wkv6_ref(r, k6, v6, w_log, u6),
                               atol=1e-4, rtol=1e-4)


def test_node_schemas_are_the_contract():
    for name in INPUTS:
        s = op_schema(name)
        assert (s.domain, s.since_version) == (DOMAIN, OP_VERSION)
        assert tuple(i.name for i in s.inputs) == INPUTS[name]
        assert tuple(o.name for o in s.outputs) == OUTPUTS[name]
        assert all(o.type_str == "tensor(float)" for o in s.outputs)
    assert set(op_schema(BIWKV).attributes) == {"semantics"} and not op_schema(WKV6).attributes
    assert len(TRANSLATION_TABLE) == len(INPUTS)


# ---- exports ---------------------------------------------------------------------------------------------------
def _rwkv6():
    """Random weights with the trained tiny RWKV-6's shapes (head size 8), 2 layers."""
    cfg = dataclasses.replace(load_model(TINY_MODELS["x060"][0]).cfg, n_layer=2)
    return build_model(cfg).init_random_(3).eval()


@pytest.fixture(scope="module")
def rwkv6(tmp_path_factory):
    model = _rwkv6()
    return model, export_model(model, tmp_path_factory.mktemp("custom") / "rwkv6", wkv="custom", progress=False)


@pytest.fixture(scope="module")
def visual(tmp_path_factory):
    model = tiny_vrwkv("x070", seed=5).eval()
    return model, export_model(model, tmp_path_factory.mktemp("custom") / "visual", wkv="custom",
                               embeds=False, progress=False)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    model = build_vision_rwkv("vrwkv6_t", embed_dims=64, depth=2, img_size=32, head_size=32, mix_lora=8,
                              decay_lora=8, num_classes=10, test_size=32).eval()
    with torch.no_grad():                          # non-trivial decay (the random init's LoRA is zero)
        for layer in model.backbone.layers:
            layer.att.time_decay_w1.normal_(0, 0.1)
    out = tmp_path_factory.mktemp("custom") / "vrwkv6.onnx"
    return model, export_vision_rwkv(model, out, wkv="custom")


def _load(path):
    return onnx.load(str(path))


class _Recorder:
    """The reference implementations of the nodes, recording the shape and element type of every input and
    output they see, so the test can hold them against the contract."""

    def __init__(self):
        self.seen = []
        rec = self

        def wrap(cls):
            class Recording(cls):
                def _run(self, *args, **kwargs):
                    out = super()._run(*args, **kwargs)
                    rec.seen.append((cls.__name__, [(a.shape, a.dtype) for a in args],
                                     [(o.shape, o.dtype) for o in out]))
                    return out
            Recording.__name__ = cls.__name__
            return Recording
        self.ops = [wrap(c) for c in reference_ops()]


def _run(proto, feeds, recorder=None):
    ops = (recorder or _Recorder()).ops
    return ReferenceEvaluator(proto, new_ops=ops).run(None, feeds)


def _state_feeds(proto, state):
    names = [i.name for i in proto.graph.input if i.name.startswith("past_key_values")]
    return {n: t.numpy() for n, t in zip(names, state.flat())}


def _check_contract(seen, H, N, C=None):
    """Every recorded node call has the contract's shapes: [B, T, H, N] tokens (or [B, T, C]), u [H, N],
    state [B, H, N, N], all float32 (this exporter feeds the nodes float32), outputs float32."""
    assert seen
    for name, ins, outs in seen:
        B, T = ins[0][0][:2] if name != BIWKV else ins[2][0][:2]
        for arg, (shape, dtype) in zip(INPUTS[name], ins):
            want = {"u": (H, N), "state_in": (B, H, N, N)}.get(arg, (B, T, H, N))
            if name == BIWKV:
                want = (C,) if arg in ("w", "u") else (B, T, C)
            assert shape == want and dtype == np.float32, (name, arg, shape, dtype)
        for arg, (shape, dtype) in zip(OUTPUTS[name], outs):
            want = (B, H, N, N) if arg == "state_out" else ins[0][0] if name != BIWKV else ins[2][0]
            assert shape == want and dtype == np.float32, (name, arg, shape, dtype)


def test_language_model_graphs_have_one_node_per_layer(rwkv6, visual):
    for model, d, kinds, op in ((rwkv6[0], rwkv6[1], LM_KINDS, WKV6),
                                (visual[0], visual[1], ("decode", "prefill", "image_prefill"), WKV7)):
        for kind in kinds:
            proto = _load(d / f"{kind}.onnx")
            assert check_custom_graph(proto, kind) == {op: model.cfg.n_layer}, kind
            assert {(o.domain, o.version) for o in proto.opset_import} >= {(DOMAIN, OP_VERSION), ("", 18)}
            # the standard chunked WKV (its Scan over chunks) is gone; the nodes hold no attributes
            assert not [n for n in proto.graph.node if n.op_type == "Scan"], kind
            assert all(not n.attribute and n.domain == DOMAIN for n in custom_nodes(proto))


def test_vision_graphs_have_one_bi_wkv_node_per_layer(visual, classifier):
    proto = _load(visual[1] / "vision.onnx")
    nodes = custom_nodes(proto)
    assert check_custom_graph(proto, "vision") == {BIWKV: 2}
    assert {onnx.helper.get_attribute_value(n.attribute[0]) for n in nodes} == {b"official"}
    proto = _load(classifier[1])
    assert check_custom_graph(proto, "classifier") == {BIWKV6: 2}
    assert (DOMAIN, OP_VERSION) in {(o.domain, o.version) for o in proto.opset_import}


def test_formula_semantics_reach_the_node(tmp_path):
    model = build_vision_rwkv("vrwkv_t", embed_dims=32, depth=1, img_size=32, num_classes=5, test_size=32)
    model.set_wkv_impl("formula")
    proto = _load(export_vision_rwkv(model, tmp_path / "f.onnx", wkv="custom"))
    (node,) = custom_nodes(proto)
    assert node.op_type == BIWKV and onnx.helper.get_attribute_value(node.attribute[0]) == b"formula"
    x = torch.randn(1, 3, 32, 32)
    (got,) = _run(proto, {"pixel_values": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(got), model(x).detach(), atol=TOL, rtol=0)


def test_rwkv6_graphs_match_pytorch(rwkv6):
    model, d = rwkv6
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, model.cfg.vocab_size, (2, 21), generator=g)
    st0 = model.forward(torch.randint(0, 256, (2, 3), generator=g), None)[1]        # a non-zero state
    H, N = model.cfg.n_head, model.cfg.head_size
    for kind, feed, (ref_logits, ref_state) in (
            ("prefill", {"input_ids": ids.numpy()}, model.forward(ids, st0, last_only=True)),
            ("decode", {"input_ids": ids[:, 0].numpy()}, model.step(ids[:, 0], st0)),
            ("prefill_embeds", {"inputs_embeds": model.emb(ids).numpy()}, model.forward(ids, st0, last_only=True)),
            ("decode_embeds", {"inputs_embeds": model.emb(ids[:, 0]).numpy()}, model.step(ids[:, 0], st0))):
        proto = _load(d / f"{kind}.onnx")
        rec = _Recorder()
        out = _run(proto, {**feed, **_state_feeds(proto, st0)}, rec)
        torch.testing.assert_close(torch.from_numpy(out[0]), ref_logits, atol=TOL, rtol=0)
        for got, want in zip(out[1:], ref_state.flat()):
            torch.testing.assert_close(torch.from_numpy(got), want, atol=TOL, rtol=0)
        _check_contract(rec.seen, H, N)
    assert read_metadata(d)["wkv"] == {"flavour": "custom", "domain": DOMAIN, "op_version": OP_VERSION}


def test_visual_graphs_match_pytorch(visual):
    """The RWKV-7 language-model graphs, the image scan and the Vision-RWKV tower of a VisualRWKV."""
    model, d = visual
    lm = model.rwkv
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, 1000, (1, 19), generator=g)
    st0 = lm.forward(ids[:, :4], None)[1]
    H, N = lm.cfg.n_head, lm.cfg.head_size
    for kind, feed, (ref_logits, ref_state) in (
            ("prefill", {"input_ids": ids.numpy()}, lm.forward(ids, st0, last_only=True)),
            ("decode", {"input_ids": ids[:, 0].numpy()}, lm.step(ids[:, 0], st0))):
        proto = _load(d / f"{kind}.onnx")
        rec = _Recorder()
        out = _run(proto, {**feed, **_state_feeds(proto, st0)}, rec)
        torch.testing.assert_close(torch.from_numpy(out[0]), ref_logits, atol=TOL, rtol=0)
        for got, want in zip(out[1:], ref_state.flat()):
            torch.testing.assert_close(torch.from_numpy(got), want, atol=TOL, rtol=0)
        _check_contract(rec.seen, H, N)
    # vision: pixels -> image embeddings through the tower's BiWKV nodes
    pixels = torch.randn(2, 3, 64, 64, generator=g)
    rec = _Recorder()
    (emb,) = _run(_load(d / "vision.onnx"), {"pixel_values": pixels.numpy()}, rec)
    from vrwkv_edge.visualrwkv.model import project, tower_features
    ref_emb = project(model.proj, tower_features(model.vit, model.vcfg, pixels))
    torch.testing.assert_close(torch.from_numpy(emb), ref_emb, atol=TOL, rtol=0)
    _check_contract(rec.seen, None, None, C=model.vit.config.embed_dims)
    # image_prefill: the per-layer image scan around the same nodes
    from vrwkv_edge.visualrwkv.scan import scan_prefill
    emb_t = torch.from_numpy(emb[:1])
    hidden, ref_st = scan_prefill(lm, emb_t, st0.clone(), [model.image_span(0)], model.vcfg.scan)
    proto = _load(d / "image_prefill.onnx")
    out = _run(proto, {"image_embeds": emb[:1], **_state_feeds(proto, st0)})
    torch.testing.assert_close(torch.from_numpy(out[0]), lm.logits(hidden[:, -1]), atol=TOL, rtol=0)
    for got, want in zip(out[1:], ref_st.flat()):
        torch.testing.assert_close(torch.from_numpy(got), want, atol=TOL, rtol=0)


def test_classifier_matches_pytorch(classifier):
    model, path = classifier
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    rec = _Recorder()
    (got,) = _run(_load(path), {"pixel_values": x.numpy()}, rec)
    torch.testing.assert_close(torch.from_numpy(got), model(x), atol=TOL, rtol=0)
    _check_contract(rec.seen, 2, 32)


def test_fp16_graph_feeds_the_node_float32_and_casts_after():
    """An fp16 decode graph: the node's inputs are float32 (fp16 activations cast exactly in front of it), its
    outputs float32, and the graph computes what the fp16-prepared PyTorch model computes."""
    from vrwkv_edge.export.graphs import assemble_graph, prepare_model

    model = _rwkv6()
    p16 = prepare_model(model, "fp16").set_wkv_impl("custom")
    proto, inits = assemble_graph(p16, "decode")
    proto.graph.initializer.extend(inits)
    assert check_custom_graph(proto, "decode-fp16") == {WKV6: model.cfg.n_layer}
    ids = torch.tensor([5, 200])
    st0 = model.forward(torch.tensor([[1, 2, 3], [4, 5, 6]]), None)[1]
    rec = _Recorder()
    out = _run(proto, {"input_ids": ids.numpy(), **_state_feeds(proto, st0)}, rec)
    _check_contract(rec.seen, model.cfg.n_head, model.cfg.head_size)          # float32 in and out
    ref_logits, ref_state = p16.step(ids, st0)
    torch.testing.assert_close(torch.from_numpy(out[0]), ref_logits.float(), atol=2e-2, rtol=0)
    for got, want in zip(out[1:], ref_state.flat()):
        torch.testing.assert_close(torch.from_numpy(got), want.float(), atol=2e-2, rtol=0)


# ---- ONNX Runtime with the op library (csrc/ort_ops), once it exists ----------------------------------------
def _ort_library_or_skip():
    """The op library when it is built; a skip naming the build command when it is not.  Anything else that goes
    wrong once it exists (a version mismatch, a kernel error) fails the test."""
    from vrwkv_edge.runtime import custom_ops as loader
    try:
        return loader.library_path()
    except loader.CustomOpsError as e:
        pytest.skip(str(e))


def test_onnx_runtime_runs_the_custom_graphs_like_pytorch(rwkv6, visual):
    _ort_library_or_skip()
    from vrwkv_edge.export import load_onnx_model
    for model, d in (rwkv6, visual):
        om = load_onnx_model(d, spinning=False, threads=1)
        lm = model.rwkv if hasattr(model, "rwkv") else model
        ids = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(6))
        ref, rst = lm.forward(ids, None, last_only=True)
        got, gst = om.forward(ids, None, last_only=True)
        torch.testing.assert_close(got, ref, atol=TOL, rtol=0)
        ref, _ = lm.step(ids[:, 0], rst)
        got, _ = om.step(ids[:, 0], gst)
        torch.testing.assert_close(got, ref, atol=TOL, rtol=0)
        if hasattr(model, "vcfg"):                     # the tower's BiWKV nodes in ONNX Runtime
            pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(7))
            from vrwkv_edge.visualrwkv.model import project, tower_features
            ref = project(model.proj, tower_features(model.vit, model.vcfg, pixels))
            got = om._session("vision").run(None, {"pixel_values": pixels.numpy()})[0]
            torch.testing.assert_close(torch.from_numpy(got), ref, atol=TOL, rtol=0)


# ---- int4 with the custom flavour ------------------------------------------------------------------------------
def test_int4_with_custom_wkv(rwkv6, tmp_path):
    """int4 quantizes the weight matmuls and leaves the vrwkv nodes (and the decay LoRA) alone; the block
    templates are those of the fp32 custom export (cached), so this costs the quantization only."""
    model, _ = rwkv6
    d = export_model(model, tmp_path / "int4", quantize="int4", wkv="custom", embeds=False, progress=False)
    meta = read_metadata(d)
    assert meta["quantize"] == "int4" and meta["wkv"]["flavour"] == "custom"
    for kind in ("decode", "prefill"):
        proto = _load(d / f"{kind}.onnx")
        assert check_custom_graph(proto, kind) == {WKV6: model.cfg.n_layer}
        nbits = [n for n in proto.graph.node if n.op_type == "MatMulNBits"]
        # per layer: r, k, v, gate, output, ffn key/receptance/value = 8, plus the head
        assert len(nbits) == 8 * model.cfg.n_layer + 1
        kept = {n.input[1] for n in proto.graph.node if n.op_type == "MatMul"} & \
            {t.name for t in proto.graph.initializer}
        assert kept and all(".time_" in w for w in kept), kept          # the LoRA matrices stay fp32 MatMuls
    try:
        _ort_library_or_skip()
    except pytest.skip.Exception:
        return
    from vrwkv_edge.export import load_onnx_model, validate
    report = validate(d, model, n_tokens=32, verbose=False,
                      ort_model=load_onnx_model(d, spinning=False, threads=1))
    assert report.finite and report.precision == "int4" and report.max_abs_diff <= report.tolerance, \
        report.summary()


# ---- named dynamic dimensions (issue #13: the classifier's batch was "s81") ---------------------------------
def test_every_graph_names_its_dynamic_dimensions(rwkv6, visual, classifier):
    from tests.export.dims import check_named_dims, io_dims

    for d, kinds in ((rwkv6[1], LM_KINDS), (visual[1], ("decode", "prefill", "vision", "image_prefill"))):
        meta = read_metadata(d)
        for kind in kinds:
            proto = _load(d / f"{kind}.onnx")
            names = check_named_dims(proto, kind)
            assert names == ({"batch", "seq"} if kind.startswith("prefill") else {"batch"}), (kind, names)
            spec = {t["name"]: t["shape"] for t in meta["graphs"][kind]["inputs"] + meta["graphs"][kind]["outputs"]}
            assert io_dims(proto) == spec, kind                  # exactly what metadata.json promises
    proto = _load(classifier[1])
    assert check_named_dims(proto, "classifier") == {"batch"}
    assert io_dims(proto) == {"pixel_values": ["batch", 3, 32, 32], "logits": ["batch", 10]}
