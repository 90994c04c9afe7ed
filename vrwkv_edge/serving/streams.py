"""Many concurrent streams on one model: aggregate tokens/s and per-stream latency against the number of
streams, through the :class:`~vrwkv_edge.serving.batcher.ContinuousBatcher` (``vrwkv-edge bench``'s streams
suite and ``benchmarks/bench_serving.py``).

For ``N`` streams: ``N`` sequences with different prompts are admitted and prefilled (not timed), then every
engine step (sampling ``N`` rows + one batched decode step of ``N`` rows, what a server does per step) is timed
``steps`` times after ``warmup`` steps.  Aggregate throughput = ``N`` / median step time; per-stream latency =
the step time (each stream gets one token per step).  Also reported: the recurrent state one stream holds
(fixed, whatever the context) against the KV cache of a Transformer of the same depth and width.
"""
from __future__ import annotations

import statistics
import time
from typing import Sequence

from vrwkv_edge.generation import SamplingParams
from vrwkv_edge.protocol import LanguageModel

from .batcher import ContinuousBatcher

STREAMS = (1, 2, 4, 8, 16, 32)
KV_CONTEXTS = (1024, 4096, 16384)
MIB = 2 ** 20


def state_bytes_per_stream(cfg) -> int:
    """Bytes of one stream's state (float32): per layer two token shifts [C] and the WKV matrix [H, N, N]."""
    return 4 * cfg.n_layer * (2 * cfg.n_embd + cfg.n_head * cfg.head_size * cfg.head_size)


def kv_cache_bytes_per_stream(cfg, context: int, bytes_per_value: int = 4) -> int:
    """A Transformer of the same depth and width with full multi-head attention: keys and values of every layer
    for every token of the context."""
    return 2 * cfg.n_layer * cfg.n_embd * context * bytes_per_value


def memory_rows(cfg, contexts: Sequence[int] = KV_CONTEXTS) -> dict:
    state = state_bytes_per_stream(cfg)
    return {"state_mib_per_stream": state / MIB,
            "kv_cache_mib_per_stream": {str(L): kv_cache_bytes_per_stream(cfg, L) / MIB for L in contexts},
            "kv_cache_note": "fp32 keys and values, every layer, full multi-head attention (no GQA), same depth and "
                             "width as the RWKV model"}


def _prompt(i: int, n: int, vocab: int) -> list[int]:
    return [(i * 7919 + k * 104729 + 3) % (vocab - 1) + 1 for k in range(n)]


def measure_streams(model: LanguageModel, streams: Sequence[int] = STREAMS, *, steps: int = 16, warmup: int = 2,
                    prompt_tokens: int = 16, label: str = "") -> list[dict]:
    """One row per stream count (module docstring)."""
    if steps < 1 or warmup < 0 or prompt_tokens < 1:
        raise ValueError(f"steps >= 1, warmup >= 0 and prompt_tokens >= 1 needed, got {steps}, {warmup}, "
                         f"{prompt_tokens}")
    vocab = model.cfg.vocab_size
    rows = []
    for n in streams:
        b = ContinuousBatcher(model, max_batch=n, prefill_per_step=n)
        params = SamplingParams.greedy(max_new_tokens=warmup + steps + 2, stop_tokens=())
        for i in range(n):
            b.submit(_prompt(i, prompt_tokens, vocab), params)
        t0 = time.perf_counter()
        b.step()                                   # admits and prefills all n, then the first decode step
        prefill_s = time.perf_counter() - t0
        if b.running != n:
            raise RuntimeError(f"streams {n}: only {b.running} sequences joined the batch")
        for _ in range(warmup):
            b.step()
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            events = b.step()
            times.append(time.perf_counter() - t0)
            if len(events) != n:
                raise RuntimeError(f"streams {n}: a step produced {len(events)} tokens")
        med = statistics.median(times)
        rows.append({"backend": label, "streams": n, "steps": steps, "step_ms_median": 1e3 * med,
                     "step_ms_min": 1e3 * min(times), "step_ms_max": 1e3 * max(times),
                     "aggregate_tokens_per_s": n / med, "per_stream_tokens_per_s": 1 / med,
                     "per_stream_latency_ms": 1e3 * med, "admit_and_prefill_s": prefill_s})
    return rows
