"""Acceptance 5: ``chat`` and ``eval`` end to end on tiny random VisualRWKV checkpoints of both versions, plus
the image-state cache and eval's agreement with evaluate.py's full-sequence greedy decoding."""
from __future__ import annotations

import io
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import IMAGES  # noqa: E402
from vrwkv_edge.tokenizer import load_tokenizer
from vrwkv_edge.visualrwkv import ImageStateCache, question_prompt, save_visual_checkpoint
from vrwkv_edge.visualrwkv.builders import tiny_v6, tiny_v7
from vrwkv_edge.visualrwkv.cli import main as visual_main
from vrwkv_edge.visualrwkv.runtime import ChatSession, answer, chat_params, decode_answer

pytestmark = [pytest.mark.usefixtures("quiet_torch"), pytest.mark.vision]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("visual_models")
    out = {}
    for version, build in (("v6", tiny_v6), ("v7", tiny_v7)):
        d = root / f"tiny-{version}"
        d.mkdir()
        model = build(seed=21)
        out[version] = (save_visual_checkpoint(model, d / "model.pth")[0], model)
    return out


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    for p in IMAGES.iterdir():
        shutil.copy(p, d / p.name)
    return d


def _questions(path: Path, with_textless=False):
    qs = [{"question_id": 1, "image": "chelsea.png", "text": "What animal is this?"},
          {"question_id": "q2", "image": "rocket.jpg", "text": "What is shown?\nAnswer the question using a single "
                                                                "word or phrase."},
          {"question_id": 3, "image": "chelsea.png", "text": "What color is it?"}]
    if with_textless:
        qs.append({"question_id": 4, "text": "No image here."})
    path.write_text("".join(json.dumps(q) + "\n" for q in qs))
    return qs


def _reference_greedy(model, items, max_new_tokens):
    """evaluate.py: re-run the full training-style sequence for every new token, greedy, stop at 261."""
    ids, lg, pr = [], [], []
    for _ in range(max_new_tokens):
        logits = model.reference_logits(list(items) + ([ids] if ids else []))[-1]
        t = int(logits.argmax())
        lg.append(float(logits[t]))
        pr.append(float(torch.softmax(logits, -1)[t]))
        ids.append(t)
        if t == 261:
            break
    return ids, sum(lg) / len(lg), math.prod(pr) ** (1 / len(pr))


@pytest.mark.parametrize("version", ["v6", "v7"])
def test_eval_end_to_end_and_resume(ckpts, image_folder, tmp_path, tok, version):
    path, model = ckpts[version]
    qfile = tmp_path / "questions.jsonl"
    qs = _questions(qfile, with_textless=True)
    out = tmp_path / "answers" / "out.jsonl"
    argv = ["eval", "--model", str(path), "--question-file", str(qfile), "--answers-file", str(out),
            "--image-folder", str(image_folder), "--max-new-tokens", "6", "--no-progress"]
    assert visual_main(argv) == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    expected_ids = [1, "q2", 3] + ([4] if version == "v6" else [])        # v7 evaluate.py skips textless-image
    assert [r["question_id"] for r in lines] == expected_ids
    for r in lines:
        assert list(r) == ["question_id", "prompt", "text", "avg_logit", "avg_prob", "model_id", "metadata"]
        assert r["model_id"] == f"tiny-{version}"
        assert isinstance(r["avg_logit"], str) and isinstance(r["avg_prob"], str)
        assert "<image>" in r["prompt"] and r["prompt"].endswith("\n\nAssistant:")
    assert lines[0]["metadata"] == {"image_file": "chelsea.png"}
    if version == "v6":   # the sandwich prompt (middle), instruction removed before the image
        assert lines[1]["prompt"] == ("User: What is shown?\n<image>\nWhat is shown?\nAnswer the question using a "
                                      "single word or phrase.\n\nAssistant:")
    else:
        assert lines[1]["prompt"].startswith("User: <image>\nWhat is shown?")

    # the answer equals evaluate.py's full-sequence greedy decoding with the training-style forward
    q = qs[1]
    p = question_prompt(tok, q["text"], version, image_position=model.vcfg.image_position)
    ids, avg_logit, avg_prob = _reference_greedy(model, p.with_images([image_folder / q["image"]]), 6)
    assert lines[1]["text"] == decode_answer(tok, ids)
    assert lines[1]["avg_logit"] == str(round(avg_logit, 3))
    assert lines[1]["avg_prob"] == str(round(avg_prob, 3))

    # resume: keep the first answer, leave a torn second line, rerun -> nothing duplicated, first untouched
    first = out.read_text().splitlines()[0]
    out.write_text(first + "\n" + '{"question_id": "q2", "pro')
    assert visual_main(argv) == 0
    again = out.read_text().splitlines()
    assert again[0] == first
    assert [json.loads(x)["question_id"] for x in again] == expected_ids
    assert visual_main(argv) == 0                                            # all done: nothing added
    assert out.read_text().splitlines() == again


@pytest.mark.parametrize("version", ["v6", "v7"])
def test_chat_one_shot(ckpts, capsys, version):
    path, model = ckpts[version]
    rc = visual_main(["chat", "--model", str(path), "--image", str(IMAGES / "coffee.png"),
                      "--prompt", "What is in the cup?", "--max-new-tokens", "5", "--greedy"])
    assert rc == 0
    out = capsys.readouterr().out
    assert out.endswith("\n")
    tok = load_tokenizer()
    p = question_prompt(tok, "What is in the cup?", version, image_position=model.vcfg.image_position)
    res = answer(model, tok, p.with_images([IMAGES / "coffee.png"]),
                 chat_params(temperature=0.0, top_p=1.0, frequency_penalty=0.0, max_new_tokens=5))
    streamed = b"".join(tok.decode_bytes([t]) for t in res.tokens if t < 65530).decode("utf-8", "replace")
    assert out[:-1] == streamed


@pytest.mark.parametrize("version", ["v6", "v7"])
def test_chat_interactive(ckpts, capsys, monkeypatch, version):
    path, _ = ckpts[version]
    script = "What is this?\n\nAnd the color?\n/reset\nWhat is this?\n/image " + str(IMAGES / "rocket.jpg") + \
        "\nWhere is it?\n/quit\nnever read\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO(script))
    rc = visual_main(["chat", "--model", str(path), "--image", str(IMAGES / "chelsea.png"),
                      "--max-new-tokens", "4", "--greedy"])
    assert rc == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 4                                  # four answers, one line each


def test_chat_session_multiturn_state(ckpts, tok):
    """A follow-up continues from the state: same as prefilling the whole 2-turn conversation at once."""
    _, model = ckpts["v7"]
    img = IMAGES / "chelsea.png"
    params = chat_params(temperature=0.0, top_p=1.0, frequency_penalty=0.0, max_new_tokens=4)
    s = ChatSession(model, tok, [img], params)
    a1 = s.ask("What is this?")
    a2 = s.ask("And the color?")
    # rebuild the exact token stream: first turn, generated answer tokens, "\n\n", second turn
    first = question_prompt(tok, "What is this?", "v7").with_images([img])
    items = first + [a1.tokens + [261] + tok.encode("User: And the color?\n\n") + tok.encode("Assistant:")]
    res = answer(model, tok, items, params)
    assert res.tokens == a2.tokens


def test_image_state_cache(ckpts, tok):
    _, model = ckpts["v7"]
    cache = ImageStateCache(2)
    img = IMAGES / "coffee.png"
    p1 = question_prompt(tok, "What is this?", "v7").with_images([img])
    p2 = question_prompt(tok, "Is it hot?", "v7").with_images([str(img)])
    a, _ = model.prefill(p2)
    model.prefill(p1, cache=cache)
    assert (cache.hits, cache.misses, len(cache)) == (0, 1, 1)
    b, _ = model.prefill(p2, cache=cache)                       # same prefix "User: " + same image: a hit
    assert (cache.hits, cache.misses) == (1, 1)
    assert torch.allclose(a, b, atol=1e-5, rtol=0)
    other = question_prompt(tok, "Is it hot?", "v7").with_images([IMAGES / "rocket.jpg"])
    model.prefill(other, cache=cache)
    assert (cache.hits, cache.misses) == (1, 2)


def test_python_m_entry_point(ckpts, image_folder, tmp_path):
    path, _ = ckpts["v6"]
    qfile = tmp_path / "q.jsonl"
    _questions(qfile)
    out = tmp_path / "a.jsonl"
    r = subprocess.run([sys.executable, "-m", "vrwkv_edge.visualrwkv.cli", "eval", "--model", str(path),
                        "--question-file", str(qfile), "--answers-file", str(out), "--image-folder",
                        str(image_folder), "--max-new-tokens", "3", "--chunk-idx", "1", "--num-chunks", "2",
                        "--threads", "1"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert [json.loads(x)["question_id"] for x in out.read_text().splitlines()] == [3]   # ceil(3/2) = 2 per chunk
    assert "eval" in r.stderr                                          # the tqdm progress bar


def test_eval_errors(ckpts, tmp_path):
    path, _ = ckpts["v6"]
    q = tmp_path / "q.txt"
    q.write_text("x")
    assert visual_main(["eval", "--model", str(path), "--question-file", str(q), "--answers-file",
                        str(tmp_path / "o.jsonl")]) == 2
    lm_only = tmp_path / "lm.pth"
    from vrwkv_edge.checkpoint import save_checkpoint
    save_checkpoint({k[5:]: v for k, v in ckpts["v6"][1].state_dict().items() if k.startswith("rwkv.")}, lm_only)
    assert visual_main(["chat", "--model", str(lm_only), "--prompt", "hi"]) == 2
