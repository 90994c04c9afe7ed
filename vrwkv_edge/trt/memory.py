"""Device-memory estimates for TensorRT engines of the language models, from parameter counts and state sizes.

Per model shape (``vrwkv_edge.config.LM_PRESETS``): the parameters are counted on the meta device (nothing is
allocated); an engine stores its matrices in the engine precision and its vectors (decay, norms, mixes: what the
exports keep in fp32) in fp32.  The decode and the prefill graph are two engines and **each holds its own copy of the
weights** (TensorRT does not share weights between engines), so loading both costs twice the weights.  The
recurrent state is fp32 in every precision: per stream, per layer, two token-shift rows of ``C`` and the WKV state
``H x N x N``, held twice by a runner that ping-pongs state buffers between steps.  Activation memory (TensorRT's
``device_memory_size``) is only known once an engine is built; it is not included.  The decode bound divides a
GPU's peak DRAM bandwidth by the bytes one decode step reads (every weight once, one embedding row, the state in and
out): an upper bound that real engines approach only at large sizes.

    python -m vrwkv_edge.trt.memory            # the README table (markdown)
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import torch

from vrwkv_edge.config import LM_PRESETS, RWKVConfig
from vrwkv_edge.models import build_model

BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
# Peak DRAM bandwidth (bytes/s) for the speed-of-light decode bound: decode reads every weight once per token.
BANDWIDTH = {"AGX Orin": 204.8e9, "L20": 864e9}
GiB = 2 ** 30
MiB = 2 ** 20


@dataclass
class Estimate:
    parameters: int
    matrix_parameters: int           # parameters in tensors of rank >= 2 (stored in the engine precision)
    weights_bytes: int               # one engine's weights
    state_bytes_per_stream: int      # one state (fp32)
    engines_bytes: int               # decode + prefill engines' weights
    runner_bytes: int                # both engines + two state buffers per stream (ping-pong)
    decode_bytes_per_token: int      # weights read by one decode step (the embedding table: one row) + the state

    def decode_tokens_per_s_bound(self, bandwidth: float) -> float:
        """Speed-of-light decode rate (batch 1) at ``bandwidth`` bytes/s: an upper bound, not a measurement."""
        return bandwidth / self.decode_bytes_per_token


def count_parameters(cfg: RWKVConfig) -> tuple[int, int]:
    """(all parameters, parameters in tensors of rank >= 2) of the language model ``cfg``, built on the meta
    device."""
    with torch.device("meta"):
        model = build_model(cfg)
    total = sum(p.numel() for p in model.parameters())
    matrices = sum(p.numel() for p in model.parameters() if p.dim() >= 2)
    return total, matrices


def state_bytes(cfg: RWKVConfig) -> int:
    """fp32 bytes of one stream's recurrent state (vrwkv_edge.state: shift_att, wkv, shift_ffn per layer)."""
    return 4 * cfg.n_layer * (2 * cfg.n_embd + cfg.n_head * cfg.head_size * cfg.head_size)


def estimate(cfg: RWKVConfig, precision: str = "fp16", streams: int = 1) -> Estimate:
    if precision not in BYTES:
        raise ValueError(f"precision {precision!r}: choose one of {', '.join(BYTES)}")
    if streams < 1:
        raise ValueError(f"streams must be >= 1, got {streams}")
    total, matrices = count_parameters(cfg)
    weights = matrices * BYTES[precision] + (total - matrices) * 4
    state = state_bytes(cfg)
    embedding = cfg.vocab_size * cfg.n_embd * BYTES[precision]
    per_token = weights - embedding + cfg.n_embd * BYTES[precision] + 2 * state   # state read and written
    return Estimate(total, matrices, weights, state, 2 * weights, 2 * weights + 2 * streams * state, per_token)


def table(precisions=("fp16", "fp32"), names=None) -> str:
    """A markdown table of :func:`estimate` for the presets (``names``: default every non-tiny preset)."""
    names = names or [n for n in LM_PRESETS if not n.endswith("tiny")]
    head = ["model", "parameters", "state / stream (fp32)"]
    for p in precisions:
        head += [f"weights, one engine ({p})", f"decode + prefill engines + 1 stream ({p})"]
    head += [f"decode bound, {name} fp16 (tok/s)" for name in BANDWIDTH]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in names:
        cells = None
        for p in precisions:
            e = estimate(LM_PRESETS[name], p)
            if cells is None:
                cells = [name, f"{e.parameters / 1e9:.3f} B", f"{e.state_bytes_per_stream / MiB:.1f} MiB"]
            cells += [f"{e.weights_bytes / GiB:.2f} GiB", f"{e.runner_bytes / GiB:.2f} GiB"]
        e16 = estimate(LM_PRESETS[name], "fp16")
        cells += [f"{e16.decode_tokens_per_s_bound(bw):.0f}" for bw in BANDWIDTH.values()]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> int:
    print(table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
