"""``vrwkv-edge bench``: decode latency and memory against context length for every backend, prefill
throughput (chunked vs token-by-token), the Transformer comparison, speed of light, vision tower latency, time
to first token of an image question; JSON + Markdown + plots.

    vrwkv-edge bench                                   # full run on the 0.1B-shaped RWKV-7 -> results/bench.*
    vrwkv-edge bench --preset rwkv7-1.5b --skip transformer,towers,ttft     # -> bench_rwkv7-1.5b.*
    vrwkv-edge bench --quick --out DIR                 # tiny sizes, for tests -> bench_quick.*

Large presets (measured with reduced runs, ``--contexts 1 --steps 2 --repeats 1``, on a 2-core 24 GiB machine):
rwkv7-0.4b runs every backend (its int8 export peaks at 11.4 GiB); for rwkv7-1.5b and rwkv6-1.6b the fp32
export peaks at 19-20 GiB and the int8 export was killed by the out-of-memory killer (over 21 GiB), so leave
``ort-int8`` out there; an ONNX Runtime worker holds about twice the weights (decode and prefill graphs).  The
token-by-token prefill rows cost ``sum(prefill_lengths)`` decode steps per run (0.3 s each at 1.5B): ``--skip
stepwise``.  A failed measurement is recorded in ``results["failures"]`` and the run goes on (exit status 1).

Output files: ``bench`` for the default preset, ``bench_<preset>`` for another (``bench_quick[_<preset>]`` with
``--quick``), so runs of different presets never overwrite each other; ``results["command"]`` is the command
that reproduces the run (preset and backends always spelled out).

How each number is made:
* weights: seeded random weights of a named shape (``--preset``); the same checkpoint file feeds every backend;
* contexts: the real state after L tokens is computed once with the chunked ``forward`` (blocks of 1024
  tokens) and saved; every RWKV backend decodes from that same state, each in a fresh worker process
  (``vrwkv_edge.bench.worker``) so resident and peak memory (VmHWM) are that backend's alone.  The first logits
  of every backend at every context are compared with our PyTorch runtime's and the largest difference is
  recorded;
* the Transformer: transformers' Llama of the same depth, width and vocabulary with a KV cache of L tokens;
* speed of light: bytes of weights one decode step must read / the bandwidth the harness measured;
* vision (``vrwkv_edge.bench.vision``, in worker processes): each tower family's batch-1 forward, and the time
  to first token of a VisualRWKV v6 answering a question about a photo, stage by stage and with the image state
  cached.
* memory: the parent process builds the model once, uses it for the states, the prefill suite and the profile,
  then frees it before the ONNX exports and the decode workers run (each export in its own process too), so a
  large preset never holds two copies of its weights at once; every worker records the parent's resident size
  when it started, and ``results["memory"]`` the most the machine needed at once.
"""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import torch

from vrwkv_edge.export import load_onnx_model

from ..checkpoint import save_checkpoint
from ..config import LM_PRESETS, preset
from ..loading import load_model
from ..models import build_model
from ..serving.streams import STREAMS, measure_streams, memory_rows
from .harness import (machine_info, markdown_table, peak_rss_bytes, release_memory, rss_bytes, time_fn,
                      weight_bytes_per_token, write_json)
from .plots import plot_all
from .vision import QUESTION, TTFT_STAGES, synthetic_photo, tower_label, ttft_lm_config

BACKENDS = ["torch", "torch-compile", "rwkv-pkg", "ort-fp32", "ort-fp16", "ort-int8"]
# Suites --skip can leave out: "decode" (every backend's decode and the step profile), "transformer" (the Llama
# comparison), "prefill" (the whole prefill suite), "stepwise" (only its token-by-token rows, which cost
# ~prefill_lengths decode steps per run: minutes per run for a 1.5B model), "towers", "ttft", "streams" (aggregate
# tokens/s against concurrent streams through the continuous batcher, vrwkv_edge.serving.streams).
SKIPPABLE = ("decode", "transformer", "prefill", "stepwise", "towers", "ttft", "streams")
# Tower jobs: the families VisualRWKV uses at their released sizes; Vision-RWKV at 224 (its training size) and
# 448 px (4x the tokens: its linear cost in tokens is what makes higher resolutions affordable on the edge).
FULL_TOWERS = [
    {"family": "clip", "shape": "openai/clip-vit-large-patch14-336"},
    # ~0.8B parameters, tens of seconds per forward on a small CPU: one timed forward after the warm-up
    {"family": "sam_dino_siglip", "shape": "released", "max_repeats": 1},
] + [{"family": "vrwkv", "shape": arch, "resolution": px} for arch in ("vrwkv_t", "vrwkv_s") for px in (224, 448)]
QUICK_TOWERS = [{"family": "clip", "shape": "tiny"}, {"family": "sam_dino_siglip", "shape": "tiny"},
                {"family": "vrwkv", "shape": "tiny", "resolution": 64},
                {"family": "vrwkv", "shape": "tiny", "resolution": 128}]
FULL = {"preset": "rwkv7-0.1b", "contexts": [1, 1024, 4096, 16384], "transformer_contexts": [1024, 4096, 16384, 24576],
        "steps": 16, "prefill_lengths": [577, 1024], "repeats": 3, "backends": BACKENDS,
        # VisualRWKV v6.0 = RWKV-6 + CLIP ViT-L/14-336; a 0.1B-shaped LM keeps the TTFT run short (the released
        # 1.6B shape: --ttft-lm rwkv6-1.6b)
        "towers": FULL_TOWERS, "ttft_lm": "rwkv6-0.1b", "ttft_clip": "openai/clip-vit-large-patch14-336",
        "vision_worker_per_job": True,       # one process per tower / TTFT: each one's memory is its own
        "streams": list(STREAMS), "stream_steps": 16,
        "threads": None, "skip": []}         # threads None: torch's default (all cores)
QUICK = {"preset": "rwkv7-tiny", "contexts": [1, 64], "transformer_contexts": [64, 256], "steps": 3,
         "prefill_lengths": [40], "repeats": 1, "backends": ["torch"],
         "towers": QUICK_TOWERS, "ttft_lm": "tiny", "ttft_clip": "tiny",      # = vrwkv_edge.visualrwkv.builders.tiny_v6
         "vision_worker_per_job": False,     # one process for all: a process start costs more than the tiny runs
         # one thread: for tiny ops OpenMP threads only add synchronisation, which costs 100x on a busy machine
         # streams: none unless asked for (--streams 1,2,4): a quick run stays what it was
         "streams": [], "stream_steps": 3,
         "threads": 1, "skip": []}
# run_bench keyword overrides of plan entries and the flags that set them (for the recorded command)
OPTION_FLAGS = {"contexts": "--contexts", "steps": "--steps", "repeats": "--repeats", "skip": "--skip",
                "threads": "--threads", "ttft_lm": "--ttft-lm", "streams": "--streams"}
BLOCK = 1024           # prefill block: activation memory stays bounded whatever the context
MIB = 2 ** 20


def output_stem(quick: bool, preset_name: str) -> str:
    """``bench`` / ``bench_quick`` for the plan's own preset, ``bench[_quick]_<preset>`` for any other."""
    base, default = ("bench_quick", QUICK["preset"]) if quick else ("bench", FULL["preset"])
    return base if preset_name == default else f"{base}_{preset_name}"


def cli_command(quick: bool, plan: dict, overrides: dict) -> str:
    """The ``vrwkv-edge bench`` command that reproduces a run (the output folder aside)."""
    parts = ["vrwkv-edge", "bench"] + (["--quick"] if quick else [])
    parts += ["--preset", plan["preset"], "--backends", ",".join(plan["backends"])]
    for key, flag in OPTION_FLAGS.items():
        v = overrides.get(key)
        if v is not None and v != []:
            parts += [flag, ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)]
    return shlex.join(parts)


def make_plan(quick: bool, preset_name: Optional[str], backends: Optional[list[str]], overrides: dict) -> dict:
    plan = dict(QUICK if quick else FULL)
    unknown = set(overrides) - set(OPTION_FLAGS)
    if unknown:
        raise TypeError(f"run_bench: unknown options {sorted(unknown)}; known: {sorted(OPTION_FLAGS)}")
    plan.update({k: v for k, v in overrides.items() if v is not None})
    if preset_name:
        preset(preset_name)                                          # a clear error for an unknown name
        plan["preset"] = preset_name
    if backends:
        plan["backends"] = list(backends)
    bad = [b for b in plan["backends"] if b not in BACKENDS]
    if bad:
        raise ValueError(f"unknown backend(s) {bad}; choose from {','.join(BACKENDS)}")
    bad = [x for x in plan["skip"] if x not in SKIPPABLE]
    if bad:
        raise ValueError(f"--skip: unknown suite(s) {bad}; choose from {','.join(SKIPPABLE)}")
    if "ttft" not in plan["skip"] or "towers" not in plan["skip"]:
        ttft_lm_config(plan["ttft_lm"])                              # fail now, not after the decode suites
    return plan


class WorkerError(RuntimeError):
    pass


def _worker(spec: dict) -> dict:
    """Runs one measurement in a fresh ``python -m vrwkv_edge.bench.worker`` process; adds the parent's resident
    size at that moment (parent + the worker's peak = what the machine needed at once)."""
    parent_rss = rss_bytes() / MIB
    proc = subprocess.run([sys.executable, "-m", "vrwkv_edge.bench.worker", json.dumps(spec)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        what = spec.get("backend") or spec.get("task")
        why = (f"killed by signal {-proc.returncode}" + (" (SIGKILL: most often the kernel's out-of-memory killer)"
                                                         if proc.returncode == -9 else "")
               if proc.returncode < 0 else f"exit status {proc.returncode}")
        raise WorkerError(f"benchmark worker {what} (context {spec.get('context')}) failed, {why}:\n"
                          f"{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["parent_rss_mib"] = parent_rss
    return out


def _try_worker(spec: dict, what: str, failures: list, log) -> Optional[dict]:
    """:func:`_worker`, but a failed measurement (e.g. a large preset's export running out of memory) is recorded
    in ``failures`` and the run goes on, so an hour of other results is not lost with it."""
    try:
        return _worker(spec)
    except WorkerError as e:
        msg = str(e)
        failures.append({"what": what, "error": msg[-2000:]})
        log(f"  FAILED {what}: {msg.splitlines()[0]}")
        return None


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
        # clone: the token-shift states are views into the last block's activations, and torch.save writes a
        # view's whole storage (77 MB instead of 2.4 MB at 0.1B, loaded into -- and peaking -- every worker)
        torch.save([t.clone() for t in state.flat()], paths[L])
        log(f"  state after {L} tokens ({time.perf_counter() - t0:.0f} s)")
    return paths


def _prefill_ids(T: int, vocab: int) -> torch.Tensor:
    return torch.tensor([[(i * 31 + 5) % (vocab - 1) + 1 for i in range(T)]])


def _prefill_suite(model, lengths: list[int], repeats: int, stepwise: bool) -> list[dict]:
    """Our PyTorch runtime: chunked forward and (unless skipped) token-by-token step."""
    rows = []
    for T in lengths:
        ids = _prefill_ids(T, model.cfg.vocab_size)

        def by_step(m=model):
            s = m.new_state(1)
            for t in range(T):
                _, s = m.step(ids[:, t], s)

        fns = [("torch chunked forward", lambda: model.forward(ids, last_only=True), 1)]
        if stepwise:
            # no warm-up run: its first of T steps warms up the rest, and a whole extra run costs T decode steps
            fns.append(("torch token-by-token step", by_step, 0))
        for name, fn, warmup in fns:
            t = time_fn(fn, repeats=repeats, warmup=warmup)
            rows.append({"backend": name, "tokens": T, "ms": 1e3 * t.median_s, "tokens_per_s": T / t.median_s})
    return rows


def _ort_prefill_suite(onnx_dirs: dict, lengths: list[int], repeats: int, vocab: int) -> list[dict]:
    rows = []
    for label, d in onnx_dirs.items():
        m = load_onnx_model(d)
        for T in lengths:
            ids = _prefill_ids(T, vocab)
            t = time_fn(lambda: m.forward(ids, last_only=True), repeats=repeats, warmup=1)
            rows.append({"backend": f"{label} prefill graph", "tokens": T, "ms": 1e3 * t.median_s,
                         "tokens_per_s": T / t.median_s})
        del m
        release_memory()
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


def _streams_suite(plan: dict, ckpt: str, onnx_dirs: dict, log) -> list[dict]:
    """Aggregate tokens/s and per-stream latency against concurrent streams, per backend (torch and the ORT
    exports made for the run), in this process, one backend loaded at a time."""
    rows = []
    for b in plan["backends"]:
        if b not in ("torch", *onnx_dirs):
            continue
        model = load_model(ckpt) if b == "torch" else load_onnx_model(onnx_dirs[b])
        for r in measure_streams(model, plan["streams"], steps=plan["stream_steps"], label=b):
            rows.append(r)
            log(f"  {b:>9} x {r['streams']:>3} streams: {r['aggregate_tokens_per_s']:8.1f} tokens/s, "
                f"{r['per_stream_latency_ms']:7.1f} ms/token per stream")
        del model
        release_memory()
    return rows


def _vision_suites(plan: dict, tmp: Path, log, failures: list) -> tuple[list[dict], Optional[dict]]:
    """Tower latency and TTFT in worker processes: one per job (full) or one for all (quick)."""
    towers = [] if "towers" in plan["skip"] else list(plan["towers"])
    ttft = None
    if "ttft" not in plan["skip"]:
        ttft = {"lm": plan["ttft_lm"], "clip": plan["ttft_clip"], "question": QUESTION,
                "image": str(synthetic_photo(tmp / "photo.jpg"))}
    base = {"task": "vision", "repeats": plan["repeats"], "warmup": 1, "threads": plan["threads"],
            # tower projectors map into the TTFT LM's width, as in that VisualRWKV
            "n_embd": ttft_lm_config(plan["ttft_lm"]).n_embd}
    if plan["vision_worker_per_job"]:
        specs = [dict(base, towers=[job]) for job in towers] + ([dict(base, ttft=ttft)] if ttft else [])
    else:
        specs = [dict(base, towers=towers, ttft=ttft)] if towers or ttft else []
    rows, ttft_result = [], None
    for spec in specs:
        what = ", ".join([f"tower {tower_label(j)}" for j in spec.get("towers", [])]
                         + (["ttft"] if spec.get("ttft") else []))
        r = _try_worker(spec, what, failures, log)
        if r is None:
            continue
        for row in r["towers"]:
            row["parent_rss_mib"] = r["parent_rss_mib"]
            rows.append(row)
            log(f"  tower {row['tower']} @ {row['input_px']} px: {row['ms']:9.1f} ms, peak RSS "
                f"{row['peak_rss_mib']:6.0f} MiB")
        if r["ttft"]:
            ttft_result = dict(r["ttft"], parent_rss_mib=r["parent_rss_mib"])
            log(f"  TTFT {ttft_result['ttft']['median_s'] * 1e3:.0f} ms, image state cached "
                f"{ttft_result['ttft_cached']['median_s'] * 1e3:.0f} ms")
    return rows, ttft_result


def _memory_summary(parent_peak: float, rows: list[dict]) -> dict:
    """The most memory the run needed at once: the parent's own peak, or a worker's peak plus the parent's
    resident size while that worker ran."""
    worst = max(rows, key=lambda r: r["parent_rss_mib"] + r["peak_rss_mib"], default=None)
    need = max(parent_peak, worst["parent_rss_mib"] + worst["peak_rss_mib"] if worst else 0)
    return {"parent_peak_rss_mib": parent_peak, "machine_peak_mib": need,
            "largest_worker": None if worst is None else
            {k: worst.get(k) for k in ("what", "peak_rss_mib", "parent_rss_mib")}}


def run_bench(quick: bool = False, out_dir: Optional[Path] = None, preset_name: Optional[str] = None,
              backends: Optional[list[str]] = None, log=print, *, command: Optional[str] = None,
              **overrides) -> dict:
    """Runs the plan (``QUICK`` or ``FULL``, with ``preset_name``, ``backends`` and ``overrides`` of
    ``OPTION_FLAGS``' keys: contexts, steps, repeats, skip, threads, ttft_lm); writes ``<stem>.json``, ``.md``
    and plots to ``out_dir`` if given.  ``command``: the command line to record (default: rebuilt from the
    arguments)."""
    plan = make_plan(quick, preset_name, backends, overrides)
    skip = set(plan["skip"]) | (set() if plan["streams"] else {"streams"})
    command = command or cli_command(quick, plan, overrides)
    grad, threads = torch.is_grad_enabled(), torch.get_num_threads()
    torch.set_grad_enabled(False)
    if plan["threads"]:
        torch.set_num_threads(int(plan["threads"]))
    try:
        return _run(plan, skip, quick, out_dir, command, log)
    finally:                                 # the caller's process (e.g. a test session) gets its settings back
        torch.set_grad_enabled(grad)
        torch.set_num_threads(threads)


def _run(plan: dict, skip: set, quick: bool, out_dir: Optional[Path], command: str, log) -> dict:
    started = time.perf_counter()
    info = machine_info()
    cfg = preset(plan["preset"])
    lm_suites = not {"decode", "transformer", "prefill", "streams"} <= skip
    decode, comparison, prefill, profile, exports, failures, streams = [], [], [], [], [], [], []
    model = build_model(cfg).init_random_(0).eval()
    n_params = model.num_parameters()
    bytes_per_token = weight_bytes_per_token(model)
    sol_tokens_per_s = info["memory_bandwidth_gbs"] * 1e9 / bytes_per_token
    log(f"bench {plan['preset']}: {n_params:,} parameters, {bytes_per_token / MIB:.0f} MiB read per "
        f"token; {info.get('cpu_model', info['processor'])}, {info['cpu_count']} cores, "
        f"{info['memory_bandwidth_gbs']} GB/s -> speed of light {sol_tokens_per_s:.1f} tokens/s; "
        f"skipping {sorted(skip) or 'nothing'}")
    rwkv_label = {"x060": "RWKV-6", "x070": "RWKV-7"}[cfg.version] + " (vrwkv_edge)"

    with tempfile.TemporaryDirectory(prefix="vrwkv-bench-") as tmp_name:
        tmp = Path(tmp_name)
        if lm_suites:
            ckpt = str(save_checkpoint(model.state_dict(), tmp / "model.pth"))
            contexts = set() if "decode" in skip else set(plan["contexts"])
            contexts |= set() if "transformer" in skip else set(plan["transformer_contexts"])
            states = {}
            if contexts:
                log("computing real states by chunked prefill:")
                states = _states_at(model, sorted(contexts), tmp, log)
            if "prefill" not in skip:
                log("prefill: chunked vs token-by-token")
                prefill = _prefill_suite(model, plan["prefill_lengths"], plan["repeats"], "stepwise" not in skip)
            if "decode" not in skip:
                profile = _profile_step(model)
        # Every later suite runs in worker processes that load their own copy: free the parent's.
        del model
        release_memory()

        onnx_dirs = {}
        ort = [] if {"decode", "streams"} <= skip else [b for b in plan["backends"] if b.startswith("ort-")]
        if "prefill" not in skip and "ort-fp32" in plan["backends"] and "ort-fp32" not in ort:
            ort.append("ort-fp32")
        for b in ort:
            kind = b[4:]
            log(f"exporting {b} ...")
            d = tmp / f"onnx-{kind}"
            r = _try_worker({"task": "export", "checkpoint": ckpt, "out": str(d), "threads": plan["threads"],
                             "dtype": "fp16" if kind == "fp16" else "fp32",
                             "quantize": "int8" if kind == "int8" else None}, f"export {b}", failures, log)
            if r is not None:
                exports.append(dict(r, backend=b))
                onnx_dirs[b] = str(d)
        if "prefill" not in skip and "ort-fp32" in onnx_dirs:
            prefill += _ort_prefill_suite({"ort-fp32": onnx_dirs["ort-fp32"]}, plan["prefill_lengths"],
                                          plan["repeats"], cfg.vocab_size)
            order = {"torch chunked forward": 0, "torch token-by-token step": 1}
            prefill.sort(key=lambda r: (r["tokens"], order.get(r["backend"], 2)))

        if "decode" not in skip:
            for b in plan["backends"]:
                if b.startswith("ort-") and b not in onnx_dirs:
                    continue                                  # its export failed (recorded)
                # torch.compile costs a minute of C++ compilation per process: measure it at one context only.
                contexts = plan["contexts"][-1:] if b == "torch-compile" else plan["contexts"]
                for L in contexts:
                    spec = {"backend": "ort" if b.startswith("ort-") else b, "checkpoint": ckpt, "state": states[L],
                            "steps": plan["steps"], "context": L, "version": cfg.version, "threads": plan["threads"],
                            "vocab_size": cfg.vocab_size, "onnx_dir": onnx_dirs.get(b)}
                    r = _try_worker(spec, f"decode {b} @ {L}", failures, log)
                    if r is None:
                        continue
                    r["backend"] = b
                    decode.append(r)
                    log(f"  decode {b:>13} @ {L:>6}: {r['ms_per_token']:8.2f} ms/token, RSS {r['rss_mib']:7.0f} "
                        f"MiB, peak {r['peak_rss_mib']:7.0f} MiB")
        reference = {r["context"]: r["first_logits"] for r in decode if r["backend"] == "torch"}
        for r in decode:
            ref = reference.get(r["context"])
            first = r.pop("first_logits")
            if ref is not None:
                r["max_abs_diff_vs_torch"] = max(abs(a - b) for a, b in zip(first, ref))
            r["tokens_per_s"] = 1e3 / r["ms_per_token"]
            r["fraction_of_speed_of_light"] = r["tokens_per_s"] / sol_tokens_per_s

        if "transformer" not in skip:
            for L in plan["transformer_contexts"]:
                for b in ("torch", "llama"):
                    spec = {"backend": b, "checkpoint": ckpt, "state": states[L], "steps": plan["steps"], "context": L,
                            "config": json.loads(cfg.to_json()), "version": cfg.version, "threads": plan["threads"]}
                    r = _try_worker(spec, f"compare {b} @ {L}", failures, log)
                    if r is None:
                        continue
                    r.pop("first_logits", None)
                    r["model"] = rwkv_label if b == "torch" else "Llama + KV cache (transformers)"
                    comparison.append(r)
                    log(f"  compare {b:>6} @ {L:>6}: {r['ms_per_token']:8.2f} ms/token, RSS {r['rss_mib']:7.0f} MiB")

        if "streams" not in skip:
            log("streams: aggregate tokens/s against concurrent streams (continuous batching)")
            streams = _streams_suite(plan, ckpt, onnx_dirs, log)

        if not {"towers", "ttft"} <= skip:
            log("vision: tower latency and time to first token")
        towers, ttft = _vision_suites(plan, tmp, log, failures)

    workers = ([dict(r, what=f"decode {r['backend']} @ {r['context']}") for r in decode]
               + [dict(r, what=f"compare {r['model']} @ {r['context']}") for r in comparison]
               + [dict(r, what=f"export {r['backend']}") for r in exports]
               + [dict(r, what=f"tower {r['tower']} @ {r['input_px']}") for r in towers]
               + ([dict(ttft, what="ttft")] if ttft else []))
    results = {"benchmark": "vrwkv-edge bench", "quick": quick, "preset": plan["preset"],
               "config": json.loads(cfg.to_json()), "parameters": n_params, "machine": info,
               "weight_bytes_per_token": bytes_per_token, "speed_of_light_tokens_per_s": sol_tokens_per_s,
               "decode": decode, "transformer_comparison": comparison, "prefill": prefill,
               "decode_profile_torch": profile, "exports": exports, "vision_towers": towers, "ttft": ttft,
               "streams": {"rows": streams, "memory": memory_rows(cfg)} if streams else None,
               "memory": _memory_summary(peak_rss_bytes() / MIB, workers), "failures": failures,
               "plan": plan, "skipped": sorted(skip),
               "command": command, "wall_s": time.perf_counter() - started}
    results["tables"] = tables(results)
    if out_dir is not None:
        out_dir = Path(out_dir)
        stem = output_stem(quick, plan["preset"])
        write_json(out_dir / f"{stem}.json", results)
        (out_dir / f"{stem}.md").write_text(render_markdown(results))
        plot_all(results, out_dir, stem)
        log(f"wrote {out_dir}/{stem}.json, {stem}.md and plots")
    return results


def _na(v):
    return "n/a" if v is None else v


def tables(r: dict) -> dict:
    out = {}
    out["decode"] = markdown_table([
        {"backend": x["backend"], "context": x["context"], "ms/token": x["ms_per_token"], "tokens/s": x["tokens_per_s"],
         "% speed of light": 100 * x["fraction_of_speed_of_light"], "RSS MiB": x["rss_mib"],
         "peak RSS MiB": _na(x.get("peak_rss_mib")), "max |Δlogit| vs torch": x.get("max_abs_diff_vs_torch", "")}
        for x in r["decode"]]) if r["decode"] else ""
    out["transformer_comparison"] = markdown_table([
        {"model": x["model"], "context": x["context"], "ms/token": x["ms_per_token"], "RSS MiB": x["rss_mib"],
         "peak RSS MiB": _na(x.get("peak_rss_mib"))} for x in r["transformer_comparison"]]) \
        if r["transformer_comparison"] else ""
    out["prefill"] = markdown_table([{"backend": x["backend"], "tokens": x["tokens"], "ms": x["ms"],
                                      "tokens/s": x["tokens_per_s"]} for x in r["prefill"]]) if r["prefill"] else ""
    out["profile"] = markdown_table([{"op": x["op"], "ms/step": x["self_ms_per_step"],
                                      "share": f"{100 * x['share']:.1f}%"}
                                     for x in r["decode_profile_torch"]]) if r["decode_profile_torch"] else ""
    out["streams"] = markdown_table([
        {"backend": x["backend"], "streams": x["streams"], "aggregate tokens/s": x["aggregate_tokens_per_s"],
         "per-stream ms/token": x["per_stream_latency_ms"], "min": x["step_ms_min"], "max": x["step_ms_max"]}
        for x in r["streams"]["rows"]]) if r.get("streams") else ""
    out["exports"] = markdown_table([{"backend": x["backend"], "export s": x["export_s"], "MiB on disk": x["disk_mib"],
                                      "peak RSS MiB": x["peak_rss_mib"]} for x in r["exports"]]) if r["exports"] else ""
    out["vision_towers"] = markdown_table([
        {"tower": x["tower"], "input px": x["input_px"], "tokens": x["tokens"], "params (M)": x["parameters"] / 1e6,
         "ms (median)": x["ms"], "min": x["ms_min"], "max": x["ms_max"], "repeats": x["repeats"],
         "weights MiB": x["weights_mib"], "RSS MiB": x["rss_mib"], "peak RSS MiB": x["peak_rss_mib"]}
        for x in r["vision_towers"]]) if r["vision_towers"] else ""
    t = r["ttft"]
    if t:
        total = t["ttft_staged"]["median_s"]
        rows = [{"stage": s, "ms (median)": 1e3 * t["stages"][s]["median_s"], "min": 1e3 * t["stages"][s]["min_s"],
                 "max": 1e3 * t["stages"][s]["max_s"], "share": f"{100 * t['stages'][s]['median_s'] / total:.1f}%"}
                for s in TTFT_STAGES]
        for label, key in (("**sum of the stages**", "ttft_staged"),
                           ("**TTFT end to end** (prefill + first token)", "ttft"),
                           ("**TTFT, image state cached** (same question again)", "ttft_cached"),
                           ("of which the cache key (decode + hash the photo)", "cache_key")):
            rows.append({"stage": label, "ms (median)": 1e3 * t[key]["median_s"], "min": 1e3 * t[key]["min_s"],
                         "max": 1e3 * t[key]["max_s"], "share": ""})
        out["ttft"] = markdown_table(rows)
    else:
        out["ttft"] = ""
    return out


def _section(title: str, table: str, skipped: bool, note: str = "") -> list[str]:
    body = table if table else ("Skipped." if skipped else "Nothing measured (no backend selected).")
    return [f"## {title}", ""] + ([note, ""] if note and table else []) + [body, ""]


def render_markdown(r: dict) -> str:
    m, skipped, mem = r["machine"], set(r["skipped"]), r["memory"]
    lines = [
        f"# vrwkv-edge bench: {r['preset']} ({r['parameters']:,} parameters, random weights)", "",
        f"Machine: {m.get('cpu_model', m['processor'])}, {m['cpu_count']} cores, torch {m['torch']}, measured "
        f"bandwidth {m['memory_bandwidth_gbs']} GB/s. Speed of light: {r['weight_bytes_per_token'] / MIB:.0f} MiB "
        f"of weights per token -> {r['speed_of_light_tokens_per_s']:.1f} tokens/s. Command: `{r['command']}` "
        f"({r['wall_s'] / 60:.1f} min). Memory the run needed at once: {mem['machine_peak_mib']:.0f} MiB "
        f"(parent peak {mem['parent_peak_rss_mib']:.0f} MiB"
        + (f"; largest worker: {mem['largest_worker']['what']}, peak {mem['largest_worker']['peak_rss_mib']:.0f} MiB "
           f"while the parent held {mem['largest_worker']['parent_rss_mib']:.0f} MiB" if mem["largest_worker"] else "")
        + ").", ""]
    lines += _section("Decode latency against context", r["tables"]["decode"], "decode" in skipped,
                      "RSS: resident memory after decoding; peak RSS: the worker process's VmHWM.")
    lines += _section("RWKV vs a Transformer with a KV cache (same depth, width, vocabulary)",
                      r["tables"]["transformer_comparison"], "transformer" in skipped)
    lines += _section("Prefill throughput", r["tables"]["prefill"], "prefill" in skipped)
    sm = (r.get("streams") or {}).get("memory")
    lines += _section(
        "Concurrent streams (continuous batching)", r["tables"]["streams"], "streams" in skipped,
        "One batched decode step per engine step for every stream (prefill not timed); per-stream ms/token = the "
        "step time. " + (f"State per stream {sm['state_mib_per_stream']:.2f} MiB whatever the context; a same-shape "
                         f"Transformer's fp32 KV cache: " + ", ".join(f"{v:.0f} MiB at {k}" for k, v in
                                                                    sm["kv_cache_mib_per_stream"].items())
                         + " tokens." if sm else ""))
    if r["tables"]["exports"]:
        lines += _section("ONNX exports (each in its own process)", r["tables"]["exports"], False)
    lines += _section("Where a PyTorch decode step spends its time (torch.profiler, self CPU)", r["tables"]["profile"],
                      "decode" in skipped)
    lines += _section(
        "Vision tower latency (batch 1, fp32, random weights)", r["tables"]["vision_towers"], "towers" in skipped,
        "Median forward of `repeats` runs after one warm-up, "
        + ("each tower in its own process" if r["plan"]["vision_worker_per_job"] else
           "all towers in one process (memory not separated)")
        + "; peak RSS is the process's VmHWM during the forwards (weights included). CLIP and SAM+DINOv2+SigLIP "
        f"include their projector (to the TTFT LM's width); VRWKV rows are the backbone (`forward_tokens`).")
    t = r["ttft"]
    note = ""
    if t:
        note = (f"VisualRWKV v6: {t['lm']} RWKV-6 ({t['lm_parameters'] / 1e6:.1f}M parameters) + {t['tower']} "
                f"+ projector ({t['tower_parameters'] / 1e6:.1f}M), random weights; a {t['image']['width']}x"
                f"{t['image']['height']} {t['image']['format']} photo ({t['image_tokens']} image tokens); "
                f"prompt `{t['template']!r}` "
                f"({t['text_tokens_before_image']} text tokens before the image, {t['text_tokens_after_image']} "
                f"after; the released models' sandwich template). Median of {t['repeats']} runs after a warm-up; "
                f"peak RSS {t['peak_rss_mib']:.0f} MiB. The stages are the work of `prefill` timed one by one; the "
                f"end-to-end TTFT is `prefill(items)` + the first token. Cached: the same question about the same "
                f"image again, its state after the image served by `ImageStateCache` (the sandwich prompt puts the "
                f"question before the image, so only a repeated question prefix hits; image-first prompts hit for "
                f"any question). Same first token on every path: {t['first_tokens_agree']}.")
    lines += _section("Time to first token: an image question", r["tables"]["ttft"], "ttft" in skipped, note)
    if r["failures"]:
        lines += ["## Failed measurements", ""]
        lines += [f"* {f['what']}: {f['error'].splitlines()[0]}" for f in r["failures"]] + [""]
    return "\n".join(lines)


def _csv(kind):
    return lambda s: [kind(x) for x in s.split(",") if x]


def add_bench_cli(subparsers) -> None:
    p = subparsers.add_parser("bench", help="latency, throughput and memory against context length and peers; "
                                            "vision tower latency; time to first token of an image question")
    p.add_argument("--quick", action="store_true", help="tiny sizes (seconds)")
    p.add_argument("--preset", default=None, choices=sorted(LM_PRESETS),
                   help=f"model shape (vrwkv_edge.config.LM_PRESETS; default {FULL['preset']}, {QUICK['preset']} "
                        f"with --quick); results go to bench_<preset>.* unless it is the default")
    p.add_argument("--backends", type=_csv(str), default=None, help=f"comma list of {','.join(BACKENDS)}")
    p.add_argument("--skip", type=_csv(str), default=None,
                   help=f"comma list of suites to leave out: {','.join(SKIPPABLE)} (stepwise: only the "
                        "token-by-token prefill rows)")
    p.add_argument("--contexts", type=_csv(int), default=None, help="comma list of decode context lengths")
    p.add_argument("--steps", type=int, default=None, help="timed decode steps per worker")
    p.add_argument("--repeats", type=int, default=None, help="timed runs of prefill, towers and TTFT")
    p.add_argument("--threads", type=int, default=None, help="torch threads in every process (default: torch's)")
    p.add_argument("--streams", type=_csv(int), default=None,
                   help="comma list of concurrent stream counts (default 1,2,4,8,16,32)")
    p.add_argument("--ttft-lm", default=None, help=f"RWKV-6 preset of the TTFT VisualRWKV (default {FULL['ttft_lm']})")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.set_defaults(func=_cli)


def _cli(a) -> int:
    res = run_bench(a.quick, a.out, a.preset, a.backends, log=lambda s: print(s, file=sys.stderr, flush=True),
                    contexts=a.contexts, steps=a.steps, repeats=a.repeats, skip=a.skip, threads=a.threads,
                    ttft_lm=a.ttft_lm, streams=a.streams)
    if res["failures"]:            # the results are written; the exit status still says that some are missing
        print(f"{len(res['failures'])} measurement(s) failed: " + "; ".join(f["what"] for f in res["failures"]),
              file=sys.stderr)
        return 1
    return 0
