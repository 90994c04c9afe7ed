"""PNG plots of ``vrwkv-edge bench`` results (matplotlib, Agg): latency and memory against context length,
tokens/s by backend, the time to first token by stage, vision tower latency and memory against resolution.
Files are written to a temp name, then renamed; a suite that was skipped gets no plot."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from .harness import save_figure


def _save(fig, path: Path) -> None:
    save_figure(fig, path)


def _series(rows, key, value, x="context"):
    out = defaultdict(list)
    for r in rows:
        out[r[key]].append((r[x], r[value]))
    return {k: sorted(v) for k, v in out.items()}


def plot_all(results: dict, out_dir: Path, stem: str) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    title = f"{results['preset']} on {results['machine'].get('cpu_model', results['machine']['processor'])}"
    paths = []
    if results["decode"] or results["transformer_comparison"]:
        paths += _plot_decode(plt, results, out_dir, stem, title)
    if results.get("ttft"):
        paths.append(_plot_ttft(plt, results["ttft"], out_dir, stem, title))
    if results.get("vision_towers"):
        paths.append(_plot_towers(plt, results["vision_towers"], out_dir, stem, title))
    if results.get("streams"):
        paths.append(plot_streams(results["streams"]["rows"], Path(out_dir) / f"{stem}_streams.png", title))
    return paths


def _plot_decode(plt, results: dict, out_dir: Path, stem: str, title: str) -> list[Path]:
    paths = []
    cmp_rows = results["transformer_comparison"]
    # our PyTorch runtime's points from both suites form one line (the comparison adds the longer contexts)
    decode = [r for r in results["decode"] if r["backend"] != "torch-compile"]
    decode += [dict(r, backend="torch") for r in cmp_rows if r["model"].startswith("RWKV")]
    decode = list({(r["backend"], r["context"]): r for r in decode}.values())
    for value, ylabel, name in (("ms_per_token", "ms per decoded token", "latency"),
                                ("rss_mib", "resident memory (MiB)", "memory")):
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for label, pts in _series(decode, "backend", value).items():
            ax.plot(*zip(*pts), marker="o", label=f"RWKV {label}")
        for label, pts in _series(cmp_rows, "model", value).items():
            if label.startswith("Llama"):
                ax.plot(*zip(*pts), marker="s", linestyle="--", color="black", label=label)
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{ylabel} vs context\n{title}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        path = Path(out_dir) / f"{stem}_{name}.png"
        _save(fig, path)
        plt.close(fig)
        paths.append(path)
    if not results["decode"]:
        return paths

    fig, ax = plt.subplots(figsize=(7, 4.2))
    ctx = min(r["context"] for r in results["decode"])
    rows = [r for r in results["decode"] if r["context"] == max(r2["context"] for r2 in results["decode"]
                                                                   if r2["backend"] == r["backend"])]
    rows.sort(key=lambda r: -r["tokens_per_s"])
    ax.barh([f"{r['backend']} @{r['context']}" for r in rows], [r["tokens_per_s"] for r in rows], color="tab:blue")
    ax.axvline(results["speed_of_light_tokens_per_s"], color="red", linestyle=":", label="speed of light")
    ax.set_xlabel("decode tokens/s (batch 1)")
    ax.set_title(f"decode throughput by backend (longest context measured; shortest {ctx})\n{title}", fontsize=9)
    ax.legend(fontsize=7)
    ax.invert_yaxis()
    path = Path(out_dir) / f"{stem}_throughput.png"
    _save(fig, path)
    plt.close(fig)
    paths.append(path)
    return paths


def _plot_ttft(plt, t: dict, out_dir: Path, stem: str, title: str) -> Path:
    """Stacked bars: the uncached TTFT split into its stages, and the cached TTFT split into the cache key and
    the rest; the measured end-to-end TTFTs as markers."""
    stages = list(t["stages"])
    fig, ax = plt.subplots(figsize=(8, 3.6))
    colors = plt.get_cmap("tab10").colors
    left = 0.0
    for i, s in enumerate(stages):
        w = 1e3 * t["stages"][s]["median_s"]
        ax.barh(1, w, left=left, color=colors[i % 10], label=s)
        left += w
    key = 1e3 * t["cache_key"]["median_s"]
    cached = 1e3 * t["ttft_cached"]["median_s"]
    ax.barh(0, key, color="lightgray", hatch="//", label="cache key (decode + hash the photo)")
    ax.barh(0, max(cached - key, 0), left=key, color="gray", label="cached: the rest (text after the image, ...)")
    ax.plot([1e3 * t["ttft"]["median_s"], cached], [1, 0], "k|", markersize=22, label="measured end to end")
    e2e = 1e3 * t["ttft"]["median_s"]
    ax.annotate(f" {e2e:.0f} ms end to end\n (stages: {left:.0f} ms)", (max(e2e, left), 1), va="center", fontsize=8)
    ax.annotate(f" {cached:.0f} ms", (cached, 0), va="center", fontsize=8)
    ax.set_yticks([1, 0], ["image not cached", "image state cached"])
    ax.set_xlabel("time to first token (ms, median)")
    ax.set_xlim(0, 1.3 * max(left, e2e))
    ax.set_title(f"TTFT of an image question: {t['lm']} RWKV-6 + {t['tower']}, {t['image_tokens']} image tokens"
                 f"\n{title}", fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=3)
    path = Path(out_dir) / f"{stem}_ttft.png"
    _save(fig, path)
    plt.close(fig)
    return path


def _plot_towers(plt, rows: list[dict], out_dir: Path, stem: str, title: str) -> Path:
    """Forward latency and peak memory against input resolution, one line per tower."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, pts in _series(rows, "tower", "ms", x="resolution").items():
        axes[0].plot(*zip(*pts), marker="o", label=label)
    for label, pts in _series(rows, "tower", "peak_rss_mib", x="resolution").items():
        axes[1].plot(*zip(*pts), marker="o", label=label)
    for r in rows:
        axes[0].annotate(f" {r['tokens']} tok", (r["resolution"], r["ms"]), fontsize=7)
    ticks = sorted({r["resolution"] for r in rows})
    for ax, ylabel in zip(axes, ("forward latency (ms, median; log)", "peak resident memory (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("input px (SAM+DINOv2+SigLIP: DINOv2/SigLIP input)", fontsize=8)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_yscale("log")
    fig.suptitle(f"vision towers, batch 1, fp32\n{title}", fontsize=9)
    fig.tight_layout()
    path = Path(out_dir) / f"{stem}_towers.png"
    _save(fig, path)
    plt.close(fig)
    return path


def plot_streams(rows: list[dict], path: Path, title: str) -> Path:
    """Aggregate decode tokens/s and per-stream latency against the number of concurrent streams, one line per
    backend (``vrwkv_edge.serving.streams`` rows)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, pts in _series(rows, "backend", "aggregate_tokens_per_s", x="streams").items():
        axes[0].plot(*zip(*pts), marker="o", label=label)
        for x, y in pts:
            axes[0].annotate(f" {y:.0f}", (x, y), fontsize=7)
    for label, pts in _series(rows, "backend", "per_stream_latency_ms", x="streams").items():
        axes[1].plot(*zip(*pts), marker="o", label=label)
    ticks = sorted({r["streams"] for r in rows})
    for ax, ylabel in zip(axes, ("aggregate decode tokens/s", "per-stream latency (ms per token, median)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("concurrent streams (batch rows)")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"continuous batching: one decode step serves every stream\n{title}", fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return Path(path)
