"""The memory estimates of vrwkv_edge.trt.memory: the parameter count equals a real model's, the state size equals
the State the runtimes allocate, and the table covers every non-tiny preset."""
from __future__ import annotations

import torch

from tests.helpers import random_model
from vrwkv_edge.config import LM_PRESETS
from vrwkv_edge.trt import memory


def test_counts_match_a_real_model():
    model = random_model("x060", n_layer=2, n_embd=64, head_size=32, vocab_size=300)
    total, matrices = memory.count_parameters(model.cfg)
    assert total == sum(p.numel() for p in model.parameters())
    assert matrices == sum(p.numel() for p in model.parameters() if p.dim() >= 2)
    state = model.new_state(1)
    tensors = [*state.shift_att, *state.wkv, *state.shift_ffn]
    assert all(t.dtype == torch.float32 for t in tensors)
    assert memory.state_bytes(model.cfg) == sum(t.numel() * t.element_size() for t in tensors)


def test_estimate_and_table():
    cfg = LM_PRESETS["rwkv7-0.1b"]
    fp16, fp32 = memory.estimate(cfg, "fp16"), memory.estimate(cfg, "fp32", streams=2)
    assert fp16.parameters == fp32.parameters and fp16.weights_bytes < fp32.weights_bytes < 2 * fp16.weights_bytes + 1
    assert fp32.runner_bytes == 2 * fp32.weights_bytes + 4 * fp32.state_bytes_per_stream
    # decode reads every weight but the embedding table (one row of it) plus the state in and out
    assert fp16.decode_bytes_per_token == (fp16.weights_bytes - cfg.vocab_size * cfg.n_embd * 2 + cfg.n_embd * 2
                                           + 2 * fp16.state_bytes_per_stream)
    assert fp16.decode_tokens_per_s_bound(1e9) == 1e9 / fp16.decode_bytes_per_token
    rows = memory.table().splitlines()
    assert len(rows) == 2 + sum(not n.endswith("tiny") for n in LM_PRESETS)
