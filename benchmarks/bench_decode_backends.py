"""Decode ms/token of every way this project runs a 0.1B-shaped RWKV-7 on the CPU, in one run on the same seeded
random weights (preset ``rwkv7-0.1b``: 12 layers, width 768, World vocabulary 65536), batch 1, greedy:

* ``cpp``             the C++ app (vrwkv-chat ``--json``: its decode loop: sampling, streaming, the Run calls),
  and ``cpp_run``, the part of it inside ONNX Runtime's Run;
* ``python_ort``      the Python ONNX Runtime backend (``OrtModel.step``, prebound state), and ``python_ort_run``,
  the part inside ``run_with_iobinding``;
* ``bare_feeds``      a bare ``InferenceSession``: numpy feeds, the outputs fed back (what a hand-written loop does);
* ``bare_iobinding``  a bare session with two ping-ponged OrtValue sets bound once (the least Python possible);
* ``pytorch``         ``model.step`` (fp32 only);
* ``rwkv_cpu_fp32``   the official ``rwkv`` package, strategy 'cpu fp32', on the same weights (own process).

for fp32 and the quantized exports (``--quantize``, default int4 and int8), each with 2 threads and with 1
thread.  Reported: the C++ app's time outside Run (% of its step; target <= 2%), the Python backend's
time over the faster bare session (% of the bare step; target <= 5%), and the quantized C++ decode against the
``rwkv`` package (target >= 5x with 2 threads for int4).  A backend that refuses an export (e.g. a C++ runtime
without int4 yet) is noted in the results and its numbers are left out.  Each repeat runs every backend once, round robin, so a slow
patch of a shared machine hits all of them; medians over ``--repeats``.

    python benchmarks/bench_decode_backends.py                 # full run: refuses a busy machine
    python benchmarks/bench_decode_backends.py --quick         # rwkv7-tiny shapes (World vocabulary), seconds
    python benchmarks/bench_decode_backends.py --allow-busy    # runs anyway; the results are flagged busy

The load average is recorded at the start and the end; a run that starts at or above ``--max-load`` (default
0.5) stops unless ``--allow-busy``.  Writes ``benchmarks/results/decode_backends.json`` and ``.png``
(``decode_backends_quick.*`` with ``--quick``).  Without ``--chat`` the C++ runtime is built with CMake into a
temporary directory (ONNX Runtime headers: $VRWKV_ORT_INCLUDE_DIR, else fetched by CMake).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PROMPT = "The history of the region begins"
WORLD_VOCAB = 65536            # the C++ runtime's World tokenizer needs every row of the World vocabulary
TARGETS = {"cpp_outside_run_pct_max": 2.0, "python_over_bare_pct_max": 5.0, "int4_cpp_vs_rwkv_cpu_fp32_min": 5.0}


class BenchError(RuntimeError):
    """A refused or failed benchmark run: printed as ``error: ...``, exit 2."""


# ---- the backends ------------------------------------------------------------------------------------------
def build_chat(work: Path) -> Path:
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    inc = os.environ.get("VRWKV_ORT_INCLUDE_DIR")
    extra = [f"-DVRWKV_ORT_INCLUDE_DIR={inc}"] if inc else []
    for cmd in (["cmake", "-S", str(REPO / "csrc" / "runtime"), "-B", str(work / "build"), *gen,
                 "-DCMAKE_BUILD_TYPE=Release", *extra],
                ["cmake", "--build", str(work / "build"), "-j", "2", "--target", "vrwkv-chat"]):
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            raise BenchError(f"building vrwkv-chat failed ({' '.join(cmd[:2])}):\n{(r.stdout + r.stderr)[-3000:]}")
    return work / "build" / "examples" / "vrwkv-chat"


def ort_library() -> str:
    import onnxruntime

    return str(next((Path(onnxruntime.__file__).parent / "capi").glob("libonnxruntime.so.*")))


def time_cpp(chat: Path, export: Path, threads: int, tokens: int, work: Path) -> dict:
    out = work / "chat.json"
    r = subprocess.run([str(chat), "--model", str(export), "--ort-lib", ort_library(), "--threads", str(threads),
                        "--raw", "--prompt", PROMPT, "--greedy", "--no-stop", "--max-new-tokens", str(tokens),
                        "--json", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # (the streamed text goes to /dev/null: a pipe would wake its reader on every token, and on a shared machine
    # that wake-up can cost the app its core, which would be counted as overhead outside Run)
    if r.returncode:
        raise BenchError(f"vrwkv-chat on {export.name} exited {r.returncode}: {r.stderr.strip()[-500:]}")
    turn = json.loads(out.read_text())["turns"][0]
    n = len(turn["tokens"])
    return {"cpp": turn["decode_s"] * 1e3 / n, "cpp_run": turn["decode_run_s"] * 1e3 / n}


def time_python(model, ids: list[int], last: Optional[list] = None) -> dict:
    """OrtModel.step over ``ids`` from a fresh state; the split inside/outside ONNX Runtime's run.  ``last``
    (optional) receives the final logits."""
    state, before = model.new_state(1), model.run_stats()
    t0 = time.perf_counter()
    for t in ids:
        logits, state = model.step(torch.tensor([t]), state)
    total = time.perf_counter() - t0
    after = model.run_stats()
    if last is not None:
        last.append(logits.numpy().copy())
    runs = after["runs"] - before["runs"]
    if runs != len(ids):
        raise BenchError(f"python_ort: expected {len(ids)} prebound runs, counted {runs}")
    return {"python_ort": total * 1e3 / len(ids),
            "python_ort_run": (after["run_seconds"] - before["run_seconds"]) * 1e3 / len(ids)}


class BareSession:
    """A plain InferenceSession of a decode graph with the backend's session options, driven two ways."""

    def __init__(self, export: Path, threads: int):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        so.intra_op_num_threads = threads
        self.sess = ort.InferenceSession(str(export / "decode.onnx"), so, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.sess.get_inputs()]
        self.outputs = [o.name for o in self.sess.get_outputs()]
        self.zeros = [np.zeros([1 if isinstance(d, str) else d for d in i.shape], np.float32)
                      for i in self.sess.get_inputs()[1:]]

    def feeds(self, ids: list[int], last: Optional[list] = None) -> float:
        state = self.zeros
        t0 = time.perf_counter()
        for t in ids:
            outs = self.sess.run(None, {self.inputs[0]: np.array([t], np.int64), **dict(zip(self.inputs[1:], state))})
            state = outs[1:]
        ms = (time.perf_counter() - t0) * 1e3 / len(ids)
        if last is not None:
            last.append(outs[0])
        return ms

    def iobinding(self, ids: list[int], last: Optional[list] = None) -> float:
        import onnxruntime as ort

        sets = [[ort.OrtValue.ortvalue_from_numpy(z.copy()) for z in self.zeros] for _ in range(2)]
        logits = ort.OrtValue.ortvalue_from_numpy(np.zeros((1, self.sess.get_outputs()[0].shape[1]), np.float32))
        token = np.zeros(1, np.int64)
        token_value = ort.OrtValue.ortvalue_from_numpy(token)
        bindings = []
        for src in (0, 1):
            b = self.sess.io_binding()
            b.bind_ortvalue_input(self.inputs[0], token_value)
            for name, v in zip(self.inputs[1:], sets[src]):
                b.bind_ortvalue_input(name, v)
            b.bind_ortvalue_output(self.outputs[0], logits)
            for name, v in zip(self.outputs[1:], sets[1 - src]):
                b.bind_ortvalue_output(name, v)
            bindings.append(b)
        token_view = token_value.numpy()   # the OrtValue's own memory (CPU): written in place
        t0 = time.perf_counter()
        for k, t in enumerate(ids):
            token_view[0] = t
            self.sess.run_with_iobinding(bindings[k % 2])
        ms = (time.perf_counter() - t0) * 1e3 / len(ids)
        if last is not None:
            last.append(logits.numpy().copy())
        return ms


def time_rwkv_package(ckpt: Path, steps: int, threads: int, work: Path) -> float:
    res = work / "rwkv.json"
    r = subprocess.run([sys.executable, str(HERE / "rwkv_package_timer.py"), str(ckpt), "x070", str(steps), "4", "1",
                        str(WORLD_VOCAB), str(res), str(threads)], capture_output=True, text=True)
    if r.returncode:
        raise BenchError(f"rwkv_package_timer.py exited {r.returncode}: {r.stderr.strip()[-800:]}")
    step = json.loads(res.read_text())["step"]
    return step["median_s"] * 1e3 / step["tokens"]


# ---- the run -----------------------------------------------------------------------------------------------
def export_quantized(model, work: Path, modes: list[str], notes: list[str]) -> dict[str, Path]:
    """The quantized exports of ``modes`` that ``export_model`` supports (a refused one is noted and skipped)."""
    from vrwkv_edge.export import export_model

    out = {}
    for q in modes:
        try:
            out[q] = export_model(model, work / f"export-{q}", quantize=q, embeds=False, progress=False)
        except (ValueError, NotImplementedError) as e:
            notes.append(f"no {q} export: {e}")
    return out


def summarize(med: dict) -> dict:
    """The overhead percentages and the speed-up against the rwkv package (None where a backend is missing)."""
    bare = min(med["bare_feeds"], med["bare_iobinding"])
    cpp, ref = med.get("cpp"), med.get("rwkv_cpu_fp32")
    return {"cpp_outside_run_ms": None if cpp is None else cpp - med["cpp_run"],
            "cpp_outside_run_pct": None if cpp is None else 100 * (cpp - med["cpp_run"]) / cpp,
            "python_outside_run_ms": med["python_ort"] - med["python_ort_run"],
            "python_outside_run_pct": 100 * (med["python_ort"] - med["python_ort_run"]) / med["python_ort"],
            "python_over_bare_ms": med["python_ort"] - bare,
            "python_over_bare_pct": 100 * (med["python_ort"] - bare) / bare,
            "bare_ms": bare,
            "cpp_vs_rwkv_cpu_fp32": None if cpp is None or ref is None else ref / cpp,
            "python_ort_vs_rwkv_cpu_fp32": None if ref is None else ref / med["python_ort"]}


def run(args) -> dict:
    load_start = os.getloadavg()                 # before the imports: a refused run returns at once
    busy = load_start[0] >= args.max_load
    if busy and not args.allow_busy:
        raise BenchError(f"the machine is busy (load average {load_start[0]:.2f} >= --max-load {args.max_load}): "
                         f"timings would measure the other work; wait, or pass --allow-busy (results flagged busy)")
    from vrwkv_edge.bench import machine_info
    from vrwkv_edge.checkpoint import save_checkpoint
    from vrwkv_edge.config import preset
    from vrwkv_edge.export import export_model, load_onnx_model
    from vrwkv_edge.models import build_model

    torch.set_grad_enabled(False)
    cfg = dataclasses.replace(preset(args.preset), vocab_size=WORLD_VOCAB)
    model = build_model(cfg).init_random_(args.seed).eval()
    ids = [(i * 7919) % (WORLD_VOCAB - 1) + 1 for i in range(args.tokens)]
    rows, notes = [], []
    cpp_errors: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        chat = args.chat or build_chat(work)
        t0 = time.time()
        exports = {"fp32": export_model(model, work / "export-fp32", embeds=False, progress=False)}
        exports.update(export_quantized(model, work, args.quantize, notes))
        print(f"exported {', '.join(exports)} in {time.time() - t0:.0f} s", file=sys.stderr)
        ckpt = None if args.no_reference else save_checkpoint(model.state_dict(), work / "weights.pth")
        for threads in args.threads:
            torch.set_num_threads(threads)
            runners = {p: (load_onnx_model(e, threads=threads), BareSession(e, threads)) for p, e in exports.items()}
            for precision, (om, bare) in runners.items():     # warm-up, and the three give the same logits
                last: list = []
                time_python(om, ids[:4], last)
                bare.feeds(ids[:4], last)
                bare.iobinding(ids[:4], last)
                if not (np.array_equal(last[0], last[1]) and np.array_equal(last[0], last[2])):
                    raise BenchError(f"{precision}: the Python backend and the bare sessions disagree on the logits")
            samples: dict[str, dict[str, list[float]]] = {p: {} for p in exports}

            def add(precision: str, d: dict) -> None:
                for k, v in d.items():
                    samples[precision].setdefault(k, []).append(v)

            for _ in range(args.repeats):          # round robin: every backend once per repeat
                for precision, (om, bare) in runners.items():
                    if precision not in cpp_errors:
                        try:
                            add(precision, time_cpp(chat, exports[precision], threads, args.tokens, work))
                        except BenchError as e:         # e.g. a C++ runtime without this quantization yet
                            cpp_errors[precision] = str(e)
                            notes.append(f"C++ app, {precision}: {e}")
                    add(precision, time_python(om, ids))
                    add(precision, {"bare_feeds": bare.feeds(ids), "bare_iobinding": bare.iobinding(ids)})
                state = model.new_state(1)
                t1 = time.perf_counter()
                for t in ids:
                    _, state = model.step(torch.tensor([t]), state)
                add("fp32", {"pytorch": (time.perf_counter() - t1) * 1e3 / len(ids)})
                if ckpt is not None:
                    ref = time_rwkv_package(ckpt, args.tokens, threads, work)
                    for precision in exports:      # one measurement, the same weights for every row
                        add(precision, {"rwkv_cpu_fp32": ref})
            del runners
            for precision in exports:
                med = {k: statistics.median(v) for k, v in samples[precision].items()}
                row = {"precision": precision, "threads": threads, "ms_per_token": med,
                       "samples": samples[precision], **summarize(med)}
                rows.append(row)
                cpp_pct = row["cpp_outside_run_pct"]
                print(f"{precision} {threads} thread(s): " + ", ".join(f"{k} {v:.3f}" for k, v in med.items()) +
                      f" ms/token; C++ outside Run {'-' if cpp_pct is None else f'{cpp_pct:.2f}%'}, Python over "
                      f"bare {row['python_over_bare_pct']:+.2f}%", file=sys.stderr)
    load_end = os.getloadavg()
    busy = busy or load_end[0] >= args.max_load
    return {"benchmark": "decode_backends", "preset": args.preset, "config": json.loads(cfg.to_json()),
            "parameters": model.num_parameters(), "seed": args.seed, "tokens": args.tokens,
            "repeats": args.repeats, "precisions": list(exports), "machine": machine_info(bandwidth=False),
            "load_average_start": list(load_start), "load_average_end": list(load_end), "busy": busy,
            "max_load": args.max_load, "targets": TARGETS, "notes": notes,
            "command": "python benchmarks/bench_decode_backends.py " + " ".join(args.argv), "rows": rows}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vrwkv_edge.fileio import atomic_write

    backends = ["cpp", "python_ort", "bare_feeds", "bare_iobinding", "pytorch", "rwkv_cpu_fp32"]
    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(rows)
    for k, row in enumerate(rows):
        vals = [row["ms_per_token"].get(b, np.nan) for b in backends]
        xs = np.arange(len(backends)) + (k - (len(rows) - 1) / 2) * width
        ax.bar(xs, vals, width, label=f"{row['precision']}, {row['threads']} thread(s)")
    ax.set_xticks(np.arange(len(backends)), ["C++ app", "Python ORT", "bare ORT\n(feeds)", "bare ORT\n(IO binding)",
                                              "PyTorch\n(fp32)", "rwkv pkg\ncpu fp32"])
    ax.set_yscale("log")                         # the rwkv package and PyTorch are 3-60x the ORT backends
    ax.set_ylabel("decode ms/token (log scale, lower is better)")
    la, lb = result["load_average_start"][0], result["load_average_end"][0]
    ax.set_title(f"{result['preset']} decode, batch 1, {result['tokens']} tokens, median of {result['repeats']} "
                 f"(load {la:.2f} -> {lb:.2f}{', BUSY' if result['busy'] else ''})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_write(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default=None, help="model shapes (default rwkv7-0.1b; --quick: rwkv7-tiny)")
    ap.add_argument("--tokens", type=int, default=None, help="decode steps per timing (default 64; --quick 8)")
    ap.add_argument("--repeats", type=int, default=None, help="round-robin repeats (default 5; --quick 1)")
    ap.add_argument("--threads", default="2,1", help="comma list of thread counts (default 2,1)")
    ap.add_argument("--quantize", default="int4,int8",
                    help="comma list of quantized exports to time beside fp32 (default int4,int8; '' for none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chat", type=Path, help="a built vrwkv-chat (default: build one)")
    ap.add_argument("--no-reference", action="store_true", help="skip the rwkv package")
    ap.add_argument("--max-load", type=float, default=0.5)
    ap.add_argument("--allow-busy", action="store_true")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (the PNG goes beside it)")
    args = ap.parse_args(argv)
    args.argv = argv
    args.preset = args.preset or ("rwkv7-tiny" if args.quick else "rwkv7-0.1b")
    args.tokens = args.tokens or (8 if args.quick else 64)
    args.repeats = args.repeats or (1 if args.quick else 5)
    args.quantize = [q for q in args.quantize.split(",") if q]
    if any(q not in ("int4", "int8") for q in args.quantize):
        ap.error(f"--quantize: expected a comma list of int4 and int8, got {','.join(args.quantize)!r}")
    try:
        args.threads = [int(t) for t in args.threads.split(",")]
    except ValueError:
        ap.error(f"--threads: expected a comma list of integers, got {args.threads!r}")
    if args.tokens < 1 or args.repeats < 1 or min(args.threads) < 1:
        ap.error("--tokens, --repeats and --threads must be >= 1")
    if args.chat is not None and not args.chat.is_file():
        ap.error(f"--chat: {args.chat} is not a file")
    out = args.out or HERE / "results" / ("decode_backends_quick.json" if args.quick else "decode_backends.json")
    try:
        result = run(args)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from vrwkv_edge.fileio import write_json

    write_json(out, result)
    plot(result, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png').name}" + (" (BUSY machine: flagged)" if result["busy"] else ""),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
