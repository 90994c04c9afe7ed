"""The command line: demo, info and generate, and a clear error for bad input."""
import json
import subprocess
import sys

import pytest

from tests.helpers import TINY_MODELS, random_model
from vrwkv_edge.checkpoint import save_checkpoint
from vrwkv_edge.cli import main


def test_demo_runs_from_a_fresh_process():
    proc = subprocess.run([sys.executable, "-m", "vrwkv_edge.cli", "demo", "--max-new-tokens", "8"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "tiny-rwkv7-834K" in proc.stderr and "8 tokens" in proc.stderr
    assert len(proc.stdout.strip()) > 0


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
