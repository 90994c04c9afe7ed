"""Export acceptance 4: VisualRWKV (every tower family) and Vision-RWKV graphs match PyTorch in fp32, including
the per-layer image scan (v6.0's bidirectional, the multidirectional scan with RWKV-7's v_first); the ORT
backend answers image questions like the PyTorch model; broken visual artefacts fail clearly."""
from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
import torch

from vrwkv_edge.export import ArtefactError, OrtVisualModel, export_model, load_onnx_model  # noqa: E402
from vrwkv_edge.export.visual import export_vision_rwkv  # noqa: E402
from vrwkv_edge.tokenizer import load_tokenizer  # noqa: E402
from vrwkv_edge.vision_rwkv.backbone import build_vision_rwkv  # noqa: E402
from vrwkv_edge.visualrwkv import ChatSession, answer, question_prompt  # noqa: E402
from vrwkv_edge.visualrwkv.builders import tiny_v6, tiny_v7, tiny_vrwkv  # noqa: E402
from vrwkv_edge.visualrwkv.runtime import eval_params  # noqa: E402
from vrwkv_edge.visualrwkv.towers import init_tower_random_  # noqa: E402

pytestmark = [pytest.mark.usefixtures("quiet_torch"), pytest.mark.export, pytest.mark.vision]
TOL = 1e-4


def _image(seed: int, h: int = 45, w: int = 61) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


MODELS = {
    "v6-clip-bidirectional": lambda: tiny_v6(seed=21),
    "v7-sam_dino_siglip": lambda: tiny_v7(seed=22),
    "x070-vrwkv-multidirectional": lambda: tiny_vrwkv("x070", seed=23, scan="multidirectional"),
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def exported(request, tmp_path_factory):
    torch.set_grad_enabled(False)
    model = MODELS[request.param]()
    out = export_model(model, tmp_path_factory.mktemp("visual") / request.param, embeds=False, progress=False)
    return model, out


def test_vision_graph_matches_pytorch(exported):
    model, out = exported
    om = load_onnx_model(out)
    assert isinstance(om, OrtVisualModel) and om.vcfg == model.vcfg
    images = [_image(1), _image(2, 80, 30), _image(3)]                        # dynamic batch of 3
    ref = model.encode_images(images)
    got = om.encode_images(images)
    assert got.shape == ref.shape == (3, model.tokens_per_image, model.cfg.n_embd)
    torch.testing.assert_close(got, ref, atol=TOL, rtol=0)


def test_image_prefill_graph_matches_pytorch(exported):
    """From a non-zero state (text before the image), the image_prefill graph gives the PyTorch logits and
    state, and the whole prompt equals the training-style full-sequence forward."""
    model, out = exported
    om = load_onnx_model(out)
    prompt = [[24281, 59, 33, 11], _image(4), [11, 24326, 4600, 261, 5585, 41693, 59]]
    ref_logits, ref_state = model.prefill(prompt)
    logits, state = om.prefill(prompt)
    torch.testing.assert_close(logits, ref_logits, atol=TOL, rtol=0)
    for name, a, b in zip(state.io_names(state.n_layer, "present"), state.flat(), ref_state.flat()):
        assert float((a - b).abs().max()) <= TOL, name
    training = model.reference_logits(prompt)[-1:]
    torch.testing.assert_close(logits, training, atol=TOL, rtol=0)
    # the graph itself, with a batch of 2 different images from different states
    emb = model.encode_images([_image(5), _image(6)])
    st = model.rwkv.forward(torch.tensor([[5, 6, 7], [8, 9, 10]]), None)[1]
    from vrwkv_edge.visualrwkv.scan import scan_prefill
    hidden, ref_st = scan_prefill(model.rwkv, emb, st.clone(), [model.image_span(0)], model.vcfg.scan)
    lg, st2 = om._run("image_prefill", emb, st)
    torch.testing.assert_close(lg, model.rwkv.logits(hidden[:, -1]), atol=TOL, rtol=0)
    for a, b in zip(st2.flat(), ref_st.flat()):
        torch.testing.assert_close(a, b, atol=TOL, rtol=0)


def test_answers_and_chat_match(exported):
    model, out = exported
    om = load_onnx_model(out)
    tok = load_tokenizer()
    n = 2 if model.visual_version == "v7" else 1
    p = question_prompt(tok, "What is in the picture?", model.visual_version, num_images=n)
    items = p.with_images([_image(7 + i) for i in range(n)])
    params = eval_params(max_new_tokens=8)
    a = answer(model, tok, items, params)
    b = answer(om, tok, items, params)
    assert a.tokens == b.tokens and a.finish_reason == b.finish_reason
    chat = ChatSession(om, tok, [_image(7 + i) for i in range(n)], params)
    r1 = chat.ask("What is it?")
    r2 = chat.ask("And the colour?")
    assert r1.timings["new_tokens"] >= 1 and r2.finish_reason in ("stop", "length")


def test_metadata_describes_the_visual_side(exported):
    model, out = exported
    meta = json.loads((out / "metadata.json").read_text())
    v = meta["visual"]
    assert meta["model"]["kind"] == "visual_rwkv" and {"vision", "image_prefill"} <= set(meta["graphs"])
    assert v["tokens_per_image"] == model.tokens_per_image and v["scan"] == model.vcfg.scan
    assert [p["transform"] for p in v["pixel_inputs"]] == list(model.transforms)
    assert meta["graphs"]["image_prefill"]["inputs"][0] == {
        "name": "image_embeds", "dtype": "float32", "shape": ["batch", model.tokens_per_image, model.cfg.n_embd]}


def test_broken_visual_artefacts(exported, tmp_path):
    _, out = exported
    d = tmp_path / "edited"
    shutil.copytree(out, d)
    meta = json.loads((d / "metadata.json").read_text())
    meta["visual"]["tokens_per_image"] += 1
    (d / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ArtefactError, match="tokens_per_image"):
        load_onnx_model(d)
    meta["visual"]["tokens_per_image"] -= 1
    del meta["graphs"]["vision"]
    (d / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ArtefactError, match="graphs.vision is missing"):
        load_onnx_model(d)
    d2 = tmp_path / "missing"
    shutil.copytree(out, d2)
    (d2 / "vision.onnx").unlink()
    with pytest.raises(ArtefactError, match="vision.onnx is missing"):
        load_onnx_model(d2)
    om = load_onnx_model(out)
    with pytest.raises(ValueError, match=r"image embeddings must be \["):
        om.prefill([[1, 2], torch.zeros(3, om.cfg.n_embd)])
    with pytest.raises(ValueError, match="all_logits"):
        om.prefill([[1, 2], _image(1)], all_logits=True)


@pytest.mark.parametrize("variant,output", [("vrwkv_t", "logits"), ("vrwkv6_t", "tokens")])
def test_vision_rwkv_classifier_graph(tmp_path, variant, output):
    """The Vision-RWKV graph (exact Bi-WKV in its scan form) matches PyTorch at two batch sizes."""
    import onnxruntime as ort

    extra = dict(head_size=32, mix_lora=8, decay_lora=8) if variant == "vrwkv6_t" else {}
    model = build_vision_rwkv(variant, embed_dims=64, depth=2, num_classes=7, img_size=48, **extra)
    init_tower_random_(model, seed=3)
    model.eval()
    path = export_vision_rwkv(model, tmp_path / "m.onnx", image_size=64, output=output)
    sess = ort.InferenceSession(str(path))
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    ref = model(x) if output == "logits" else model.forward_tokens(x)
    got = sess.run(None, {"pixel_values": x.numpy()})[0]
    assert got.shape == tuple(ref.shape)
    # dynamic dimensions named (the batch was the tracer's "s81"), as ONNX Runtime reports them
    from tests.export.dims import check_named_dims
    assert check_named_dims(onnx.load(str(path)), variant) == {"batch"}
    assert sess.get_inputs()[0].shape == ["batch", 3, 64, 64]
    assert sess.get_outputs()[0].shape == (["batch", 7] if output == "logits" else ["batch", 16, 64])
    assert float(np.abs(got - ref.numpy()).max()) <= TOL * max(1.0, float(ref.abs().max()))
    with pytest.raises(FileExistsError):
        export_vision_rwkv(model, path)
    assert not list(tmp_path.glob(".*partial"))


def test_validate_checks_the_image_path(exported):
    from vrwkv_edge.export import validate
    model, out = exported
    report = validate(out, model, n_tokens=6, verbose=False)
    assert report.passed and report.with_image and report.max_abs_diff <= TOL
    with pytest.raises(ValueError, match="VisualRWKV export"):
        validate(out, model.rwkv, n_tokens=1, verbose=False)


def test_export_cli_recognises_vision_rwkv_checkpoints(tmp_path, capsys):
    from vrwkv_edge.export.cli import main
    model = build_vision_rwkv("vrwkv_t", embed_dims=64, depth=2, num_classes=7)
    torch.save({"meta": {}, "state_dict": model.state_dict()}, tmp_path / "v.pth")
    # a non-standard size cannot be inferred from the shapes: a clear error, exit 2, nothing written
    assert main(["export", "--model", str(tmp_path / "v.pth"), "--out", str(tmp_path / "v.onnx")]) == 2
    assert "no preset has variant vrwkv, embed_dims 64" in capsys.readouterr().err
    assert not (tmp_path / "v.onnx").exists()
