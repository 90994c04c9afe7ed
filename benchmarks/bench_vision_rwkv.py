"""VRWKV-T/S vs a plain ViT of the same width and depth on CPU: forward latency and peak memory vs resolution.

    .venv/bin/python benchmarks/bench_vision_rwkv.py            # 224, 448, 896 px  (a few minutes on 2 cores)
    .venv/bin/python benchmarks/bench_vision_rwkv.py --quick    # 224, 448 px, fewer repeats

Batch 1, fp32, ``torch.inference_mode``, random weights, all threads of the machine.  Latency: all four models
are built once, warmed up at each resolution, then timed in round-robin rounds (each round times every model
once), so load that comes and goes falls on every model in the same rounds; the median over the rounds is
reported (the minimum too).  Only an otherwise idle machine gives meaningful numbers (the many small ops of
VRWKV suffer more from a busy CPU than ViT's few large ones), so the 1-minute load average is recorded.  Memory: every (model, resolution) runs once in a fresh subprocess; its peak
resident memory is reset (``/proc/self/clear_refs``) just before the forward and read (``VmHWM``) after it;
``activation_mb`` is that peak minus the resident memory before the forward (weights, input, runtime).  The ViT
uses ``F.scaled_dot_product_attention`` (no T x T matrix kept), pre-norm blocks, MLP 4x, and the same 16x16
patch embedding and bicubic position-embedding resize as VRWKV, so only the token mixer differs.  The script
also measures how far the official CUDA kernel's Bi-WKV (the models' default, here its port
``bi_wkv_official_ref`` in fp64) departs from the paper formula (``bi_wkv_ref``).  The models run with their
default WKV ("official"); ``benchmarks/bench_biwkv_official.py`` times the Bi-WKV forms themselves.

Writes ``benchmarks/results/vision_rwkv.json`` and ``vision_rwkv.png`` (``vision_rwkv_quick.*`` with ``--quick``),
each through a temp file and ``os.replace``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
from vrwkv_edge.bench.harness import save_figure, write_json
from vrwkv_edge.vision_rwkv.backbone import build_vision_rwkv, resize_pos_embed
from vrwkv_edge.ops.biwkv import bi_wkv_official_ref, bi_wkv_ref

OUT_DIR = REPO / "benchmarks" / "results"
MODELS = {  # name: (family, width, depth, heads)
    "VRWKV-T": ("vrwkv", 192, 12, None), "ViT-T": ("vit", 192, 12, 3),
    "VRWKV-S": ("vrwkv", 384, 12, None), "ViT-S": ("vit", 384, 12, 6),
}
ROUNDS = {"full": {224: 10, 448: 7, 896: 7}, "quick": {224: 3, 448: 2}}


class ViTBlock(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v)                              # [B, heads, T, C/heads]
        x = x + self.proj(a.transpose(1, 2).reshape(B, T, C))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class ViT(nn.Module):
    """Plain ViT classifier without class token (mean pooling), built for 224 px like VRWKV."""

    def __init__(self, dim: int, depth: int, heads: int, num_classes: int = 1000):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 16, stride=16)
        self.pos_embed = nn.Parameter(torch.randn(1, 196, dim) * 0.02)
        self.blocks = nn.ModuleList(ViTBlock(dim, heads) for _ in range(depth))
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, num_classes)

    def forward(self, img):
        x = self.patch(img)
        grid = (x.shape[2], x.shape[3])
        x = x.flatten(2).transpose(1, 2) + resize_pos_embed(self.pos_embed, (14, 14), grid)
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x).mean(1))


def build(name: str) -> nn.Module:
    family, dim, depth, heads = MODELS[name]
    model = build_vision_rwkv("vrwkv_t" if dim == 192 else "vrwkv_s") if family == "vrwkv" else ViT(dim, depth, heads)
    return model.eval()


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")                                   # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def memory_worker(name: str, res: int) -> dict:
    """Runs in a fresh process: peak resident memory of one forward."""
    torch.manual_seed(0)
    model = build(name)
    x = torch.randn(1, 3, res, res)
    with torch.inference_mode():
        base = _rss_bytes()
        reset = _reset_peak()
        model(x)
        peak = _peak_bytes()
    return {"rss_before_mb": round(base / 2**20, 1), "peak_rss_mb": round(peak / 2**20, 1),
            "activation_mb": round((peak - base) / 2**20, 1), "peak_reset": reset}


def time_models(models: dict, res: int, rounds: int) -> dict:
    """Round-robin timing of every model at one resolution: {name: [seconds per round]}."""
    x = torch.randn(1, 3, res, res)
    times = {name: [] for name in models}
    with torch.inference_mode():
        for model in models.values():
            model(x)                                                          # warm-up
        for _ in range(rounds):
            for name, model in models.items():
                t0 = time.perf_counter()
                model(x)
                times[name].append(time.perf_counter() - t0)
    return times


def kernel_deviation() -> list[dict]:
    """max |official-kernel Bi-WKV - formula| for model-like inputs (w = decay/T, k ~ N(0, 2^2), v ~ N(0, 1))."""
    rows = []
    g = torch.Generator().manual_seed(0)
    for T in (196, 784):
        for decay in (-5.0, -1.0, 1.0, 3.0, 5.0):
            C = 64
            k = torch.randn(1, T, C, generator=g, dtype=torch.float64) * 2
            v = torch.randn(1, T, C, generator=g, dtype=torch.float64)
            w = torch.full((C,), decay / T, dtype=torch.float64)
            u = torch.randn(C, generator=g, dtype=torch.float64) / T
            formula = bi_wkv_ref(w, u, k, v)
            diff = (bi_wkv_official_ref(w, u, k, v) - formula).abs()
            rows.append({"T": T, "decay": decay, "kernel_vs_formula": diff.max().item(),
                         "kernel_vs_formula_mean": diff.mean().item(),
                         "symmetric_vs_formula": (bi_wkv_ref(w, u + w, k, v) - formula).abs().max().item()})
    return rows


def plot(results: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in MODELS:
        rows = sorted((r for r in results if r["model"] == name), key=lambda r: r["resolution"])
        if not rows:
            continue
        style = dict(marker="o", color="tab:green" if MODELS[name][0] == "vrwkv" else "tab:red",
                     linestyle="-" if name.endswith("S") else "--", label=name)
        res = [r["resolution"] for r in rows]
        axes[0].plot(res, [r["latency_ms_median"] for r in rows], **style)
        axes[0].plot(res, [r["latency_ms_min"] for r in rows], marker="_", markersize=12, linestyle="none",
                     color=style["color"])
        axes[1].plot(res, [r["activation_mb"] for r in rows], **style)
    for ax, title in zip(axes, ("forward latency (ms): median, and min as a dash", "peak memory during forward (MB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ticks = sorted({r["resolution"] for r in results})
        ax.set_xticks(ticks, [f"{t}\n({(t // 16) ** 2} tok)" for t in ticks])
        ax.set_xlabel("input resolution (px)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(f"Vision-RWKV vs ViT (SDPA), batch 1, fp32, CPU, {torch.get_num_threads()} threads")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="224 and 448 px only, fewer rounds")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help=f"output folder ({OUT_DIR})")
    parser.add_argument("--memory-worker", nargs=2, metavar=("MODEL", "RES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_worker:
        print(json.dumps(memory_worker(args.memory_worker[0], int(args.memory_worker[1]))))
        return

    mode = "quick" if args.quick else "full"
    args.out.mkdir(parents=True, exist_ok=True)
    started, load_before = time.time(), os.getloadavg()
    torch.manual_seed(0)
    models = {name: build(name) for name in MODELS}
    results = []
    for res, rounds in ROUNDS[mode].items():
        load = os.getloadavg()[0]
        times = time_models(models, res, rounds)
        for name, model in models.items():
            cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-worker", name, str(res)]
            mem = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            family, width, depth, _ = MODELS[name]
            row = {"model": name, "family": family, "width": width, "depth": depth,
                   "params": sum(p.numel() for p in model.parameters()), "resolution": res,
                   "tokens": (res // 16) ** 2, "rounds": rounds,
                   "latency_ms_median": round(1e3 * statistics.median(times[name]), 2),
                   "latency_ms_min": round(1e3 * min(times[name]), 2),
                   "latency_ms": [round(1e3 * t, 2) for t in times[name]], "load_avg_1min": load, **mem}
            results.append(row)
            print(f"{name:8s} {res:4d}px {row['tokens']:5d} tok  median {row['latency_ms_median']:9.1f} ms  "
                  f"min {row['latency_ms_min']:9.1f} ms  peak +{row['activation_mb']:7.1f} MB "
                  f"(rss {row['peak_rss_mb']:.0f} MB)", flush=True)
    deviation = kernel_deviation()
    for d in deviation:
        print(f"Bi-WKV kernel vs formula, T={d['T']:4d} decay={d['decay']:+.0f}: max {d['kernel_vs_formula']:.2e} "
              f"mean {d['kernel_vs_formula_mean']:.1e} (symmetric form vs formula {d['symmetric_vs_formula']:.2e})")
    meta = {"mode": mode, "torch": torch.__version__, "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "load_avg_before": load_before, "load_avg_after": os.getloadavg(),
            "wall_s": round(time.time() - started, 1), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": "python benchmarks/bench_vision_rwkv.py" + (" --quick" if args.quick else "")}
    doc = {"meta": meta, "results": results, "biwkv_kernel_deviation": deviation}
    stem = "vision_rwkv_quick" if args.quick else "vision_rwkv"          # a quick run never overwrites a full one
    write_json(args.out / f"{stem}.json", doc)
    plot(results, args.out / f"{stem}.png")
    print(f"wrote {args.out / stem}.json and {stem}.png in {meta['wall_s']} s")


if __name__ == "__main__":
    main()
