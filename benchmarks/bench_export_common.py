"""Helpers shared by the ``bench_export_*`` benchmarks: machine information, atomic result files, tables."""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def machine_info() -> dict:
    import onnxruntime
    import torch

    import vrwkv_edge

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"python": platform.python_version(), "platform": platform.platform(), "cpu_model": cpu,
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "vrwkv_edge": vrwkv_edge.__version__, "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}


def finish_info(info: dict) -> dict:
    info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return info


def header(name: str) -> dict:
    return {"benchmark": name, "command": " ".join([Path(sys.executable).name] + sys.argv),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def write_atomic(path: Path, text: str | bytes) -> Path:
    """Writes via a temporary file in the same directory and ``os.replace``: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8") if isinstance(text, str) else text)
        os.chmod(tmp, 0o644)                                   # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path, data: dict) -> Path:
    return write_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def save_figure(fig, path: Path) -> Path:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return write_atomic(path, buf.getvalue())


def stats_ms(seconds: list[float]) -> dict:
    ms = sorted(s * 1000 for s in seconds)
    q = lambda p: ms[min(len(ms) - 1, int(round(p * (len(ms) - 1))))]       # noqa: E731
    return {"n": len(ms), "median_ms": round(statistics.median(ms), 3), "mean_ms": round(statistics.fmean(ms), 3),
            "p10_ms": round(q(0.10), 3), "p90_ms": round(q(0.90), 3), "min_ms": round(ms[0], 3)}


def markdown_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    head = "| " + " | ".join(title for _, title in columns) + " |"
    sep = "| " + " | ".join("---" for _ in columns) + " |"
    body = ["| " + " | ".join(str(r.get(key, "")) for key, _ in columns) + " |" for r in rows]
    return "\n".join([head, sep] + body)
