"""The benchmark harness shared by ``vrwkv-edge bench`` and the scripts in ``benchmarks/``.

* seeded random weights of named shapes (``vrwkv_edge.config.LM_PRESETS``);
* timing with warm-up and repeats, reported as median and spread (min, max) -- never a single run;
* machine information, including a memory bandwidth the harness measures itself (a large tensor copy), so
  results can be put against the speed of light (bytes of weights read per token / bandwidth);
* results written atomically as JSON (temp file, then rename) plus a Markdown table.
"""
from __future__ import annotations

import ctypes
import datetime as _dt
import gc
import os
import platform
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .. import __version__
from ..fileio import atomic_write, write_json  # noqa: F401  (write_json: part of the harness API)


@dataclass
class Timing:
    median_s: float
    min_s: float
    max_s: float
    repeats: int

    def as_dict(self) -> dict:
        return {"median_s": self.median_s, "min_s": self.min_s, "max_s": self.max_s, "repeats": self.repeats}


def time_fn(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> Timing:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return Timing(statistics.median(times), min(times), max(times), repeats)


def measure_bandwidth_gbs(size_mb: int = 256, repeats: int = 5) -> float:
    """Sustained memory bandwidth of this machine in GB/s: a ``size_mb`` copy reads and writes each byte once."""
    n = size_mb * 2 ** 20 // 4
    src = torch.ones(n, dtype=torch.float32)
    dst = torch.empty_like(src)
    t = time_fn(lambda: dst.copy_(src), repeats=repeats, warmup=2)
    return 2 * src.numel() * 4 / t.min_s / 1e9


def machine_info(bandwidth: bool = True) -> dict:
    info = {"vrwkv_edge": __version__,
            "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            info["cpu_model"] = names[0]
        with open("/proc/meminfo") as f:
            info["mem_total_gib"] = round(int(f.readline().split()[1]) / 2 ** 20, 1)
    except OSError:
        pass
    if "onnxruntime" in sys.modules:                  # only when the benchmark uses it
        info["onnxruntime"] = sys.modules["onnxruntime"].__version__
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    if bandwidth:
        info["memory_bandwidth_gbs"] = round(measure_bandwidth_gbs(), 2)
    return info


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; psutil elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import psutil
        return psutil.Process().memory_info().rss


def peak_rss_bytes() -> int:
    """Peak resident set size of this process image.  VmHWM, not getrusage's ru_maxrss: ru_maxrss survives
    fork + exec, so a worker started from a large parent would report the parent's peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak_rss() -> bool:
    """Resets this process's VmHWM to its current resident size (Linux ``/proc/self/clear_refs``), so that a
    later :func:`peak_rss_bytes` is the peak of what ran in between (e.g. one forward), not of the model build.
    Returns False where the kernel does not allow it (then the peak is the whole process's)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def release_memory() -> None:
    """Collects garbage and hands freed heap pages back to the OS (glibc ``malloc_trim``), so that a large
    model freed by the benchmark parent no longer counts in its RSS while worker processes run."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):        # not glibc: freed memory is returned when the allocator decides
        pass


def run_header(name: str) -> dict:
    """What a committed result records about its run: the benchmark, the exact command, the date, and the load
    average at the start (a busy machine explains slow numbers; :func:`finish_info` adds the one at the end)."""
    return {"benchmark": name, "command": " ".join([Path(sys.executable).name] + sys.argv),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}


def finish_info(info: dict) -> dict:
    info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return info


def stats_ms(seconds: list[float]) -> dict:
    """Median, mean, 10th/90th percentile and minimum of a list of durations, in milliseconds."""
    ms = sorted(s * 1000 for s in seconds)
    q = lambda p: ms[min(len(ms) - 1, int(round(p * (len(ms) - 1))))]       # noqa: E731
    return {"n": len(ms), "median_ms": round(statistics.median(ms), 3), "mean_ms": round(statistics.fmean(ms), 3),
            "p10_ms": round(q(0.10), 3), "p90_ms": round(q(0.90), 3), "min_ms": round(ms[0], 3)}


def save_figure(fig, path: Path | str) -> Path:
    """A matplotlib figure as PNG, atomically."""
    with atomic_write(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return Path(path)


def markdown_table(rows: list[dict], columns=None) -> str:
    """A Markdown table of ``rows``; ``columns``: keys, or ``(key, title)`` pairs (default: the first row's keys)."""
    columns = [c if isinstance(c, tuple) else (c, c) for c in (columns or list(rows[0]))]
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)     # noqa: E731
    lines = ["| " + " | ".join(title for _, title in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(key, "")) for key, _ in columns) + " |" for r in rows]
    return "\n".join(lines)


def weight_bytes_per_token(model) -> int:
    """Bytes of weights a decode step reads: every parameter except the embedding table (one row is read)."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    emb = model.emb.weight
    return total - emb.numel() * emb.element_size() + emb.shape[1] * emb.element_size()
