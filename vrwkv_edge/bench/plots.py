"""PNG plots of ``vrwkv-edge bench`` results (matplotlib, Agg): latency and memory against context length,
tokens/s by backend.  Files are written to a temp name, then renamed."""
from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path


def _save(fig, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)


def _series(rows, key, value):
    out = defaultdict(list)
    for r in rows:
        out[r[key]].append((r["context"], r[value]))
    return {k: sorted(v) for k, v in out.items()}


def plot_all(results: dict, out_dir: Path, stem: str) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    title = f"{results['preset']} on {results['machine'].get('cpu_model', results['machine']['processor'])}"
    paths = []
    cmp_rows = results["transformer_comparison"]
    # our PyTorch runtime's points from both suites form one line (the comparison adds the longer contexts)
    decode = [r for r in results["decode"] if r["backend"] != "torch-compile"]
    decode += [dict(r, backend="torch") for r in cmp_rows if r["backend"] == "torch"]
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
