"""vrwkv-chat on the rwkv.cpp tiny models (byte-level): greedy tokens identical to the Python ONNX Runtime
backend, logits within 1e-4 of PyTorch, chunked prefill, two ONNX Runtime releases, the embedding example."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from .conftest import TINY_CKPT, import_first

PROMPT = "The quick brown fox"
N_NEW = 24
TOL = 1e-4


def _chat_json(run_chat, export, tmp_path, *extra) -> tuple[dict, np.ndarray]:
    out, dump = tmp_path / "out.json", tmp_path / "logits.bin"
    run_chat("--model", export, "--prompt", PROMPT, "--greedy", "--no-stop", "--max-new-tokens", N_NEW,
             "--json", out, "--dump-logits", dump, *extra)
    turn = json.loads(out.read_text())["turns"][0]
    return turn, np.fromfile(dump, dtype=np.float32).reshape(-1, 256)


@pytest.fixture(scope="module")
def torch_one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with torch.no_grad():
        yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("version", ["x060", "x070"])
def test_greedy_matches_python_runtime_and_pytorch(version, text_exports, run_chat, tmp_path, torch_one_thread):
    from vrwkv_edge.export import load_onnx_model
    from vrwkv_edge.generation import SamplingParams, generate

    turn, logits = _chat_json(run_chat, text_exports[version], tmp_path)
    ids = list(PROMPT.encode())
    assert turn["prompt_ids"] == ids                  # byte-level: the runtime picked ids = bytes
    assert len(turn["tokens"]) == N_NEW and turn["finish_reason"] == "length"

    ort_model = load_onnx_model(text_exports[version], threads=1)
    ref = generate(ort_model, ids, params=SamplingParams.greedy(stop_tokens=(), max_new_tokens=N_NEW))
    assert turn["tokens"] == ref.tokens[0]

    load_model = import_first("vrwkv_edge.loading:load_model", "vrwkv_edge.checkpoint:load_model")
    model = load_model(TINY_CKPT[version])
    lg, state = model.forward(torch.tensor([ids]), last_only=True)
    rows = [lg[0]]
    for t in turn["tokens"][:-1]:
        lg, state = model.step(torch.tensor([t]), state)
        rows.append(lg[0])
    expected = torch.stack(rows).float().numpy()
    assert logits.shape == expected.shape
    assert np.abs(logits - expected).max() < TOL


def test_chunked_prefill_and_second_ort_release(text_exports, run_chat, tmp_path):
    """max_prefill_tokens 5 splits the prompt into 4 prefill runs (exact: the state carries over).  The same
    binary then runs against an older onnxruntime release (1.30, pip-installed into a temporary target):
    the library is dlopen'ed, so its versioned symbols do not tie the binary to the release it was built with."""
    base, base_logits = _chat_json(run_chat, text_exports["x070"], tmp_path)
    chunked, chunked_logits = _chat_json(run_chat, text_exports["x070"], tmp_path, "--max-prefill-tokens", 5)
    assert chunked["tokens"] == base["tokens"]
    assert np.abs(chunked_logits - base_logits).max() < TOL

    target = tmp_path / "ort_old"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                        "onnxruntime==1.30.0"], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(f"pip could not install onnxruntime 1.30.0 for the two-release test:\n{r.stderr[-2000:]}")
    lib = next((target / "onnxruntime" / "capi").glob("libonnxruntime.so.1.*"))
    out = tmp_path / "old.json"
    run_chat("--model", text_exports["x070"], "--prompt", PROMPT, "--greedy", "--no-stop", "--max-new-tokens", N_NEW,
             "--json", out, ort_lib=lib)
    old = json.loads(out.read_text())
    assert old["ort_version"] == "1.30.0"
    assert old["turns"][0]["tokens"] == base["tokens"]


def test_embedding_example_and_interactive_chat(text_exports, cpp_build, ort_library, run_chat, tmp_path):
    r = subprocess.run([str(cpp_build["embed"]), str(text_exports["x070"]), PROMPT], capture_output=True, text=True,
                       env={"VRWKV_ORT_LIBRARY": ort_library, "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    # the example streams 32 greedy tokens and stops at token 0 / 261 (none occur): the same text as the app's
    app = run_chat("--model", text_exports["x070"], "--prompt", PROMPT, "--greedy", "--max-new-tokens", 32)
    assert r.stdout == app.stdout and len(r.stdout.strip()) > 0

    # stdin chat: one answer per line, the state carries over between questions
    out = tmp_path / "chat.json"
    r = run_chat("--model", text_exports["x070"], "--greedy", "--no-stop", "--max-new-tokens", 4, "--json", out,
                 "--bench", stdin="Hello\nagain\n")
    turns = json.loads(out.read_text())["turns"]
    assert [t["prompt_ids"] for t in turns] == [list(b"Hello"), list(b"again")]
    assert r.stderr.count("[bench]") == 2 and "tokens/s" in r.stderr and "TTFT" in r.stderr
