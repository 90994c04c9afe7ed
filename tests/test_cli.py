"""The command line: demo, info and generate, and a clear error for bad input."""
import json
import re
import subprocess
import sys

import pytest

from tests.helpers import TINY_MODELS, random_model
from vrwkv_edge.checkpoint import save_checkpoint
from vrwkv_edge.cli import main


ANSWER_WORDS = {"zero", "one", "two", "three", "four", "yes", "no", "small", "large", "circle", "square", "triangle",
                "red", "green", "blue", "yellow", "purple", "orange", "top left", "top right", "bottom left",
                "bottom right"}


def test_demo_runs_from_a_fresh_process():
    """The embedded VisualRWKV on new scenes (PyTorch half; the ONNX half is recorded in training/results/)."""
    proc = subprocess.run([sys.executable, "-m", "vrwkv_edge.cli", "demo", "--no-onnx", "--images", "2"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "vrwkv-shapes-8.6M" in proc.stderr and "onnx: skipped (--no-onnx)" in proc.stderr
    right = re.search(r"pytorch: (\d+)/(\d+) correct, TTFT [\d.]+ ms .* tokens/s decode", proc.stderr)
    assert right and int(right.group(2)) == 6, proc.stderr
    assert proc.stdout.count("Q: ") == 6 and "image 2: " in proc.stdout
    # every answer is one of the task's answer words (accuracy itself: training/results/default_model.json)
    answers = re.findall(r"pytorch: '([^']*)'", proc.stdout)
    assert len(answers) == 6 and set(answers) <= ANSWER_WORDS, answers


def test_demo_and_chat_refuse_bad_input(tmp_path, capsys):
    assert main(["demo", "--images", "0"]) == 2
    assert "--images must be >= 1" in capsys.readouterr().err
    assert main(["chat", "--image", str(tmp_path / "missing.png"), "--prompt", "What?"]) == 2
    assert "missing.png" in capsys.readouterr().err


def test_chat_defaults_to_the_embedded_model(tmp_path, capsys):
    import random

    from vrwkv_edge.training.synthetic import Shape, draw_scene
    path = tmp_path / "scene.png"
    draw_scene([Shape("circle", "red", "large", (0, 0))], random.Random(0)).save(path)
    assert main(["chat", "--image", str(path), "--prompt", "How many shapes are there?", "--greedy"]) == 0
    assert capsys.readouterr().out.strip() == "one"


def test_info_json(capsys, testdata):
    assert main(["info", str(TINY_MODELS["x060"][0]), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["version"] == "x060" and info["n_layer"] == 12 and info["head_size"] == 8
    assert info["parameters"] == 1_028_352


def test_generate_greedy_is_deterministic(capsys, testdata):
    args = ["generate", "--model", str(TINY_MODELS["x070"][0]), "--prompt", "The", "--temperature", "0",
            "--frequency-penalty", "0", "--max-new-tokens", "12", "--no-stop"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0
    assert capsys.readouterr().out == first
    assert first.startswith(" the the")        # what this lightly trained model greedily says


def test_generate_world_tokenizer_model(tmp_path, capsys):
    model = random_model("x070", 1, 64, 16, vocab_size=65536)
    ckpt = save_checkpoint(model.state_dict(), tmp_path / "world.pth")
    assert main(["generate", "--model", str(ckpt), "--prompt", "User: hi\n\nAssistant:", "--max-new-tokens", "4",
                 "--seed", "1"]) == 0


@pytest.mark.parametrize("argv, message", [
    (["info", "missing.pth"], "checkpoint not found: missing.pth"),
    (["generate", "--model", "missing.pth", "--prompt", "x"], "missing.pth"),
])
def test_bad_input_gives_a_clear_error(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_bad_sampling_argument(capsys, testdata):
    assert main(["generate", "--model", str(TINY_MODELS["x070"][0]), "--prompt", "x", "--top-p", "2"]) == 2
    assert "--top-p" in capsys.readouterr().err


def test_info_takes_model_as_every_command_does(capsys, testdata):
    assert main(["info", "--model", str(TINY_MODELS["x060"][0]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == "x060"


@pytest.mark.parametrize("argv", [
    ["info", "--model", "MISSING.pth"],
    ["generate", "--model", "MISSING.pth", "--prompt", "x"],
    ["chat", "--model", "MISSING.pth", "--prompt", "x"],
    ["eval", "--model", "MISSING.pth", "--question-file", "MISSING.jsonl", "--answers-file", "OUT.jsonl"],
    ["classify", "--model", "MISSING.pth", "--image", "MISSING.png"],
    ["assemble", "--lm", "MISSING.pth", "--tower", "MISSING_TOWER.pth", "--out", "OUT.pth"],
    ["export", "--model", "MISSING.pth", "--out", "OUT_DIR"],
    ["validate", "MISSING_DIR", "--model", "MISSING.pth"],
])
def test_every_command_reports_bad_input_as_one_error_line_and_exit_2(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "MISSING" in err and "Traceback" not in err
