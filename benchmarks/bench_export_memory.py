"""Constant memory: 16,384 decode tokens through ONNX Runtime (CPU) with resident memory and per-token latency
sampled along the way; both must stay flat (the state is fixed-size, nothing grows with the context).

    python benchmarks/bench_export_memory.py          # full: writes benchmarks/results/export_memory.{json,png}
    python benchmarks/bench_export_memory.py --quick  # rwkv7-tiny, 2,048 tokens

Model: a random RWKV-7 of 12 layers, width 256 (4 heads of 64), FFN 1024 and the real 65,536-token vocabulary
(``--preset`` picks a named preset instead), exported fp32, batch 1, decoded from an empty state with a fixed
pseudo-random token stream.  Every ``--every`` tokens the process's resident set size (psutil) and the median
(and mean) per-token latency of the window are recorded (the median resists spikes from other jobs on a shared
machine).  A control stream is timed alongside: every ``--control-every`` tokens one step of the same graph from
a short context (reset every ``--control-reset`` steps), so a change in the machine's load, which moves both
series, can be told apart from a dependence on the context length, which would move only the long one.  After
the warm-up (``--warmup`` tokens: allocator and thread pools settle) the acceptance is: RSS growth <= 1 %
(largest RSS after warm-up vs RSS at the end of warm-up) and the per-token latency relative to the control
drifting by <= 10 % between the first and the last 10 % of the windows.
"""
from __future__ import annotations

import argparse
import gc
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil
import torch

from vrwkv_edge.bench.harness import finish_info, run_header, machine_info, save_figure, write_json
from vrwkv_edge.config import RWKVConfig, preset
from vrwkv_edge.export import export_model, load_onnx_model
from vrwkv_edge.models import build_model

RESULTS = Path(__file__).resolve().parent / "results"

MID = RWKVConfig("x070", 12, 256, 64, 65536, 1024, {"w": 32, "a": 32, "v": 32, "g": 64})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--preset", default=None)
    ap.add_argument("--tokens", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--every", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--control-every", type=int, default=4, help="one control step every N tokens")
    ap.add_argument("--control-reset", type=int, default=64, help="control context length (control steps)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    n_tokens = args.tokens or (2048 if args.quick else 16384)
    warmup = args.warmup or (256 if args.quick else 1024)
    every = args.every or (64 if args.quick else 128)
    threads = args.threads or torch.get_num_threads()
    control_every, control_reset = args.control_every, args.control_reset
    out = args.out or RESULTS / ("export_memory_quick.json" if args.quick else "export_memory.json")
    torch.set_grad_enabled(False)
    if args.preset or args.quick:
        name = args.preset or "rwkv7-tiny"
        cfg = preset(name)
    else:
        name, cfg = "rwkv7-12x256 (vocab 65536)", MID
    info = machine_info(bandwidth=False)
    proc = psutil.Process()

    work = Path(tempfile.mkdtemp(prefix="bench_export_memory-"))
    try:
        model = build_model(cfg).init_random_(0).eval()
        n_params = model.num_parameters()
        d = export_model(model, work / "m", embeds=False, progress=False)
        del model
        gc.collect()
        om = load_onnx_model(d, threads=threads)
        vocab = om.cfg.vocab_size
        print(f"{name}: {n_params:,} parameters; decoding {n_tokens} tokens; load {info['load_average_at_start']}",
              file=sys.stderr)
        state = om.new_state(1)
        state_bytes = sum(t.numel() * t.element_size() for t in state.flat())
        samples = []
        window, control_window = [], []
        control = om.new_state(1)
        t_start = time.perf_counter()
        for i in range(n_tokens):
            ids = torch.tensor([(i * 7919 + 17) % vocab])
            t0 = time.perf_counter()
            _, state = om.step(ids, state)
            window.append(time.perf_counter() - t0)
            if i % control_every == 0:
                # control: the same graph from a short context (reset every `control_reset` of its steps),
                # timed at the same moments, so a load change on a shared machine shows in both series
                if (i // control_every) % control_reset == 0:
                    control = om.new_state(1)
                t0 = time.perf_counter()
                _, control = om.step(ids, control)
                control_window.append(time.perf_counter() - t0)
            if (i + 1) % every == 0:
                med, cmed = statistics.median(window), statistics.median(control_window)
                samples.append({"tokens": i + 1, "rss_MB": round(proc.memory_info().rss / 2 ** 20, 2),
                                "ms_per_token": round(med * 1000, 4),
                                "mean_ms_per_token": round(statistics.fmean(window) * 1000, 4),
                                "control_ms_per_token": round(cmed * 1000, 4),
                                "ratio_to_control": round(med / cmed, 4)})
                window, control_window = [], []
                if (i + 1) % (every * 32) == 0:
                    print(f"  {i + 1:6d} tokens  rss {samples[-1]['rss_MB']:.1f} MB  "
                          f"{samples[-1]['ms_per_token']:.3f} ms/token (control "
                          f"{samples[-1]['control_ms_per_token']:.3f})", file=sys.stderr)
        total_s = time.perf_counter() - t_start
    finally:
        shutil.rmtree(work, ignore_errors=True)

    after = [s for s in samples if s["tokens"] > warmup]
    base = [s for s in samples if s["tokens"] <= warmup][-1]["rss_MB"]
    peak = max(s["rss_MB"] for s in after)
    growth = (peak - base) / base
    final_growth = (after[-1]["rss_MB"] - base) / base
    k = max(1, len(after) // 10)
    lat_first = statistics.fmean(s["ms_per_token"] for s in after[:k])
    lat_last = statistics.fmean(s["ms_per_token"] for s in after[-k:])
    lat_ratio = lat_last / lat_first
    rel_first = statistics.fmean(s["ratio_to_control"] for s in after[:k])
    rel_last = statistics.fmean(s["ratio_to_control"] for s in after[-k:])
    rel_drift = rel_last / rel_first
    passed = growth <= 0.01 and 0.9 <= rel_drift <= 1.1
    summary = {"rss_MB_after_warmup": base, "rss_MB_peak_after_warmup": peak, "rss_MB_final": after[-1]["rss_MB"],
               "rss_growth_after_warmup": round(growth, 5), "rss_growth_final": round(final_growth, 5),
               "latency_ms_first_10pct": round(lat_first, 4), "latency_ms_last_10pct": round(lat_last, 4),
               "latency_ratio_last_over_first": round(lat_ratio, 4),
               "ratio_to_control_first_10pct": round(rel_first, 4), "ratio_to_control_last_10pct": round(rel_last, 4),
               "ratio_to_control_drift": round(rel_drift, 4),
               "median_ms_per_token": round(statistics.median(s["ms_per_token"] for s in after), 4),
               "total_s": round(total_s, 1), "state_bytes": state_bytes,
               "criteria": "rss growth <= 1% after warm-up; per-token latency relative to the short-context "
                           "control (same graph, timed alongside) drifts <= 10% from the first to the last 10% "
                           "of the run; the absolute latency is reported too but follows the machine's load",
               "passed": passed}
    result = {**run_header("bench_export_memory"),
              "model": {"name": name, "config": cfg.__dict__ | {"lora": dict(cfg.lora)}, "parameters": n_params,
                        "export": "fp32, decode.onnx, CPUExecutionProvider", "threads": threads},
              "tokens": n_tokens, "warmup_tokens": warmup, "sample_every": every, "summary": summary,
              "samples": samples, "environment": finish_info(info)}
    write_json(out, result)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    xs = [s["tokens"] for s in samples]
    a1.plot(xs, [s["rss_MB"] for s in samples], color="tab:blue")
    a1.axvline(warmup, color="gray", ls=":", lw=1)
    a1.axhline(base * 1.01, color="tab:red", ls="--", lw=1, label="+1 % of post-warm-up RSS")
    a1.set_ylabel("resident memory (MB)")
    lo, hi = min(s["rss_MB"] for s in samples), max(s["rss_MB"] for s in samples)
    a1.set_ylim(min(lo, base) * 0.98, max(hi, base * 1.01) * 1.01)
    a1.legend(loc="lower right")
    a1.set_title(f"ONNX Runtime decode, {name}: {n_tokens:,} tokens (growth {100 * growth:.2f} %)")
    a2.plot(xs, [s["ms_per_token"] for s in samples], color="tab:green", lw=0.9,
            label="context = tokens decoded")
    a2.plot(xs, [s["control_ms_per_token"] for s in samples], color="tab:orange", lw=0.9, ls="--",
            label=f"control: context <= {control_reset}, same moments")
    a2.legend(loc="lower right")
    a2.axvline(warmup, color="gray", ls=":", lw=1)
    a2.set_ylabel(f"ms / token (median of {every})")
    a2.set_xlabel("tokens decoded (context length)")
    a2.set_ylim(0, max(max(s["ms_per_token"], s["control_ms_per_token"]) for s in samples) * 1.15)
    save_figure(fig, out.with_suffix(".png"))
    print(f"RSS {base:.1f} -> peak {peak:.1f} MB after warm-up ({100 * growth:+.3f} %); latency "
          f"{lat_first:.3f} -> {lat_last:.3f} ms/token (x{lat_ratio:.3f}), relative to the control "
          f"x{rel_drift:.3f}; {'PASS' if passed else 'FAIL'}")
    print(f"wrote {out} and {out.with_suffix('.png')}", file=sys.stderr)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
