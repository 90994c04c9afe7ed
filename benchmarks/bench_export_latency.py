"""Per-token decode latency: ONNX Runtime (CPU) fp32 / fp16 / int8 exports vs the PyTorch runtime
(``model.step``) for a 0.1B-shaped RWKV-7 (preset ``rwkv7-0.1b``: 12 layers, width 768, vocabulary 65536,
seeded random weights), batch 1, on this machine.

    python benchmarks/bench_export_latency.py           # full: writes benchmarks/results/export_latency.json/.md
    python benchmarks/bench_export_latency.py --quick   # rwkv7-tiny, a few tokens (smoke test)

Each variant decodes ``--tokens`` tokens after a warm-up, one ``step`` per token from a running state; the
per-token wall time is reported as median / p10 / p90.  The runtimes take turns (rounds of 5 tokens each), so a
change in the machine's load hits all of them alike.  ORT and PyTorch use the same number of threads
(``--threads``, default all cores); PyTorch is also measured with one thread.  The exports are written to a
temporary directory and removed afterwards (``--keep`` keeps them).  Note: fp16 graphs are made for GPUs; ONNX
Runtime's CPU provider has no fast fp16 matmul on x86 without AVX512-FP16, so the fp16 CPU number mostly shows
the cost of converting.  The machine may be shared: the load average is recorded with the results.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from vrwkv_edge.bench.harness import finish_info, machine_info, markdown_table, run_header, stats_ms, write_json
from vrwkv_edge.fileio import atomic_write
from vrwkv_edge.config import preset
from vrwkv_edge.export import export_model, load_onnx_model
from vrwkv_edge.models import build_model

RESULTS = Path(__file__).resolve().parent / "results"

VARIANTS = (("ort-fp32", "fp32", None), ("ort-fp16", "fp16", None), ("ort-int8", "fp32", "int8"))


class Runner:
    """Decodes a fixed token stream one step at a time from a running state, timing each step."""

    def __init__(self, label: str, step, vocab: int, threads: int, torch_threads: int | None = None):
        self.label, self.step, self.vocab = label, step, vocab
        self.threads, self.torch_threads = threads, torch_threads
        self.state = None
        self.i = 0
        self.times: list[float] = []

    def run(self, n: int, record: bool = True) -> None:
        if self.torch_threads is not None:
            torch.set_num_threads(self.torch_threads)
        for _ in range(n):
            ids = torch.tensor([(self.i * 7919) % (self.vocab - 1) + 1])
            t0 = time.perf_counter()
            _, self.state = self.step(ids, self.state)
            dt = time.perf_counter() - t0
            self.i += 1
            if record:
                self.times.append(dt)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--preset", default=None)
    ap.add_argument("--tokens", type=int, default=None, help="timed decode steps per ORT variant")
    ap.add_argument("--torch-tokens", type=int, default=None, help="timed decode steps for PyTorch")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--work-dir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    name = args.preset or ("rwkv7-tiny" if args.quick else "rwkv7-0.1b")
    n_ort = args.tokens or (20 if args.quick else 100)
    n_torch = args.torch_tokens or (10 if args.quick else 40)
    threads = args.threads or torch.get_num_threads()
    out = args.out or RESULTS / ("export_latency_quick.json" if args.quick else "export_latency.json")
    torch.set_grad_enabled(False)

    info = machine_info(bandwidth=False)
    model = build_model(preset(name)).init_random_(0).eval()
    vocab = model.cfg.vocab_size
    print(f"{name}: {model.num_parameters():,} parameters; {info['cpu_count']} cores; {threads} threads; "
          f"load {info['load_average_at_start']}", file=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="bench_export_latency-", dir=args.work_dir))
    rows, runners, exports = [], [], {}
    try:
        for label, dtype, quantize in VARIANTS:
            t0 = time.perf_counter()
            d = export_model(model, work / label, dtype=dtype, quantize=quantize, embeds=False, progress=False)
            exports[label] = (d, time.perf_counter() - t0)
            print(f"exported {label} in {exports[label][1]:.0f} s", file=sys.stderr)
        for label, (d, _) in exports.items():
            om = load_onnx_model(d, threads=threads, spinning=False)      # no busy-waiting between turns
            runners.append(Runner(label, om.step, vocab, threads))
        for n_threads in sorted({threads, 1}, reverse=True):
            runners.append(Runner("pytorch-fp32 (model.step)", model.step, vocab, n_threads, torch_threads=n_threads))
        for r in runners:                                        # warm-up
            r.run(3, record=False)
        # Interleaved rounds: every runtime decodes a few tokens in turn, so a change in the load of a shared
        # machine affects all of them alike instead of whichever ran at that moment.
        per_round = 5
        rounds = max(1, -(-n_ort // per_round))
        for k in range(rounds):
            for r in runners:
                quota = n_torch if r.torch_threads is not None else n_ort
                if len(r.times) < quota:
                    r.run(min(per_round, quota - len(r.times)))
            if (k + 1) % 5 == 0:
                print(f"  round {k + 1}/{rounds}", file=sys.stderr)
        torch.set_num_threads(threads)
        for r in runners:
            s = stats_ms(r.times)
            if r.torch_threads is None:
                d, export_s = exports[r.label]
                size = sum(p.stat().st_size for p in d.iterdir() if p.name.startswith("decode.onnx"))
                extra = {"decode_graph_MB": round(size / 2 ** 20, 1), "export_s": round(export_s, 1)}
            else:
                extra = {"decode_graph_MB": round(sum(p.numel() * p.element_size() for p in model.parameters())
                                                  / 2 ** 20, 1), "export_s": ""}
            rows.append({"runtime": r.label, "threads": r.torch_threads or r.threads, **s,
                         "tokens_per_s": round(1000 / s["median_ms"], 2), **extra})
            print(f"{r.label} ({rows[-1]['threads']} threads): median {s['median_ms']:.2f} ms/token", file=sys.stderr)
        del runners
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"exports kept in {work}", file=sys.stderr)

    columns = [("runtime", "runtime"), ("threads", "threads"), ("median_ms", "median ms/token"),
               ("p10_ms", "p10"), ("p90_ms", "p90"), ("tokens_per_s", "tokens/s"),
               ("decode_graph_MB", "weights MB"), ("export_s", "export s")]
    table = markdown_table(rows, columns)
    result = {**run_header("bench_export_latency"), "model": {"preset": name, "parameters": model.num_parameters(),
                                                          "weights": "seeded random (init_random_(0))"},
              "batch": 1, "timed_tokens": {"ort": n_ort, "pytorch": n_torch}, "rows": rows,
              "environment": finish_info(info),
              "notes": ["per-token wall time of one decode step from a running state, batch 1",
                        "the runtimes take turns (5 tokens each); ORT sessions run with spinning=False so idle "
                        "ORT threads do not busy-wait during the other runtimes' turns",
                        "weights MB: size of decode.onnx (ORT) or of the parameters (PyTorch)",
                        "fp16 on the CPU: ONNX Runtime has no fast fp16 MatMul on x86 without AVX512-FP16; the "
                        "fp16 graphs target CUDA/TensorRT",
                        "int8: onnxruntime.quantization.quantize_dynamic (int8 weights, dynamic uint8 "
                        "activations, MatMulInteger)",
                        "the machine may be shared with other jobs: see the load averages"]}
    write_json(out, result)
    with atomic_write(out.with_suffix(".md")) as tmp:
        Path(tmp).write_text(f"# ONNX export: decode latency ({name}, batch 1)\n\n{table}\n", encoding="utf-8")
    print(table)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
