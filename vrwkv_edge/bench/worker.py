"""One measurement in a fresh process, so its resident and peak memory belong to that backend alone.

    python -m vrwkv_edge.bench.worker '{"backend": "torch", "checkpoint": "m.pth", "state": "s.pt", "steps": 16}'
    python -m vrwkv_edge.bench.worker '{"task": "export", "checkpoint": "m.pth", "out": "dir", "dtype": "fp32"}'
    python -m vrwkv_edge.bench.worker '{"task": "vision", ...}'      # see vrwkv_edge.bench.vision.run_vision

Tasks: ``decode`` (the default, below), ``export`` (an ONNX export of a checkpoint, so that its memory -- the
loaded model plus the graph's copy of the weights -- is gone when it ends) and ``vision`` (tower latency, TTFT).

Backends: ``torch`` (our PyTorch runtime, eager), ``torch-compile`` (``torch.compile`` of ``step``),
``rwkv-pkg`` (the official ``rwkv`` package, 'cpu fp32', fed the same state through ``State.to_official``),
``ort`` (our ONNX Runtime backend, ``onnx_dir``), ``llama`` (transformers' Llama with a KV cache of
``context`` tokens, the Transformer baseline).  Every RWKV backend starts from the same saved state (the real
state after ``context`` tokens, computed once by the caller), so they decode the same tokens from the same
point; the first logits are reported so the caller can check they agree.

Prints one JSON object: per-token latency (median, min, max over ``steps`` timed steps after warm-up),
resident memory after decoding and peak resident memory of the process, in MiB.
"""
from __future__ import annotations

import json
import os
import sys
import time

import torch

from vrwkv_edge.export import export_model, load_onnx_model

from ..loading import load_model
from ..state import State
from .harness import peak_rss_bytes, rss_bytes
from .vision import run_vision

MIB = 2 ** 20


def _token(i: int, vocab: int) -> int:
    return (i * 7919 + 13) % (vocab - 1) + 1


def _time_steps(step, steps: int, warmup: int, vocab: int) -> tuple[list[float], torch.Tensor]:
    first = None
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        logits = step(_token(i, vocab))
        dt = time.perf_counter() - t0
        if first is None:
            first = logits.float().reshape(-1)
        if i >= warmup:
            times.append(dt)
    return times, first


def _rwkv_step_fn(spec: dict):
    backend = spec["backend"]
    saved = torch.load(spec["state"], weights_only=True) if spec.get("state") else None
    if backend in ("torch", "torch-compile"):
        model = load_model(spec["checkpoint"])
        state = [State.from_flat(saved) if saved else model.new_state(1)]
        fn = model.step
        if backend == "torch-compile":
            fn = torch.compile(model.step, dynamic=False)

        def step(tok):
            logits, state[0] = fn(torch.tensor([tok]), state[0])
            return logits
        return step, model.cfg.vocab_size
    if backend == "ort":
        model = load_onnx_model(spec["onnx_dir"])
        state = [State.from_flat(saved) if saved else model.new_state(1)]

        def step(tok):
            logits, state[0] = model.step(torch.tensor([tok]), state[0])
            return logits
        return step, model.cfg.vocab_size
    if backend == "rwkv-pkg":
        os.environ["RWKV_V7_ON"] = "1" if spec["version"] == "x070" else "0"
        os.environ["RWKV_CUDA_ON"] = "0"
        from rwkv.model import RWKV
        model = RWKV(model=spec["checkpoint"][:-4], strategy="cpu fp32")
        state = [State.from_flat(saved).to_official(spec["version"]) if saved else None]

        def step(tok):
            logits, state[0] = model.forward([tok], state[0])
            return logits
        return step, spec["vocab_size"]
    raise ValueError(f"unknown backend {backend!r}")


def build_llama(cfg: dict):
    """A Llama of the same depth, width and vocabulary as the RWKV model; SwiGLU width 8C/3 gives the same
    FFN parameter count as RWKV's 4C squared-ReLU FFN."""
    from transformers import LlamaConfig, LlamaForCausalLM
    n_embd = cfg["n_embd"]
    lcfg = LlamaConfig(vocab_size=cfg["vocab_size"], hidden_size=n_embd, intermediate_size=int(8 * n_embd / 3),
                       num_hidden_layers=cfg["n_layer"], num_attention_heads=n_embd // 64,
                       num_key_value_heads=n_embd // 64, max_position_embeddings=max(32768, cfg["context"] + 64),
                       tie_word_embeddings=False)
    torch.manual_seed(0)
    return LlamaForCausalLM(lcfg).eval(), lcfg


def _llama_step_fn(spec: dict):
    from transformers import DynamicCache
    model, lcfg = build_llama({**spec["config"], "context": spec["context"]})
    heads, hd = lcfg.num_key_value_heads, lcfg.hidden_size // lcfg.num_attention_heads
    cache = DynamicCache(config=lcfg)
    gen = torch.Generator().manual_seed(0)
    # Decode cost depends only on the cache length, so the cache of `context` tokens is filled directly
    # (a real 24K-token prefill would cost minutes of quadratic attention on this CPU and change nothing here).
    for layer in range(lcfg.num_hidden_layers):
        k = torch.randn(1, heads, spec["context"], hd, generator=gen)
        v = torch.randn(1, heads, spec["context"], hd, generator=gen)
        cache.update(k, v, layer)
    pos = [spec["context"]]

    def step(tok):
        out = model(input_ids=torch.tensor([[tok]]), past_key_values=cache, use_cache=True,
                    position_ids=torch.tensor([[pos[0]]]))
        pos[0] += 1
        return out.logits[0, -1]
    return step, lcfg.vocab_size


def run(spec: dict) -> dict:
    torch.set_grad_enabled(False)
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    t0 = time.perf_counter()
    step, vocab = _llama_step_fn(spec) if spec["backend"] == "llama" else _rwkv_step_fn(spec)
    load_s = time.perf_counter() - t0
    times, first = _time_steps(step, int(spec.get("steps", 16)), int(spec.get("warmup", 2)), vocab)
    times.sort()
    return {"backend": spec["backend"], "context": spec.get("context"), "steps": len(times),
            "ms_per_token": 1e3 * times[len(times) // 2], "ms_min": 1e3 * times[0], "ms_max": 1e3 * times[-1],
            "rss_mib": rss_bytes() / MIB, "peak_rss_mib": peak_rss_bytes() / MIB, "load_s": load_s,
            "first_logits": first[:16].tolist(), "first_argmax": int(first.argmax())}


def export(spec: dict) -> dict:
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    t0 = time.perf_counter()
    out = export_model(spec["checkpoint"], spec["out"], dtype=spec.get("dtype", "fp32"),
                       quantize=spec.get("quantize"), progress=False)
    disk = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return {"task": "export", "export_s": time.perf_counter() - t0, "disk_mib": disk / MIB,
            "rss_mib": rss_bytes() / MIB, "peak_rss_mib": peak_rss_bytes() / MIB}


def main(spec: dict) -> dict:
    task = spec.get("task", "decode")
    if task == "decode":
        return run(spec)
    if task == "export":
        return export(spec)
    if task == "vision":
        return run_vision(spec)
    raise ValueError(f"unknown worker task {task!r}; choose decode, export or vision")


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
