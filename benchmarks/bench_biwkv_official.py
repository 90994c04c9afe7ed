"""The official CUDA kernel's Bi-WKV on CPU: the exact O(T C) form (the Vision-RWKV default) vs the kernel's
port, with the paper formula's fast form for scale, and how far the kernel's result is from the formula.

    python benchmarks/bench_biwkv_official.py                 # T = 196, 784, 1024; C = 192 (VRWKV-T), batch 1
    python benchmarks/bench_biwkv_official.py --threads 1 --repeats 15

fp32, ``torch.inference_mode``, model-like inputs (w = decay/T with decay in [-5, 5], u ~ N(0, 1)/T,
k ~ N(0, 2^2), v ~ N(0, 1)).  Timed per form: ``bi_wkv_official`` (method "auto" = the Toeplitz-matmul form for
these inputs, and "scan", the form the ONNX export uses), ``bi_wkv_official_ref`` (the operation-by-operation
port of ``cuda_new/bi_wkv_kernel.cu``, vectorised over channels and lanes) and ``bi_wkv`` (the formula).  Median
and spread over ``--repeats`` runs after a warm-up (:func:`vrwkv_edge.bench.harness.time_fn`); the load average
is recorded, since the machine may be shared.  Accuracy: max |fp32 form - fp64 port| / max |port|.  Also the
logit gap official vs formula of a randomly initialised VRWKV-T at 64 and 224 px.

Writes ``benchmarks/results/biwkv_official.json`` (atomically).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from vrwkv_edge.bench.harness import finish_info, machine_info, run_header, time_fn, write_json
from vrwkv_edge.ops.biwkv import bi_wkv, bi_wkv_official, bi_wkv_official_ref
from vrwkv_edge.vision_rwkv.backbone import build_vision_rwkv

OUT = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "biwkv_official.json"
FORMS = {
    "official (auto: matmul)": bi_wkv_official,
    "official (scan, exported)": lambda *a: bi_wkv_official(*a, method="scan"),
    "kernel port (official_ref)": bi_wkv_official_ref,
    "formula (bi_wkv, auto)": bi_wkv,
}


def inputs(T: int, C: int, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(1, T, C, generator=g, dtype=torch.float64) * 2
    v = torch.randn(1, T, C, generator=g, dtype=torch.float64)
    w = (torch.rand(C, generator=g, dtype=torch.float64) * 10 - 5) / T
    u = torch.randn(C, generator=g, dtype=torch.float64) / T
    return w, u, k, v


def rel(ref: torch.Tensor, out: torch.Tensor) -> float:
    return ((out.double() - ref).abs().max() / ref.abs().max()).item()


def model_gap(sizes=(64, 224)) -> list[dict]:
    """max |logits official - logits formula| / max |logits| of a randomly initialised VRWKV-T."""
    model = build_vision_rwkv("vrwkv_t").eval()
    rows = []
    for size in sizes:
        x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(size))
        official = model.set_wkv_impl("official")(x)
        formula = model.set_wkv_impl("formula")(x)
        rows.append({"image_px": size, "tokens": (size // 16) ** 2,
                     "max_abs_logit_gap": (official - formula).abs().max().item(),
                     "relative_logit_gap": rel(official.double(), formula)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[196, 784, 1024])
    parser.add_argument("--channels", type=int, default=192)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    info = {**run_header("biwkv_official"), "machine": machine_info(bandwidth=False)}
    rows = []
    with torch.inference_mode():
        for T in args.lengths:
            args64 = inputs(T, args.channels, seed=T)
            port64 = bi_wkv_official_ref(*args64)
            args32 = tuple(x.float() for x in args64)
            for name, fn in FORMS.items():
                t = time_fn(lambda: fn(*args32), repeats=args.repeats, warmup=2)
                row = {"T": T, "C": args.channels, "form": name, "median_ms": round(t.median_s * 1e3, 3),
                       "min_ms": round(t.min_s * 1e3, 3), "max_ms": round(t.max_s * 1e3, 3), "repeats": t.repeats,
                       "rel_err_vs_fp64_port": rel(port64, fn(*args32))}
                rows.append(row)
                print(f"T={T:5d} {name:28s} median {row['median_ms']:8.2f} ms (min {row['min_ms']:7.2f}, "
                      f"max {row['max_ms']:7.2f})  rel. err vs port {row['rel_err_vs_fp64_port']:.1e}", flush=True)
        gap = model_gap()
    for g in gap:
        print(f"VRWKV-T (random init) {g['image_px']} px: logits official vs formula differ by "
              f"{g['max_abs_logit_gap']:.1e} ({g['relative_logit_gap']:.1e} relative)")
    write_json(args.out, {"info": finish_info(info), "results": rows, "model_logit_gap": gap})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
