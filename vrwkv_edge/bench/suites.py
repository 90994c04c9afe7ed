"""``vrwkv-edge bench``: decode latency and memory against context length for every backend, prefill
throughput (chunked vs token-by-token), the Transformer comparison, speed of light, JSON + Markdown + plots.

    vrwkv-edge bench                       # full run on the 0.1B-shaped RWKV-7 (results/ by default)
    vrwkv-edge bench --quick --out DIR     # tiny sizes, for tests

How each number is made:
* weights: seeded random weights of a named shape (``--preset``); the same checkpoint file feeds every backend;
* contexts: the real state after L tokens is computed once with the chunked ``forward`` (blocks of 1024
  tokens) and saved; every RWKV backend decodes from that same state, each in a fresh worker process
  (``vrwkv_edge.bench.worker``) so resident and peak memory are that backend's alone.  The first logits of every
  backend at every context are compared with our PyTorch runtime's and the largest difference is recorded;
* the Transformer: transformers' Llama of the same depth, width and vocabulary with a KV cache of L tokens;
* speed of light: bytes of weights one decode step must read / the bandwidth the harness measured.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import torch

from ..checkpoint import save_checkpoint
from ..config import preset
from ..models import build_model
from .harness import machine_info, markdown_table, time_fn, weight_bytes_per_token, write_json

FULL = {"preset": "rwkv7-0.1b", "contexts": [1, 1024, 4096, 16384], "transformer_contexts": [1024, 4096, 16384, 24576],
        "steps": 16, "prefill_lengths": [577, 1024], "repeats": 3,
        "backends": ["torch", "torch-compile", "rwkv-pkg", "ort-fp32", "ort-fp16", "ort-int8"]}
QUICK = {"preset": "rwkv7-tiny", "contexts": [1, 64], "transformer_contexts": [64, 256], "steps": 3,
         "prefill_lengths": [40], "repeats": 1, "backends": ["torch"]}
BLOCK = 1024           # prefill block: activation memory stays bounded whatever the context
MIB = 2 ** 20


def _worker(spec: dict) -> dict:
    proc = subprocess.run([sys.executable, "-m", "vrwkv_edge.bench.worker", json.dumps(spec)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker {spec['backend']} (context {spec.get('context')}) failed:\n"
                           f"{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _states_at(model, contexts: list[int], tmp: Path, log) -> dict[int, str]:
    """Prefills a fixed token sequence once and saves the state at each context length."""
    vocab = model.cfg.vocab_size
    longest = max(contexts)
    ids = torch.tensor([[(i * 104729 + 7) % (vocab - 1) + 1 for i in range(longest)]])
    state, done, paths = model.new_state(1), 0, {}
    t0 = time.perf_counter()
    for L in sorted(set(contexts)):
        while done < L:
            n = min(BLOCK, L - done)
            _, state = model.forward(ids[:, done:done + n], state, last_only=True)
            done += n
        paths[L] = str(tmp / f"state_{L}.pt")
        torch.save(state.flat(), paths[L])
        log(f"  state after {L} tokens ({time.perf_counter() - t0:.0f} s)")
    return paths


def _prefill_suite(model, lengths: list[int], repeats: int, onnx_dirs: dict) -> list[dict]:
    rows = []
    vocab = model.cfg.vocab_size
    for T in lengths:
        ids = torch.tensor([[(i * 31 + 5) % (vocab - 1) + 1 for i in range(T)]])

        def stepwise(m=model):
            s = m.new_state(1)
            for t in range(T):
                _, s = m.step(ids[:, t], s)

        for name, fn in (("torch chunked forward", lambda: model.forward(ids, last_only=True)),
                         ("torch token-by-token step", stepwise)):
            t = time_fn(fn, repeats=repeats, warmup=1)
            rows.append({"backend": name, "tokens": T, "ms": 1e3 * t.median_s, "tokens_per_s": T / t.median_s})
        for label, d in onnx_dirs.items():
            from vrwkv_edge.export import load_onnx_model
            m = load_onnx_model(d)
            t = time_fn(lambda: m.forward(ids, last_only=True), repeats=repeats, warmup=1)
            rows.append({"backend": f"{label} prefill graph", "tokens": T, "ms": 1e3 * t.median_s,
                         "tokens_per_s": T / t.median_s})
    return rows


def _profile_step(model, top: int = 8) -> list[dict]:
    """Where a decode step of our PyTorch runtime spends its time (torch.profiler, self CPU time)."""
    from torch.profiler import ProfilerActivity, profile
    state = model.new_state(1)
    tok = torch.tensor([1])
    for _ in range(2):
        _, state = model.step(tok, state)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(4):
            _, state = model.step(tok, state)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return [{"op": e.key, "self_ms_per_step": e.self_cpu_time_total / 4e3,
             "share": e.self_cpu_time_total / total} for e in events[:top]]


def run_bench(quick: bool = False, out_dir: Optional[Path] = None, preset_name: Optional[str] = None,
              backends: Optional[list[str]] = None, log=print) -> dict:
    plan = dict(QUICK if quick else FULL)
    if preset_name:
        plan["preset"] = preset_name
    if backends:
        plan["backends"] = backends
    torch.set_grad_enabled(False)
    started = time.perf_counter()
    info = machine_info()
    cfg = preset(plan["preset"])
    model = build_model(cfg).init_random_(0).eval()
    bytes_per_token = weight_bytes_per_token(model)
    sol_tokens_per_s = info["memory_bandwidth_gbs"] * 1e9 / bytes_per_token
    log(f"bench {plan['preset']}: {model.num_parameters():,} parameters, {bytes_per_token / MIB:.0f} MiB read per "
        f"token; {info.get('cpu_model', info['processor'])}, {info['cpu_count']} cores, "
        f"{info['memory_bandwidth_gbs']} GB/s -> speed of light {sol_tokens_per_s:.1f} tokens/s")

    with tempfile.TemporaryDirectory(prefix="vrwkv-bench-") as tmp_name:
        tmp = Path(tmp_name)
        ckpt = str(save_checkpoint(model.state_dict(), tmp / "model.pth"))
        rwkv_contexts = sorted(set(plan["contexts"]) | set(plan["transformer_contexts"]))
        log("computing real states by chunked prefill:")
        states = _states_at(model, rwkv_contexts, tmp, log)

        onnx_dirs = {}
        for b in plan["backends"]:
            if b.startswith("ort-"):
                from vrwkv_edge.export import export_model
                kind = b[4:]
                d = tmp / f"onnx-{kind}"
                log(f"exporting {b} ...")
                export_model(ckpt, d, dtype="fp16" if kind == "fp16" else "fp32",
                             quantize="int8" if kind == "int8" else None)
                onnx_dirs[b] = str(d)

        decode = []
        for b in plan["backends"]:
            # torch.compile costs a minute of C++ compilation per process: measure it at one context only.
            contexts = plan["contexts"][-1:] if b == "torch-compile" else plan["contexts"]
            for L in contexts:
                spec = {"backend": "ort" if b.startswith("ort-") else b, "checkpoint": ckpt, "state": states[L],
                        "steps": plan["steps"], "context": L, "version": cfg.version,
                        "vocab_size": cfg.vocab_size, "onnx_dir": onnx_dirs.get(b)}
                r = _worker(spec)
                r["backend"] = b
                decode.append(r)
                log(f"  decode {b:>13} @ {L:>6}: {r['ms_per_token']:8.2f} ms/token, RSS {r['rss_mib']:7.0f} MiB")
        reference = {r["context"]: r["first_logits"] for r in decode if r["backend"] == "torch"}
        for r in decode:
            ref = reference.get(r["context"])
            if ref is not None:
                r["max_abs_diff_vs_torch"] = max(abs(a - b) for a, b in zip(r.pop("first_logits"), ref))
            r["tokens_per_s"] = 1e3 / r["ms_per_token"]
            r["fraction_of_speed_of_light"] = r["tokens_per_s"] / sol_tokens_per_s

        comparison = []
        for L in plan["transformer_contexts"]:
            for b in ("torch", "llama"):
                spec = {"backend": b, "checkpoint": ckpt, "state": states[L], "steps": plan["steps"], "context": L,
                        "config": json.loads(cfg.to_json()), "version": cfg.version}
                r = _worker(spec)
                r.pop("first_logits", None)
                r["model"] = "RWKV-7 (vrwkv_edge)" if b == "torch" else "Llama + KV cache (transformers)"
                comparison.append(r)
                log(f"  compare {b:>6} @ {L:>6}: {r['ms_per_token']:8.2f} ms/token, RSS {r['rss_mib']:7.0f} MiB")

        log("prefill: chunked vs token-by-token")
        prefill = _prefill_suite(model, plan["prefill_lengths"], plan["repeats"],
                                 {k: v for k, v in onnx_dirs.items() if k == "ort-fp32"})
        profile = _profile_step(model)

    results = {"benchmark": "vrwkv-edge bench", "quick": quick, "preset": plan["preset"],
               "config": json.loads(cfg.to_json()), "parameters": model.num_parameters(), "machine": info,
               "weight_bytes_per_token": bytes_per_token, "speed_of_light_tokens_per_s": sol_tokens_per_s,
               "decode": decode, "transformer_comparison": comparison, "prefill": prefill,
               "decode_profile_torch": profile, "plan": plan,
               "command": "vrwkv-edge bench" + (" --quick" if quick else ""),
               "wall_s": time.perf_counter() - started}
    results["tables"] = tables(results)
    if out_dir is not None:
        out_dir = Path(out_dir)
        stem = "bench_quick" if quick else "bench"
        write_json(out_dir / f"{stem}.json", results)
        (out_dir / f"{stem}.md").write_text(render_markdown(results))
        from .plots import plot_all
        plot_all(results, out_dir, stem)
        log(f"wrote {out_dir}/{stem}.json, {stem}.md and plots")
    return results


def tables(r: dict) -> dict:
    dec = markdown_table([{"backend": x["backend"], "context": x["context"], "ms/token": x["ms_per_token"],
                           "tokens/s": x["tokens_per_s"], "% speed of light": 100 * x["fraction_of_speed_of_light"],
                           "RSS MiB": x["rss_mib"], "max |Δlogit| vs torch": x.get("max_abs_diff_vs_torch", "")}
                          for x in r["decode"]])
    cmp_rows = []
    for x in r["transformer_comparison"]:
        cmp_rows.append({"model": x["model"], "context": x["context"], "ms/token": x["ms_per_token"],
                         "RSS MiB": x["rss_mib"], "peak RSS MiB": x["peak_rss_mib"] if x["peak_rss_mib"] is not None else "n/a"})
    pre = markdown_table([{"backend": x["backend"], "tokens": x["tokens"], "ms": x["ms"],
                           "tokens/s": x["tokens_per_s"]} for x in r["prefill"]])
    prof = markdown_table([{"op": x["op"], "ms/step": x["self_ms_per_step"], "share": f"{100 * x['share']:.1f}%"}
                           for x in r["decode_profile_torch"]])
    return {"decode": dec, "transformer_comparison": markdown_table(cmp_rows), "prefill": pre, "profile": prof}


def render_markdown(r: dict) -> str:
    m = r["machine"]
    return "\n".join([
        f"# vrwkv-edge bench: {r['preset']} ({r['parameters']:,} parameters, random weights)", "",
        f"Machine: {m.get('cpu_model', m['processor'])}, {m['cpu_count']} cores, torch {m['torch']}, measured "
        f"bandwidth {m['memory_bandwidth_gbs']} GB/s. Speed of light: {r['weight_bytes_per_token'] / MIB:.0f} MiB "
        f"of weights per token -> {r['speed_of_light_tokens_per_s']:.1f} tokens/s. Command: `{r['command']}` "
        f"({r['wall_s'] / 60:.1f} min).", "",
        "## Decode latency against context", "", r["tables"]["decode"], "",
        "## RWKV vs a Transformer with a KV cache (same depth, width, vocabulary)", "",
        r["tables"]["transformer_comparison"], "",
        "## Prefill throughput", "", r["tables"]["prefill"], "",
        "## Where a PyTorch decode step spends its time (torch.profiler, self CPU)", "", r["tables"]["profile"], ""])


def add_bench_cli(subparsers) -> None:
    p = subparsers.add_parser("bench", help="latency, throughput and memory against context length and peers")
    p.add_argument("--quick", action="store_true", help="tiny sizes (seconds)")
    p.add_argument("--preset", default=None, help="model shape (vrwkv_edge.config.PRESETS)")
    p.add_argument("--backends", default=None,
                   help="comma list of torch,torch-compile,rwkv-pkg,ort-fp32,ort-fp16,ort-int8")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.set_defaults(func=lambda a: run_bench(a.quick, a.out, a.preset, a.backends.split(",") if a.backends else None,
                                            log=lambda s: print(s, file=sys.stderr, flush=True)) and 0)
