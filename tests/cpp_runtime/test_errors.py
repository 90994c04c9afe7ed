"""Bad input to vrwkv-chat: a clear message naming the file/key/argument and a non-zero exit (2 for bad input, 1
for ONNX Runtime trouble), never a crash (a negative return code would be a signal)."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from .conftest import TESTDATA

IMAGES = TESTDATA / "images"


@pytest.fixture
def export_copy(text_exports, tmp_path):
    d = tmp_path / "export"
    shutil.copytree(text_exports["x070"], d)
    return d


def _fails(r, code: int, *needles: str):
    assert r.returncode == code, (r.returncode, r.stderr)
    assert r.stderr.startswith("error: "), r.stderr
    for n in needles:
        assert n in r.stderr, r.stderr


def _edit(d, fn):
    meta = json.loads((d / "metadata.json").read_text())
    fn(meta)
    (d / "metadata.json").write_text(json.dumps(meta, indent=2))


def test_broken_exports(export_copy, run_chat, tmp_path):
    d = export_copy
    chat = lambda model: run_chat("--model", model, "--prompt", "hi", check=False)  # noqa: E731
    _fails(chat(tmp_path / "nowhere"), 2, "nowhere: no such directory")
    _fails(chat(d / "decode.onnx"), 2, "not a directory")
    empty = tmp_path / "empty"
    empty.mkdir()
    _fails(chat(empty), 2, "metadata.json is missing")

    meta = (d / "metadata.json").read_text()
    (d / "metadata.json").write_text(meta[:-20])
    _fails(chat(d), 2, "metadata.json: invalid JSON at line")
    (d / "metadata.json").write_text(meta)

    _edit(d, lambda m: m.update(prompt_template="something-else"))   # valid, but not what the graphs carry
    _fails(chat(d), 2, "does not match the metadata embedded in", "prompt_template")
    (d / "metadata.json").write_text(meta)
    _edit(d, lambda m: m.update(format_version=3))
    _fails(chat(d), 2, "format_version 3 is newer")
    (d / "metadata.json").write_text(meta)
    _edit(d, lambda m: m["model"].update(n_layer=3))
    _fails(chat(d), 2, "state.inputs/state.outputs are not the io names of 3 layers")
    (d / "metadata.json").write_text(meta)
    _edit(d, lambda m: m["model"].pop("n_embd"))
    _fails(chat(d), 2, "key 'model.n_embd' is missing")
    (d / "metadata.json").write_text(meta)

    graph = (d / "decode.onnx").read_bytes()
    (d / "decode.onnx").write_bytes(graph[:-100])
    _fails(chat(d), 2, "decode.onnx:", "(truncated or replaced?)")
    (d / "decode.onnx").write_bytes(b"\x00" * len(graph))                 # same size, garbage
    _fails(chat(d), 2, "decode.onnx: ONNX Runtime cannot load this graph")
    (d / "decode.onnx").unlink()
    _fails(chat(d), 2, "decode.onnx is missing")
    shutil.copyfile(d / "prefill.onnx", d / "decode.onnx")               # the other graph under this name
    _edit(d, lambda m: m["files"]["decode.onnx"].update(bytes=(d / "decode.onnx").stat().st_size))
    _fails(chat(d), 2, "holds the 'prefill' graph")


def test_bad_images_prompts_and_arguments(text_exports, run_chat, cpp_build, ort_library, tmp_path):
    model = text_exports["x070"]
    chat = lambda *a, **kw: run_chat("--model", model, *a, check=False, **kw)  # noqa: E731
    _fails(chat("--image", tmp_path / "none.jpg", "--prompt", "q"), 2, "none.jpg: image not found")
    _fails(chat("--image", tmp_path, "--prompt", "q"), 2, "is a directory")
    (tmp_path / "notes.png").write_text("not an image")
    _fails(chat("--image", tmp_path / "notes.png", "--prompt", "q"), 2, "notes.png: not a recognised image format")
    for src in ("rocket.jpg", "coffee.png"):
        cut = tmp_path / f"cut-{src}"
        data = (IMAGES / src).read_bytes()
        cut.write_bytes(data[: len(data) // 2])
        _fails(chat("--image", cut, "--prompt", "q"), 2, f"cut-{src}: cannot decode the image (truncated or corrupt?)")
    _fails(chat("--image", IMAGES / "rocket.jpg", "--prompt", "q"), 2, "--image:", "is not a VisualRWKV export")

    r = subprocess.run([str(cpp_build["chat"]), "--ort-lib", ort_library, "--model", str(model), "--prompt",
                        b"caf\xe9 \xff"], capture_output=True, text=True)
    _fails(r, 2, "not valid UTF-8", "byte offset 3")
    r = subprocess.run([str(cpp_build["chat"]), "--ort-lib", ort_library, "--model", str(model), "--greedy",
                        "--max-new-tokens", "2"], input=b"ok\n\xc3(\n", capture_output=True)   # chat on stdin
    assert r.returncode == 2 and b"error: the text is not valid UTF-8" in r.stderr, r.stderr
    _fails(chat("--prompt", ""), 2, "the prompt is empty")
    _fails(chat("--prompt", "q", "--top-p", "2"), 2, "SamplingParams.top_p")
    _fails(chat("--prompt", "q", "--temperature", "warm"), 2, "--temperature: expected a number")
    _fails(chat("--prompt", "q", "--bogus"), 2, "unknown argument '--bogus'")
    _fails(chat("--prompt", "q", "--provider", "npu"), 2, "unknown execution provider 'npu'")
    _fails(chat("--prompt", "q", "--provider", "cuda"), 2, "CUDAExecutionProvider is not available")
    _fails(run_chat("--prompt", "q", check=False), 2, "--model DIR is required")
    _fails(run_chat("--model", model, "--prompt", "q", ort_lib=tmp_path / "libonnxruntime.so.9", check=False), 1,
           "cannot load the ONNX Runtime library", "libonnxruntime.so.9")
