"""vrwkv-chat with images on random tiny VisualRWKV exports (v6 CLIP bidirectional, v7 SAM+DINOv2+SigLIP, a
Vision-RWKV tower): the app decodes and preprocesses the files itself; its pixels equal the Python
preprocessing exactly, its greedy tokens equal the Python ONNX Runtime backend's, its logits are within 1e-4 of
PyTorch (exact layer-wise image scan through image_prefill.onnx)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from .conftest import TESTDATA, import_first

IMAGES = TESTDATA / "images"
N_NEW = 12
TOL = 1e-4
QUESTION = "What is in the picture?\n\n\nDescribe it."
MODELS = {  # name -> (builder args, test image)
    "v6-clip-bidirectional": ("tiny_v6", {"seed": 21}, "rocket.jpg"),
    "v7-sam_dino_siglip": ("tiny_v7", {"seed": 22}, "chelsea.png"),
    "x070-vrwkv-tower": ("tiny_vrwkv", {"lm": "x070", "seed": 23, "scan": "multidirectional"}, "coffee.png"),
}


@pytest.fixture(scope="module", params=list(MODELS))
def visual_export(request, tmp_path_factory):
    from vrwkv_edge.export import export_model

    builder, kwargs, image = MODELS[request.param]
    build = import_first(f"vrwkv_edge.visualrwkv.builders:{builder}", f"vrwkv_edge.visualrwkv.testing:{builder}",
                         f"vrwkv_edge.visual.testing:{builder}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = build(**kwargs).eval()
        out = export_model(model, tmp_path_factory.mktemp("visual") / request.param, embeds=False, progress=False)
    finally:
        torch.set_num_threads(threads)
    return request.param, model, out, IMAGES / image


def _odd_images(directory) -> list:
    """Files that exercise the loader's conversions: EXIF-rotated JPEGs, greyscale, RGBA and LA (alpha over
    white), a palette with a transparent entry, 16-bit greyscale and 16-bit RGB PNGs."""
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    rgb[:, :20] = rgb[:, :20] // 4 + 100                  # smooth and noisy areas
    out = []
    for orientation in (3, 6, 8):
        exif = Image.Exif()
        exif[0x0112] = orientation
        p = directory / f"exif{orientation}.jpg"
        Image.fromarray(rgb).save(p, quality=90, exif=exif.tobytes())
        out.append(p)
    alpha = rng.integers(0, 256, (37, 53), dtype=np.uint8)
    images = {"grey.png": Image.fromarray(rgb[..., 0]), "grey.jpg": Image.fromarray(rgb[..., 1]),
              "rgba.png": Image.fromarray(np.dstack([rgb, alpha])),
              "la.png": Image.fromarray(np.dstack([rgb[..., 0], alpha])),
              "grey16.png": Image.fromarray(rgb[..., 0].astype(np.uint16) * 257 + 3),
              "rgb16.png": None}
    pal = Image.fromarray(rgb).quantize(16)
    pal.info["transparency"] = 3
    images["palette.png"] = pal
    for name, img in images.items():
        p = directory / name
        if name == "rgb16.png":                           # 16-bit RGB: write the PNG bytes by hand (PIL cannot)
            import struct
            import zlib
            data = (rgb.astype(">u2") * 257 + 5).tobytes()
            rows = b"".join(b"\x00" + data[y * 53 * 6:(y + 1) * 53 * 6] for y in range(37))
            chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))  # noqa
            p.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 53, 37, 16, 2, 0, 0, 0))
                          + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
        else:
            img.save(p, transparency=3) if name == "palette.png" else img.save(p)
        out.append(p)
    return out


def test_pixels_equal_python_preprocessing(visual_export, run_chat, tmp_path):
    from vrwkv_edge.export import load_onnx_model

    load_rgb = import_first("vrwkv_edge.visualrwkv.preprocess:load_rgb", "vrwkv_edge.visual.preprocess:load_rgb")
    _, _, export, _ = visual_export
    ort_model = load_onnx_model(export, threads=1)
    # the test photos (2 PNG, 1 JPEG) and generated files through every transform of the export
    for image in sorted(IMAGES.iterdir()) + _odd_images(tmp_path):
        dump = tmp_path / "pixels.bin"
        run_chat("--model", export, "--image", image, "--dump-pixels", dump)
        want = np.concatenate([t.to_array(load_rgb(image)).ravel() for t in ort_model.transforms.values()])
        got = np.fromfile(dump, dtype=np.float32)
        assert got.shape == want.shape and np.array_equal(got, want), image.name


def test_answer_matches_python_runtime_and_pytorch(visual_export, run_chat, tmp_path):
    from vrwkv_edge.export import load_onnx_model
    from vrwkv_edge.generation import SamplingParams
    from vrwkv_edge.tokenizer import load_tokenizer

    answer = import_first("vrwkv_edge.visualrwkv:answer", "vrwkv_edge.visual:answer")
    question_prompt = import_first("vrwkv_edge.visualrwkv:question_prompt", "vrwkv_edge.visual:question_prompt")
    name, model, export, image = visual_export
    out, dump = tmp_path / "out.json", tmp_path / "logits.bin"
    run_chat("--model", export, "--image", image, "--prompt", QUESTION, "--greedy", "--no-stop",
             "--max-new-tokens", N_NEW, "--json", out, "--dump-logits", dump)
    turn = json.loads(out.read_text())["turns"][0]

    tok = load_tokenizer(export / "rwkv_vocab_v20230424.txt")
    ort_model = load_onnx_model(export, threads=1)
    p = question_prompt(tok, QUESTION, ort_model.visual_version, image_position=ort_model.vcfg.image_position)
    assert turn["prompt_ids"] == p.token_ids()       # the training template, each turn tokenized on its own
    ref = answer(ort_model, tok, p.with_images([str(image)]),
                 SamplingParams.greedy(stop_tokens=(), max_new_tokens=N_NEW))
    assert turn["tokens"] == ref.tokens

    with torch.no_grad():
        lg, state = model.prefill(p.with_images([str(image)]))
        rows = [lg[0]]
        for t in turn["tokens"][:-1]:
            lg, state = model.step(torch.tensor([t]), state)
            rows.append(lg[0])
    expected = torch.stack(rows).float().numpy()
    got = np.fromfile(dump, dtype=np.float32).reshape(expected.shape)
    assert np.abs(got - expected).max() < TOL, name


def test_chat_turns_and_image_state_cache(visual_export, run_chat, tmp_path):
    """A second question continues from the state as a follow-up turn; after "/reset" the same question about
    the same image resumes from the image-state cache (v7 and v6 prompts put the image after the same prefix
    here) and gives the same answer."""
    from vrwkv_edge.tokenizer import load_tokenizer

    _, _, export, image = visual_export
    out = tmp_path / "chat.json"
    run_chat("--model", export, "--image", image, "--greedy", "--no-stop", "--max-new-tokens", 3, "--json", out,
             stdin="What is it?\nAnd the colour?\n/reset\nWhat is it?\n")
    res = json.loads(out.read_text())
    turns = res["turns"]
    tok = load_tokenizer(export / "rwkv_vocab_v20230424.txt")
    assert len(turns) == 3
    assert turns[1]["prompt_ids"] == tok.encode("User: And the colour?\n\n") + tok.encode("Assistant:")
    # the Python ChatSession on the same export: same answers to both questions (the first answer is closed
    # with "\n\n" before the follow-up)
    from vrwkv_edge.export import load_onnx_model
    from vrwkv_edge.generation import SamplingParams
    ChatSession = import_first("vrwkv_edge.visualrwkv:ChatSession", "vrwkv_edge.visual:ChatSession")
    chat = ChatSession(load_onnx_model(export, threads=1), tok, [str(image)],
                       SamplingParams.greedy(stop_tokens=(), max_new_tokens=3))
    assert [chat.ask(q).tokens for q in ("What is it?", "And the colour?")] == [t["tokens"] for t in turns[:2]]
    assert turns[2]["prompt_ids"] == turns[0]["prompt_ids"] and turns[2]["tokens"] == turns[0]["tokens"]
    assert res["image_cache"] == {"hits": 1, "misses": 1}


def test_prompt_templates_match_python(visual_export, run_chat, tmp_path):
    """Prompt ids for every v6 image position (v7: image-first) with Unicode whitespace, CRLF and blank-line runs
    in the question and the tag inside it: the C++ templates equal vrwkv_edge's question_prompt."""
    from vrwkv_edge.tokenizer import load_tokenizer

    question_prompt = import_first("vrwkv_edge.visualrwkv:question_prompt", "vrwkv_edge.visual:question_prompt")
    _, model, export, image = visual_export
    tok = load_tokenizer(export / "rwkv_vocab_v20230424.txt")
    version = model.vcfg.version
    questions = ["\u3000 What\r\n \t\n\nis this?\u2029 ", "Look:\n<image>\n\n\n\nWhat colour?  \n\n",
                 "Answer the question using a single word or phrase.\n<image> Which?"]
    for pos in ("first", "middle", "last") if version == "v6" else ("middle",):
        for q in questions:
            out = tmp_path / "p.json"
            run_chat("--model", export, "--image", image, "--prompt", q, "--image-position", pos,
                     "--max-new-tokens", 0, "--json", out)
            want = question_prompt(tok, q, version, image_position=pos).token_ids()
            assert json.loads(out.read_text())["turns"][0]["prompt_ids"] == want, (pos, q)
