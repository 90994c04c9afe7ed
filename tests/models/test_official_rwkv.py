"""Our models against the official ``rwkv`` package (0.8.32, 'cpu fp32') on random checkpoints: logits of every
token and the final state, through both of our paths, several head counts and two head sizes, >= 128 tokens."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import assert_close, random_model
from vrwkv_edge import load_model
from vrwkv_edge.checkpoint import save_checkpoint
from vrwkv_edge.state import State

pytestmark = pytest.mark.reference

RUNNER = Path(__file__).with_name("rwkv_reference_runner.py")
CASES = [  # version, n_layer, n_embd, head_size
    ("x060", 3, 256, 64),     # 4 heads of 64
    ("x060", 2, 96, 32),      # 3 heads of 32
    ("x070", 3, 256, 64),
    ("x070", 2, 96, 32),
]


def official_checkpoint(model, path):
    """The model's weights in official RWKV-LM layout (they are already: same names and shapes)."""
    sd = model.state_dict()
    if model.version == "x070":
        # RWKV-LM x070 checkpoints carry (unused) value-residual weights in layer 0 too; include them so the
        # loader's handling of them is exercised.
        C = model.cfg.n_embd
        d = model.cfg.lora["v"]
        sd = dict(sd, **{"blocks.0.att.v0": torch.zeros(1, 1, C), "blocks.0.att.v1": torch.zeros(C, d),
                         "blocks.0.att.v2": torch.zeros(d, C)})
    return save_checkpoint(sd, path)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-L{c[1]}-C{c[2]}-N{c[3]}")
def test_matches_official_rwkv_package(case, tmp_path):
    version, n_layer, n_embd, head_size = case
    model = random_model(version, n_layer, n_embd, head_size, vocab_size=1000, seed=n_embd + n_layer)
    ckpt = official_checkpoint(model, tmp_path / "model.pth")
    tokens = torch.randint(0, 1000, (131,), generator=torch.Generator().manual_seed(7)).tolist()
    out = tmp_path / "ref.pt"
    subprocess.run([sys.executable, str(RUNNER), str(ckpt), version, json.dumps(tokens), str(out)], check=True,
                   capture_output=True)
    ref = torch.load(out, weights_only=True)
    # the package's own two paths agree with each other (sanity of the reference run)
    assert_close("rwkv seq vs step", ref["seq_logits"], ref["step_logits"], 1e-4)

    loaded = load_model(ckpt)
    ids = torch.tensor([tokens])
    logits, state = loaded.forward(ids)
    assert_close("forward logits", ref["seq_logits"], logits[0], 1e-4)
    ref_state = State.from_official(ref["seq_state"], version)
    for name, ours, theirs in zip(State.io_names(n_layer), state.flat(), ref_state.flat()):
        assert_close(f"forward {name}", theirs, ours, 1e-4)

    s = None
    step_logits = []
    for t in tokens:
        lg, s = loaded.step(torch.tensor([t]), s)
        step_logits.append(lg[0])
    assert_close("step logits", ref["step_logits"], torch.stack(step_logits), 1e-4)
    for name, ours, theirs in zip(State.io_names(n_layer), s.flat(), State.from_official(ref["step_state"], version).flat()):
        assert_close(f"step {name}", theirs, ours, 1e-4)
