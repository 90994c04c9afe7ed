"""Aggregate decode tokens/s against concurrent streams (continuous batching, ``vrwkv_edge.serving``) for ONNX
Runtime fp32 and int8 exports of a 0.1B-shaped RWKV-7 with seeded random weights, and the state memory per
stream against a Transformer's KV cache.

    python benchmarks/bench_serving.py                     # -> benchmarks/results/serving.{json,md,png}
    python benchmarks/bench_serving.py --preset rwkv7-tiny --streams 1,2,4 --steps 3 --out /tmp/s   # seconds

Each backend is loaded alone (the other freed) and measured by :func:`vrwkv_edge.serving.streams.measure_streams`:
N sequences prefilled, then ``--steps`` engine steps timed (sampling N rows + one batched decode step).  The
load average is recorded at the start, before each backend and at the end: the machine may be shared.
"""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from vrwkv_edge.bench.harness import finish_info, machine_info, markdown_table, release_memory, run_header, write_json
from vrwkv_edge.bench.plots import plot_streams
from vrwkv_edge.config import preset
from vrwkv_edge.export import export_model
from vrwkv_edge.fileio import atomic_write
from vrwkv_edge.models import build_model
from vrwkv_edge.runtime.ort import OrtModel
from vrwkv_edge.serving.streams import STREAMS, measure_streams, memory_rows

HERE = Path(__file__).resolve().parent
BACKENDS = {"ort-fp32": ("fp32", None), "ort-int8": ("fp32", "int8"), "ort-fp16": ("fp16", None)}


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="rwkv7-0.1b")
    ap.add_argument("--backends", default="ort-fp32,ort-int8", help=f"comma list of {','.join(BACKENDS)}")
    ap.add_argument("--streams", default=",".join(map(str, STREAMS)))
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: all cores)")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--stem", default="serving")
    ap.add_argument("--exports", type=Path, default=None,
                    help="keep the exports in DIR/<preset>-<backend> and reuse them on later runs (same seeded weights)")
    args = ap.parse_args(argv)
    backends = [b for b in args.backends.split(",") if b]
    bad = [b for b in backends if b not in BACKENDS]
    if bad:
        print(f"error: --backends: unknown {bad}; choose from {','.join(BACKENDS)}", file=sys.stderr)
        return 2
    streams = [int(s) for s in args.streams.split(",") if s]
    torch.set_grad_enabled(False)
    info = run_header("bench_serving")
    info["machine"] = machine_info()
    cfg = preset(args.preset)
    log = lambda s: print(s, file=sys.stderr, flush=True)     # noqa: E731
    rows, exports, loads = [], [], []
    with tempfile.TemporaryDirectory(prefix="vrwkv-serving-") as tmp:
        model = build_model(cfg).init_random_(0).eval()
        params = model.num_parameters()
        dirs = {}
        for b in backends:
            dtype, quantize = BACKENDS[b]
            dirs[b] = (args.exports or Path(tmp)) / f"{args.preset}-{b}"
            if args.exports is not None and (dirs[b] / "metadata.json").is_file():
                exports.append({"backend": b, "export_s": None, "reused": str(dirs[b])})
                log(f"reusing the export {dirs[b]}")
                continue
            t0 = time.perf_counter()
            export_model(model, dirs[b], dtype=dtype, quantize=quantize, embeds=False, progress=False)
            exports.append({"backend": b, "export_s": round(time.perf_counter() - t0, 1)})
            log(f"exported {b} in {exports[-1]['export_s']} s")
        del model
        release_memory()
        for b in backends:
            loads.append({"backend": b, "load_average_before": _load()})
            m = OrtModel(dirs[b], threads=args.threads, spinning=False)   # the cores may be shared
            for r in measure_streams(m, streams, steps=args.steps, label=b):
                rows.append(r)
                log(f"{b:>9} x {r['streams']:>3} streams: {r['aggregate_tokens_per_s']:8.1f} tokens/s aggregate, "
                    f"{r['per_stream_latency_ms']:7.1f} ms/token per stream  (load {_load()[0]})")
            loads[-1]["load_average_after"] = _load()
            del m
            release_memory()
    finish_info(info)
    memory = memory_rows(cfg)
    results = {**info, "preset": args.preset, "parameters": params, "config": json.loads(cfg.to_json()), "steps": args.steps, "threads": args.threads, "rows": rows, "exports": exports,
               "load_average_by_backend": loads, "memory": memory}
    out = args.out
    write_json(out / f"{args.stem}.json", results)
    title = f"{args.preset} ({params / 1e6:.0f}M, random weights) on {info['machine'].get('cpu_model', '')}, " \
            f"{info['machine']['cpu_count']} cores; load avg {info['load_average_at_start'][0]} -> " \
            f"{info['load_average_at_end'][0]}"
    plot_streams(rows, out / f"{args.stem}.png", title)
    table = markdown_table([{"backend": r["backend"], "streams": r["streams"],
                             "aggregate tokens/s": r["aggregate_tokens_per_s"],
                             "per-stream ms/token": r["per_stream_latency_ms"], "min ms": r["step_ms_min"],
                             "max ms": r["step_ms_max"]} for r in rows])
    kv = ", ".join(f"{v:.0f} MiB at {k}" for k, v in memory["kv_cache_mib_per_stream"].items())
    md = "\n".join([
        f"# Concurrent streams: {args.preset} ({params:,} parameters, random weights)", "",
        f"Command: `{info['command']}`, {info['date']}. Machine: {info['machine'].get('cpu_model', '')}, "
        f"{info['machine']['cpu_count']} cores, {info['machine']['memory_bandwidth_gbs']} GB/s measured. "
        f"Load average (1/5/15 min) at start {info['load_average_at_start']}, at end {info['load_average_at_end']} "
        f"(the machine is shared; see the per-backend loads in the JSON).", "",
        f"Continuous batching (`vrwkv_edge.serving.ContinuousBatcher`): per engine step every stream samples one "
        f"token and one batched decode step runs for all of them; {args.steps} steps timed after 2 warm-up steps, "
        f"prefill not timed. Per-stream ms/token = the step time (median).", "",
        table, "",
        f"State per stream: {memory['state_mib_per_stream']:.2f} MiB (float32), whatever the context. A Transformer "
        f"of the same depth and width keeps a KV cache of {kv} tokens per stream ({memory['kv_cache_note']}).", "",
        "Exports: " + ", ".join(f"{e['backend']} " + (f"{e['export_s']} s" if e["export_s"] is not None else
                                                        "reused from an earlier run (--exports)")
                                for e in exports) + ".", ""])
    with atomic_write(out / f"{args.stem}.md", suffix=".md") as tmp_md:
        Path(tmp_md).write_text(md, encoding="utf-8")
    log(f"wrote {out / args.stem}.json, .md, .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
