"""Runs the official ``rwkv`` pip package (BlinkDL) on a checkpoint in a fresh process and saves its logits
and final state.  Run as a subprocess because RWKV-7 support is switched on by RWKV_V7_ON=1 before import.

usage: python rwkv_reference_runner.py CKPT(.pth) VERSION TOKENS_JSON OUT.pt
"""
import json
import os
import sys

ckpt, version, tokens_json, out = sys.argv[1:5]
os.environ["RWKV_V7_ON"] = "1" if version == "x070" else "0"
os.environ.setdefault("RWKV_JIT_ON", "1")
os.environ["RWKV_CUDA_ON"] = "0"

import torch  # noqa: E402
from rwkv.model import RWKV  # noqa: E402

tokens = json.loads(tokens_json)
# The x070 class appends '.pth' itself; the v4-v6 class accepts the name either way.
model = RWKV(model=ckpt[:-4] if ckpt.endswith(".pth") else ckpt, strategy="cpu fp32", **(
    {} if version == "x070" else {"verbose": False}))
seq_logits, seq_state = model.forward(tokens, None, full_output=True)
step_state, step_logits = None, []
for t in tokens:
    lg, step_state = model.forward([t], step_state)
    step_logits.append(lg.float())
torch.save({"seq_logits": seq_logits.float(), "seq_state": [s.float() for s in seq_state],
            "step_logits": torch.stack(step_logits), "step_state": [s.float() for s in step_state]}, out)
