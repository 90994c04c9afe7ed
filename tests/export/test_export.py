"""ONNX export: graph structure, PyTorch vs ONNX Runtime (fp32, fp16, int8), prefill vs decode, the backend API.

Models: seeded random RWKV-6/7 and the two trained tiny models of rwkv.cpp's test data.  The random models
share the per-layer shapes of the trained ones (fewer layers): the exporter traces one template per layer kind
with the weights as inputs, and the templates are cached per shape, so sharing shapes keeps this file fast.
The RWKV-6 random model uses the ``rwkv6-tiny`` preset instead (head size 64, as released models have).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tests.helpers import require_extra  # noqa: E402

require_extra("export")
import onnx  # noqa: E402

from tests.helpers import TINY  # noqa: E402
from vrwkv_edge.config import preset  # noqa: E402
from vrwkv_edge.export import OrtModel, export_model, load_onnx_model, validate  # noqa: E402
from vrwkv_edge.export.graphs import prepare_model  # noqa: E402
from vrwkv_edge.loading import load_model  # noqa: E402
from vrwkv_edge.models import build_model  # noqa: E402
from vrwkv_edge.state import State  # noqa: E402

TESTDATA = TINY / "derived"
CKPT = {"v6-trained": TESTDATA / "tiny-rwkv-6v0-1m-FP32.pth", "v7-trained": TESTDATA / "tiny-rwkv-7v0-834K-FP32.pth"}
MODEL_NAMES = ["v7-random", "v6-random", "v7-trained", "v6-trained"]
TOL = 1e-4


pytestmark = [pytest.mark.usefixtures("quiet_torch"), pytest.mark.export]      # one thread, no autograd (conftest)


def _make_model(name: str):
    if name.endswith("trained"):
        if not CKPT[name].exists():
            pytest.fail(f"test data missing (../shared/testdata must sit beside the repository): {CKPT[name]}")
        return load_model(CKPT[name])
    if name == "v6-random":
        return build_model(preset("rwkv6-tiny")).init_random_(1)
    # RWKV-7 random: the trained tiny model's shapes, 3 layers
    if not CKPT["v7-trained"].exists():
        return build_model(preset("rwkv7-tiny")).init_random_(1)
    cfg = dataclasses.replace(load_model(CKPT["v7-trained"]).cfg, n_layer=3)
    return build_model(cfg).init_random_(1)


@pytest.fixture(scope="module")
def models():
    return {}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, models):
    """name -> (model, export dir); exported once per module, on first use."""
    cache = {}
    root = tmp_path_factory.mktemp("exports")

    def get(name: str):
        if name not in cache:
            model = models.setdefault(name, _make_model(name))
            # the random presets' 1024-row vocabularies are neither bytes nor World: name the byte tokenizer
            d = export_model(model, root / name, embeds=(name == "v7-random"), progress=False, tokenizer="bytes")
            cache[name] = (model, d)
        return cache[name]
    return get


@pytest.fixture(scope="module")
def ort_models():
    return {}


def _ort(exported, ort_models, name: str) -> tuple:
    model, d = exported(name)
    if name not in ort_models:
        ort_models[name] = load_onnx_model(d, threads=1, spinning=False)
    return model, ort_models[name]


def _max_state_diff(a: State, b: State) -> float:
    return max((x.float() - y.float()).abs().max().item() for x, y in zip(a.flat(), b.flat()))


# ---- acceptance 1: fp32 equivalence ----------------------------------------------------------------------
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_fp32_decode_matches_pytorch_256_tokens(exported, ort_models, name):
    model, om = _ort(exported, ort_models, name)
    report = validate(om.path, model, n_tokens=256, verbose=False, ort_model=om)
    assert report.finite
    assert report.max_abs_diff <= TOL, report.summary()
    assert report.greedy_agreement == 1.0, report.summary()
    assert report.n_tokens == 256 and report.passed


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_fp32_prefill_equals_repeated_decode(exported, ort_models, name):
    model, om = _ort(exported, ort_models, name)
    g = torch.Generator().manual_seed(5)
    V = om.cfg.vocab_size
    # a non-zero starting state: run a few tokens first
    _, start = om.forward(torch.randint(0, V, (2, 3), generator=g), om.new_state(2), last_only=True)
    for T in (1, 16, 37):
        ids = torch.randint(0, V, (2, T), generator=g)
        lp, sp = om.forward(ids, start, last_only=True)                    # prefill graph
        sd = start
        for t in range(T):                                                  # decode graph, token by token
            ld, sd = om.step(ids[:, t], sd)
        assert (lp - ld).abs().max().item() <= TOL, f"T={T}"
        assert _max_state_diff(sp, sd) <= TOL * max(1.0, max(t.abs().max().item() for t in sd.flat())), f"T={T}"
        lt, stt = model.forward(ids, start, last_only=True)                 # and PyTorch's chunked forward
        assert (lp - lt).abs().max().item() <= TOL
        assert _max_state_diff(sp, stt) <= TOL * max(1.0, max(t.abs().max().item() for t in stt.flat()))


def test_dynamic_batch_rows_are_independent(exported, ort_models):
    model, om = _ort(exported, ort_models, "v7-random")
    g = torch.Generator().manual_seed(6)
    ids = torch.randint(0, om.cfg.vocab_size, (3, 9), generator=g)
    logits, st = om.forward(ids, None, last_only=True)
    for b in range(3):
        l1, s1 = om.forward(ids[b:b + 1], None, last_only=True)
        assert (logits[b:b + 1] - l1).abs().max().item() <= TOL
        assert _max_state_diff(st.select(b), s1) <= TOL
    step_ids = torch.tensor([1, 2, 3])
    lo, so = om.step(step_ids, st)
    lt, stt = model.step(step_ids, st)
    assert lo.shape == (3, om.cfg.vocab_size) and lo.dtype == torch.float32
    assert (lo - lt).abs().max().item() <= TOL


def test_forward_per_token_logits_and_blocks(exported, ort_models):
    model, om = _ort(exported, ort_models, "v7-random")
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, om.cfg.vocab_size, (2, 11), generator=g)
    lt, st_t = model.forward(ids, None)
    lo, st_o = om.forward(ids, None)                       # last_only=False: stepping the decode graph
    assert lo.shape == lt.shape == (2, 11, om.cfg.vocab_size)
    assert (lo - lt).abs().max().item() <= TOL
    small = OrtModel(om.path, threads=1, max_prefill_tokens=4, spinning=False)   # prompt fed in blocks of 4
    lb, sb = small.forward(ids, None, last_only=True)
    assert (lb - lt[:, -1]).abs().max().item() <= TOL
    assert _max_state_diff(sb, st_t) <= TOL
    with pytest.raises(ValueError, match="chunk_size"):
        om.forward(ids, None, last_only=True, chunk_size=8)


def test_inputs_embeds_graphs(exported, ort_models):
    model, om = _ort(exported, ort_models, "v7-random")
    g = torch.Generator().manual_seed(8)
    C = om.cfg.n_embd
    emb = 0.1 * torch.randn(2, 19, C, generator=g)
    lt, st_t = model.forward(None, None, inputs_embeds=emb, last_only=True)
    lo, st_o = om.forward(None, None, inputs_embeds=emb, last_only=True)
    assert (lo - lt).abs().max().item() <= TOL and _max_state_diff(st_o, st_t) <= TOL
    lt, st_t = model.step(None, st_t, inputs_embeds=emb[:, 0])
    lo, st_o = om.step(None, st_o, inputs_embeds=emb[:, 0])
    assert (lo - lt).abs().max().item() <= TOL and _max_state_diff(st_o, st_t) <= TOL
    # ids and embeddings mix in one state: the embedding of an id is the ids path
    ids = torch.tensor([[5, 6]])
    l_ids, _ = om.forward(ids, None, last_only=True)
    l_emb, _ = om.forward(None, None, inputs_embeds=model.emb(ids).detach(), last_only=True)
    assert (l_ids - l_emb).abs().max().item() <= TOL
    with pytest.raises(ValueError, match="exactly one"):
        om.step(ids[:, 0], None, inputs_embeds=emb[:1, 0])


def test_io_binding_cpu_path(exported, ort_models):
    model, om = _ort(exported, ort_models, "v7-random")
    bound = OrtModel(om.path, io_binding=True, threads=1, spinning=False)
    assert bound.io_binding and bound.info()["io_binding"]
    g = torch.Generator().manual_seed(9)
    ids = torch.randint(0, om.cfg.vocab_size, (2, 21), generator=g)
    la, sa = om.forward(ids, None, last_only=True)
    lb, sb = bound.forward(ids, None, last_only=True)
    assert torch.equal(la, lb) and _max_state_diff(sa, sb) == 0.0
    state_before = [t.clone() for t in sb.flat()]
    for tok in (3, 4, 5):
        la, sa = om.step(torch.tensor([tok, tok]), sa)
        lb, sb2 = bound.step(torch.tensor([tok, tok]), sb)
        assert torch.equal(la, lb) and _max_state_diff(sa, sb2) == 0.0
        # the state handed in is never written to (immutable State semantics)
        assert all(torch.equal(x, y) for x, y in zip(state_before, sb.flat()))
        sb, state_before = sb2, [t.clone() for t in sb2.flat()]


def test_backend_api_and_info(exported, ort_models):
    model, om = _ort(exported, ort_models, "v6-random")
    assert om.version == model.version == "x060"
    assert om.cfg == model.cfg
    st = om.new_state(3)
    assert isinstance(st, State) and st.batch_size == 3 and all(t.dtype == torch.float32 for t in st.flat())
    info = om.info()
    for key in ("version", "n_layer", "dtype", "providers", "opset", "graphs", "exporter_version"):
        assert key in info
    assert info["providers"][0] == "CPUExecutionProvider" and info["dtype"] == "fp32"
    assert load_onnx_model(om.path, providers=["cpu"]).providers == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="not available"):
        load_onnx_model(om.path, providers=["NoSuchExecutionProvider"])
    with pytest.raises(ValueError, match=r"\[0, "):
        om.step(torch.tensor([om.cfg.vocab_size]), None)
    with pytest.raises(ValueError, match="ids"):
        om.step(torch.tensor([[1, 2]]), None)


def test_state_mismatch_is_refused_with_the_tensor_named(exported, ort_models):
    model, om = _ort(exported, ort_models, "v6-random")
    c = om.cfg
    ids = torch.tensor([1])
    good = om.new_state(1)
    short = State.from_flat(good.flat()[:-3])
    with pytest.raises(ValueError, match=f"{c.n_layer - 1} layers"):
        om.step(ids, short)
    flat = good.flat()
    flat[4] = torch.zeros(1, c.n_head, c.head_size, c.head_size + 1)
    with pytest.raises(ValueError, match=r"past_key_values\.1\.wkv: shape"):
        om.step(ids, State.from_flat(flat))
    flat = good.flat()
    flat[0] = flat[0].half()
    with pytest.raises(ValueError, match=r"past_key_values\.0\.shift_att: dtype torch.float16"):
        om.step(ids, State.from_flat(flat))
    with pytest.raises(ValueError, match="batch size"):
        om.step(torch.tensor([1, 2]), good)
    with pytest.raises(TypeError):
        om.step(ids, good.flat())


# ---- the graphs themselves -------------------------------------------------------------------------------
def test_graph_structure_and_metadata(exported):
    model, d = exported("v7-random")
    c = model.cfg
    for kind in ("decode", "prefill", "decode_embeds", "prefill_embeds"):
        path = d / f"{kind}.onnx"
        onnx.checker.check_model(str(path), full_check=True)
        m = onnx.load(str(path))
        assert m.ir_version <= 10
        assert {o.domain for o in m.opset_import} <= {"", "ai.onnx"}
        assert [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")] == [18]
        assert not m.functions
        assert all(n.domain in ("", "ai.onnx") for n in m.graph.node)
        names_in = [i.name for i in m.graph.input]
        names_out = [o.name for o in m.graph.output]
        assert names_in[1:] == State.io_names(c.n_layer, "past_key_values")
        assert names_out == ["logits"] + State.io_names(c.n_layer, "present")
        assert names_in[0] == ("inputs_embeds" if kind.endswith("embeds") else "input_ids")
        dims = [d_.dim_param or d_.dim_value for d_ in m.graph.input[0].type.tensor_type.shape.dim]
        assert dims[0] == "batch" and (dims[1] == "seq" if kind.startswith("prefill") else True)
        for v in list(m.graph.input)[1:] + list(m.graph.output):
            assert v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        props = {p.key: p.value for p in m.metadata_props}
        assert props["vrwkv_edge.graph"] == kind and '"format": "vrwkv_edge.onnx"' in props["vrwkv_edge.metadata"]
        ops = {n.op_type for n in m.graph.node}
        assert ("Scan" in ops) == kind.startswith("prefill")       # the chunk recurrence of the prefill graph
    import json
    meta = json.loads((d / "metadata.json").read_text())
    assert meta["model"]["version"] == "x070" and meta["model"]["n_layer"] == c.n_layer
    assert meta["state"]["inputs"] == State.io_names(c.n_layer) and meta["opset"] == 18
    assert meta["tokenizer"] == {"kind": "bytes", "file": None} and meta["prompt_template"] == "raw"
    assert meta["scan_mode"] == "chunked-scan" and meta["chunk_size"] == 16
    import vrwkv_edge
    assert meta["exporter_version"] == vrwkv_edge.__version__ and meta["dtype"] == "fp32"
    assert not any(p.name.startswith(".") for p in d.parent.iterdir()), "temporary directories left behind"


# ---- acceptance 2 (short version): fp16 ------------------------------------------------------------------
def test_fp16_no_nan_and_top1_agreement(tmp_path, exported):
    model, _ = exported("v7-trained")
    d = export_model(model, tmp_path / "fp16", dtype="fp16", embeds=False, progress=False)
    m = onnx.load(str(d / "decode.onnx"))
    inits = {t.name: t for t in m.graph.initializer}
    assert inits["head.weight"].data_type == onnx.TensorProto.FLOAT16
    assert inits["blocks.1.att.key.weight"].data_type == onnx.TensorProto.FLOAT16
    assert inits["blocks.1.att.w0"].data_type == onnx.TensorProto.FLOAT           # decay parameters stay fp32
    for n in m.graph.node:                                                          # every LayerNorm in fp32
        if n.op_type == "LayerNormalization" and n.input[1] in inits:
            assert inits[n.input[1]].data_type == onnx.TensorProto.FLOAT
    om = load_onnx_model(d, threads=1, spinning=False)
    assert om.info()["dtype"] == "fp16"
    B, steps = 4, 160                                       # 640 decode steps (4 sequences of 160)
    g = torch.Generator().manual_seed(11)
    ids = torch.randint(0, om.cfg.vocab_size, (B, 8), generator=g)
    l16, s16 = om.forward(ids, None, last_only=True)
    l32, s32 = model.forward(ids, None, last_only=True)
    agree, total = 0, 0
    for _ in range(steps):
        assert torch.isfinite(l16).all() and all(torch.isfinite(t).all() for t in s16.flat())
        agree += (l16.argmax(-1) == l32.argmax(-1)).sum().item()
        total += B
        tok = torch.multinomial(torch.softmax(l32, -1), 1, generator=g)[:, 0]   # a diverse, shared stream
        l16, s16 = om.step(tok, s16)
        l32, s32 = model.step(tok, s32)
        assert all(t.dtype == torch.float32 for t in s16.flat())
    assert agree / total >= 0.99, f"fp16 top-1 agreement {agree / total:.4f}"
    # and fp16 ORT tracks the fp16 PyTorch graph module closely
    pm = prepare_model(model, "fp16")
    lp, _ = pm.forward(ids, None, last_only=True)
    lo, _ = om.forward(ids, None, last_only=True)
    assert (lp - lo).abs().max().item() < 2e-2


# ---- int8 ------------------------------------------------------------------------------------------------
def test_int8_quantized_export(tmp_path, exported):
    model, d32 = exported("v7-trained")
    d = export_model(model, tmp_path / "int8", quantize="int8", embeds=False, progress=False)
    m = onnx.load(str(d / "decode.onnx"))
    ops = {n.op_type for n in m.graph.node}
    assert "MatMulInteger" in ops and "DynamicQuantizeLinear" in ops
    inits = {t.name: t for t in m.graph.initializer}
    # linear layers and head int8; the small LoRA matrices (here the decay LoRA) stay fp32
    assert inits["head.weight_quantized"].data_type == onnx.TensorProto.INT8
    assert inits["blocks.1.att.key.weight_quantized"].data_type == onnx.TensorProto.INT8
    assert inits["blocks.1.att.w1"].data_type == onnx.TensorProto.FLOAT
    assert (d / "decode.onnx").stat().st_size < 0.8 * (d32 / "decode.onnx").stat().st_size
    om = load_onnx_model(d, threads=1, spinning=False)
    assert om.info()["quantize"] == "int8"
    report = validate(d, model, n_tokens=64, verbose=False, ort_model=om)
    assert report.finite and report.passed, report.summary()
    assert report.greedy_agreement >= 0.9
    with pytest.raises(ValueError, match="fp32"):
        export_model(model, tmp_path / "bad", dtype="fp16", quantize="int8", progress=False)


# ---- int4 ------------------------------------------------------------------------------------------------
def test_int4_quantized_export(tmp_path, exported):
    """4-bit block-wise weight-only MatMulNBits on the same weights as int8 (the fp32 export's block templates
    are cached, so this costs the quantization); the validation passes at the int4 default criteria."""
    from vrwkv_edge.export.artefact import INT4_ACCURACY_LEVEL, INT4_BLOCK_SIZE
    from vrwkv_edge.export.validation import DEFAULT_CRITERIA

    model, d32 = exported("v7-trained")
    d = export_model(model, tmp_path / "int4", quantize="int4", embeds=False, progress=False)
    for kind in ("decode", "prefill"):
        m = onnx.load(str(d / f"{kind}.onnx"))
        nbits = [n for n in m.graph.node if n.op_type == "MatMulNBits"]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in nbits[0].attribute}
        assert attrs["bits"] == 4 and attrs["block_size"] == INT4_BLOCK_SIZE
        assert attrs["accuracy_level"] == INT4_ACCURACY_LEVEL
        quantized = {n.input[1].rsplit("_Q4", 1)[0] for n in nbits}
        # per layer r, k, v, output, ffn key and value (RWKV-7's ffn has no receptance), and the head
        assert len(nbits) == 6 * model.cfg.n_layer + 1 and {"head.weight", "blocks.1.att.key.weight"} <= quantized
        inits = {t.name: t for t in m.graph.initializer}
        assert inits["blocks.1.att.w1"].data_type == onnx.TensorProto.FLOAT           # decay LoRA stays fp32
        assert ("com.microsoft", 1) in {(o.domain, o.version) for o in m.opset_import} and m.ir_version <= 10
    assert (d / "decode.onnx").stat().st_size < 0.5 * (d32 / "decode.onnx").stat().st_size
    om = load_onnx_model(d, threads=1, spinning=False)
    meta = om.metadata
    assert meta["quantize"] == "int4" and meta["quantization"]["block_size"] == INT4_BLOCK_SIZE
    assert meta["precision"]["weights"] == "int4" and meta["precision"]["state"] == "float32"
    report = validate(d, model, n_tokens=64, verbose=False, ort_model=om)
    assert report.precision == "int4" and (report.tolerance, report.min_agreement) == DEFAULT_CRITERIA["int4"]
    assert report.finite and report.passed, report.summary()
    with pytest.raises(ValueError, match="fp32"):
        export_model(model, tmp_path / "bad", dtype="fp16", quantize="int4", progress=False)


def test_export_from_checkpoint_path_records_source(tmp_path, exported):
    exported("v6-trained")                                          # templates already traced
    d = export_model(str(CKPT["v6-trained"]), tmp_path / "from-path", embeds=False, progress=False)
    om = load_onnx_model(d, threads=1)
    assert om.metadata["model"]["source"] == CKPT["v6-trained"].name
    assert om.metadata["model"]["parameters"] == load_model(CKPT["v6-trained"]).num_parameters()
    ids = torch.tensor([[1, 2, 3]])
    l1, _ = om.forward(ids, None, last_only=True)
    l2, _ = exported("v6-trained")[0].forward(ids, None, last_only=True)
    assert np.abs((l1 - l2).detach().numpy()).max() <= TOL


# ---- the WKV as exported ----------------------------------------------------------------------------------
def test_chunk_loop_as_torch_scan_equals_python_loop(monkeypatch):
    """The exported graphs' WKV is the ops' chunked WKV with its chunk loop as ``torch.scan`` (taken while
    torch.export traces): run eagerly in that form it gives the Python loop's numbers, and both equal the
    per-token reference (-inf decays too)."""
    from vrwkv_edge.ops.wkv6 import wkv6_chunked, wkv6_ref
    from vrwkv_edge.ops.wkv7 import wkv7_chunked, wkv7_ref

    g = torch.Generator().manual_seed(12)
    B, T, H, N = 2, 37, 2, 8
    r, k, v = (torch.randn(B, T, H, N, generator=g) for _ in range(3))
    w6 = -torch.exp(torch.randn(B, T, H, N, generator=g))
    w6[0, 5, 1, 3] = -float("inf")                                   # full forgetting is allowed in RWKV-6
    u = torch.randn(H, N, generator=g)
    s = torch.randn(B, H, N, N, generator=g)
    w7 = -0.6 * torch.rand(B, T, H, N, generator=g)
    kk = torch.nn.functional.normalize(torch.randn(B, T, H, N, generator=g), dim=-1)
    a, b = -kk, kk * torch.rand(B, T, H, N, generator=g)
    loop6, loop7 = wkv6_chunked(r, k, v, w6, u, s), wkv7_chunked(r, w7, k, v, a, b, s)
    with monkeypatch.context() as m:
        m.setattr(torch.compiler, "is_exporting", lambda: True)
        scan6, scan7 = wkv6_chunked(r, k, v, w6, u, s), wkv7_chunked(r, w7, k, v, a, b, s)
    for got, want, ref in ((scan6, loop6, wkv6_ref(r, k, v, w6, u, s)), (scan7, loop7, wkv7_ref(r, w7, k, v, a, b, s))):
        for x, y, z in zip(got, want, ref):
            assert torch.allclose(x, y, atol=1e-6) and torch.allclose(x, z, atol=1e-4)
