"""The native C++ CPU WKV ops against the pure-PyTorch ones on 0.1B shapes (12 layers, 12 heads of 64), and the
WKV's share of end-to-end eager inference before (``torch``) and after (``native``).

* op alone, one layer's WKV (B = 1, H = 12, N = 64), RWKV-6 and RWKV-7: prefill of 577 and 4,096 tokens (native vs
  the chunked PyTorch form and the per-token PyTorch loop) and one decode step (native vs the PyTorch step);
* end to end, rwkv6-0.1b / rwkv7-0.1b shapes with seeded random weights: one decode step and a 577-token prefill,
  with the time spent inside the WKV calls measured by timing wrappers around the selected implementation.

    vrwkv-edge build-native                   # once
    python benchmarks/bench_native_wkv.py     # writes benchmarks/results/native_wkv.json (+ .png)
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import torch

from vrwkv_edge.bench import machine_info, markdown_table, time_fn, write_json
from vrwkv_edge.config import preset
from vrwkv_edge.models import build_model
from vrwkv_edge.ops.dispatch import get_wkv_impl, register_wkv_impl, unregister_wkv_impl
from vrwkv_edge.ops.wkv6 import wkv6_chunked, wkv6_ref, wkv6_step
from vrwkv_edge.ops.wkv7 import wkv7_chunked, wkv7_ref, wkv7_step

HERE = Path(__file__).resolve().parent
H, N, LAYERS = 12, 64, 12


def load_native():
    import vrwkv_edge.native as native
    if not native.available():
        from vrwkv_edge.native import build
        print("building the native kernels (vrwkv-edge build-native) ...", file=sys.stderr)
        build.build()
        import importlib
        native = importlib.reload(native)
    native.require()
    from vrwkv_edge.native import ops
    return ops


def inputs(version: str, T: int):
    g = torch.Generator().manual_seed(T)
    r, k, v = (torch.randn(1, T, H, N, generator=g) for _ in range(3))
    state = torch.randn(1, H, N, N, generator=g)
    if version == "x060":
        return r, k, v, -torch.exp(torch.randn(1, T, H, N, generator=g)), torch.randn(H, N, generator=g), state
    kk = torch.nn.functional.normalize(torch.randn(1, T, H, N, generator=g), dim=-1)
    return r, -0.6 * torch.rand(1, T, H, N, generator=g), k, v, -kk, kk * torch.rand(1, T, H, N, generator=g), state


def op_rows(ops, lengths, repeats):
    forms = {"x060": (wkv6_chunked, wkv6_ref, wkv6_step, ops.wkv6_seq, ops.wkv6_step),
             "x070": (wkv7_chunked, wkv7_ref, wkv7_step, ops.wkv7_seq, ops.wkv7_step)}
    rows = []
    for version, (chunked, per_token, step, nat_seq, nat_step) in forms.items():
        for T in lengths:
            xs = inputs(version, T)
            t_nat = time_fn(lambda: nat_seq(*xs), repeats).median_s
            t_chunk = time_fn(lambda: chunked(*xs, chunk_size=16), repeats).median_s
            t_loop = time_fn(lambda: per_token(*xs), max(1, repeats // 3), warmup=0).median_s
            rows.append({"version": version, "form": f"prefill {T}", "tokens": T, "native_ms": 1e3 * t_nat,
                         "torch_chunked_ms": 1e3 * t_chunk, "torch_per_token_ms": 1e3 * t_loop,
                         "speedup_vs_chunked": t_chunk / t_nat, "speedup_vs_per_token": t_loop / t_nat})
        one = [x[:, 0] if x.dim() == 4 and x.shape[-1] != x.shape[-2] else x for x in inputs(version, 1)]
        t_nat = time_fn(lambda: nat_step(*one), 50 * repeats).median_s
        t_step = time_fn(lambda: step(*one), 50 * repeats).median_s
        rows.append({"version": version, "form": "decode", "tokens": 1, "native_ms": 1e3 * t_nat,
                     "torch_step_ms": 1e3 * t_step, "speedup_vs_step": t_step / t_nat})
    return rows


class WkvTimer:
    """Registers '<name>-timed': the named WkvImpl with every entry point wrapped to add its wall time here."""

    def __init__(self, name: str):
        base = get_wkv_impl(name)
        self.seconds = 0.0

        def timed(fn):
            def wrapper(*a, **kw):
                t0 = time.perf_counter()
                out = fn(*a, **kw)
                self.seconds += time.perf_counter() - t0
                return out
            return wrapper

        fields = {f.name: timed(getattr(base, f.name)) for f in dataclasses.fields(base)
                  if f.name != "name" and getattr(base, f.name) is not None}
        self.name = f"{name}-timed"
        register_wkv_impl(dataclasses.replace(base, name=self.name, **fields))


def end_to_end_rows(prompt_len, repeats):
    rows = []
    for preset_name in ("rwkv6-0.1b", "rwkv7-0.1b"):
        cfg = preset(preset_name)
        model = build_model(cfg).init_random_(0).eval()
        ids = torch.tensor([[(i * 7919) % (cfg.vocab_size - 1) + 1 for i in range(prompt_len)]])
        for impl in ("torch", "native"):
            timer = WkvTimer(impl)
            model.set_wkv_impl(timer.name)
            _, state = model.forward(ids[:, :16])
            for label, fn, n in (("decode step", lambda: model.step(ids[:, 0], state), 20 * repeats),
                                 (f"prefill {prompt_len}", lambda: model.forward(ids), repeats)):
                fn()                                            # warm-up
                timer.seconds = 0.0
                t0 = time.perf_counter()
                for _ in range(n):
                    fn()
                total = (time.perf_counter() - t0) / n
                wkv = timer.seconds / n
                rows.append({"model": preset_name, "impl": impl, "form": label, "total_ms": 1e3 * total,
                             "wkv_ms": 1e3 * wkv, "wkv_share": wkv / total})
            unregister_wkv_impl(timer.name)
    return rows


def plot(op, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(9, 4))
    labels = [f"{r['version']} {r['form']}" for r in op]
    keys = [("native_ms", "native C++"), ("torch_chunked_ms", "PyTorch chunked"),
            ("torch_per_token_ms", "PyTorch per-token"), ("torch_step_ms", "PyTorch step")]
    width = 0.2
    for i, (key, name) in enumerate(keys):
        xs = [j + (i - 1.5) * width for j, r in enumerate(op) if key in r]
        ax.bar(xs, [r[key] for r in op if key in r], width, label=name)
    ax.set_xticks(range(len(op)), labels, rotation=20, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("ms per layer (B=1, 12 heads of 64)")
    ax.set_title("WKV op alone: native C++ CPU kernel vs pure PyTorch")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a shared 2-core machine)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--lengths", default="577,4096")
    ap.add_argument("--no-end-to-end", action="store_true")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "native_wkv.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    ops = load_native()
    load_start = os.getloadavg()[0]              # the machine may be shared: say how busy it was
    op = op_rows(ops, [int(x) for x in args.lengths.split(",")], args.repeats)
    print(markdown_table(op, list(dict.fromkeys(k for r in op for k in r))))
    e2e = [] if args.no_end_to_end else end_to_end_rows(577, args.repeats)
    if e2e:
        print(markdown_table(e2e, list(e2e[0])))
    result = {"machine": machine_info(bandwidth=False), "load_average_1min": [load_start, os.getloadavg()[0]],
              "threads": args.threads, "heads": H, "head_size": N,
              "layers": LAYERS, "op_alone_per_layer": op, "end_to_end": e2e,
              "targets": {"prefill_vs_chunked": 2.0, "decode_vs_step": 3.0},
              "targets_met": {"prefill_vs_chunked": all(r["speedup_vs_chunked"] >= 2 for r in op
                                                        if "speedup_vs_chunked" in r),
                              "decode_vs_step": all(r["speedup_vs_step"] >= 3 for r in op if "speedup_vs_step" in r)}}
    write_json(args.out, result)
    if plot(op, args.out.with_suffix(".png")):
        print(f"plot: {args.out.with_suffix('.png')}", file=sys.stderr)
    print(f"results: {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
