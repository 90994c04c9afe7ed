"""The C API (compiled as C against the installed package) and the sampler: seeded reproducibility, top-k/top-p
limits, and greedy with penalties identical to the Python runtime (float32 penalty arithmetic)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import TESTDATA

PROMPT = "The quick brown fox"


def test_c_api_from_c(text_exports, cpp_build, ort_library, run_chat, tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    prefix = Path(cpp_build["prefix"])
    libdir = next(p for p in (prefix / "lib", prefix / "lib64", *prefix.glob("lib/*-linux-gnu")) if
                  (p / "libvrwkv_runtime.so").exists())
    exe = tmp_path / "c_api_check"
    subprocess.run([cc, "-std=c99", "-Wall", "-Werror", str(Path(__file__).with_name("c_api_check.c")),
                    f"-I{prefix / 'include'}", f"-L{libdir}", "-lvrwkv_runtime", f"-Wl,-rpath,{libdir}", "-o",
                    str(exe)], check=True)
    image = TESTDATA / "images" / "coffee.png"
    r = subprocess.run([str(exe), str(text_exports["x070"]), PROMPT, "10", str(image)], capture_output=True, text=True,
                       env={**os.environ, "VRWKV_ORT_LIBRARY": ort_library})
    assert r.returncode == 0, (r.returncode, r.stderr)
    out = tmp_path / "app.json"
    run_chat("--model", text_exports["x070"], "--prompt", PROMPT, "--greedy", "--no-stop", "--max-new-tokens", 10,
             "--json", out)
    assert [int(x) for x in r.stdout.split()] == json.loads(out.read_text())["turns"][0]["tokens"]


def _tokens(run_chat, export, tmp_path, *args) -> list[int]:
    out = tmp_path / "s.json"
    run_chat("--model", export, "--prompt", PROMPT, "--no-stop", "--max-new-tokens", 24, "--json", out, *args)
    return json.loads(out.read_text())["turns"][0]["tokens"]


def test_sampler(text_exports, run_chat, tmp_path):
    from vrwkv_edge.export import load_onnx_model
    from vrwkv_edge.generation import SamplingParams, generate

    export = text_exports["x070"]
    free = ("--temperature", 1.5, "--top-p", 1, "--frequency-penalty", 0)
    a = _tokens(run_chat, export, tmp_path, *free, "--seed", 7)
    assert a == _tokens(run_chat, export, tmp_path, *free, "--seed", 7)          # seeded: reproducible
    assert a != _tokens(run_chat, export, tmp_path, *free, "--seed", 8)          # and the seed matters
    greedy = _tokens(run_chat, export, tmp_path, "--greedy")
    assert _tokens(run_chat, export, tmp_path, *free, "--top-k", 1, "--seed", 3) == greedy   # top-k 1 = argmax
    assert _tokens(run_chat, export, tmp_path, "--temperature", 0.7, "--top-p", 0, "--frequency-penalty", 0,
                   "--seed", 3) == greedy                                       # top-p 0 keeps the top token
    # greedy with penalties: the same float32 arithmetic as torch, so the same tokens as the Python runtime
    pen = dict(presence_penalty=0.5, frequency_penalty=0.75, penalty_decay=0.9)
    got = _tokens(run_chat, export, tmp_path, "--greedy", "--presence-penalty", 0.5, "--frequency-penalty", 0.75,
                  "--penalty-decay", 0.9)
    ref = generate(load_onnx_model(export, threads=1), list(PROMPT.encode()),
                   params=SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=24, stop_tokens=(), **pen))
    assert got == ref.tokens[0] and got != greedy
