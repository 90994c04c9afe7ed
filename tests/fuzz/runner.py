"""Runs fuzz cases through ``vrwkv-edge``'s own ``main`` and judges each answer.

A case ends in one of: ``ok`` (exit 0, or exit 2 with one ``error:`` line that names the file, key or
argument), ``unnamed`` (a refusal that names nothing the user gave), ``accepted`` (exit 0 for an input that is
broken for sure), ``crash`` (an exception escaped: a traceback), ``hang`` (over the time limit) or
``code_execution`` (the pickled payload ran).  Only ``ok`` passes.

Run as a module for a long seeded sweep (a separate process with a bounded address space, so a runaway
allocation is a ``crash``, never an out-of-memory kill of the machine)::

    python -m tests.fuzz.runner --cases-per-kind 250 --out benchmarks/results/fuzz_sweep.json
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import resource
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

import torch

from tests.fuzz.cases import KINDS, Case, Fixtures, make_case
from vrwkv_edge.cli import main as cli_main
from vrwkv_edge.fileio import write_json

CASE_TIMEOUT_S = 60
# The sweep process may use this much address space; torch and onnxruntime reserve ~3 GiB at start.
ADDRESS_SPACE_LIMIT = 10 * 2 ** 30


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


def run_case(case: Case, marker: Path, timeout_s: float = CASE_TIMEOUT_S) -> dict:
    out, err = io.StringIO(), io.StringIO()
    grad = torch.is_grad_enabled()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    t0 = time.perf_counter()
    code, crash = None, None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli_main(case.argv)
    except SystemExit as e:                              # argparse's own refusals: exit 2 with "error:"
        code = e.code if isinstance(e.code, int) else 1
    except Hang:
        crash = "hang"
    except BaseException:                                # noqa: BLE001 - anything escaping is what we look for
        crash = traceback.format_exc(limit=6)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        torch.set_grad_enabled(grad)
    stderr = err.getvalue()
    result = {"kind": case.kind, "seed": case.seed, "note": case.note, "expect": case.expect, "exit": code,
              "seconds": round(time.perf_counter() - t0, 3), "error": _error_line(stderr)}
    if marker.exists():
        result["outcome"] = "code_execution"
    elif crash == "hang":
        result["outcome"] = "hang"
    elif crash is not None:
        result["outcome"], result["traceback"] = "crash", crash
    elif code == 0:
        result["outcome"] = "accepted" if case.expect == "refuse" else "ok"
    elif code == 2 and result["error"] and "Traceback" not in stderr:
        named = any(n.lower() in result["error"].lower() for n in case.names)
        result["outcome"] = "ok" if named else "unnamed"
    else:
        result["outcome"], result["stderr"] = "crash", stderr[-2000:]
    if result["outcome"] != "ok":
        result["argv"] = [a if len(a) < 200 else a[:200] + "..." for a in case.argv]
    return result


def _error_line(stderr: str) -> str:
    return next((line for line in stderr.splitlines() if "error:" in line), "")


def run(cases_per_kind: int, first_seed: int = 0, kinds=KINDS, budget_s: float = float("inf"),
        progress: bool = False) -> dict:
    """Runs ``cases_per_kind`` seeded cases of every kind (round robin, so a time budget cuts all kinds alike)."""
    root = Path(tempfile.mkdtemp(prefix="vrwkv-fuzz-"))
    t0 = time.perf_counter()
    try:
        fx = Fixtures(root / "fixtures")
        results = []
        for seed in range(first_seed, first_seed + cases_per_kind):
            if time.perf_counter() - t0 > budget_s:
                break
            for kind in kinds:
                work = root / "cases" / f"{kind}-{seed}"
                results.append(run_case(make_case(kind, seed, fx, work), fx.marker))
                shutil.rmtree(work, ignore_errors=True)
            if progress:
                print(f"\rseed {seed}: {Counter(r['outcome'] for r in results)}", end="", file=sys.stderr)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"cases": len(results), "seconds": round(time.perf_counter() - t0, 1),
            "outcomes": dict(Counter(r["outcome"] for r in results)),
            "by_kind": {k: dict(Counter(r["outcome"] for r in results if r["kind"] == k)) for k in kinds},
            "failures": [r for r in results if r["outcome"] != "ok"],
            "refusals_named": sum(1 for r in results if r["outcome"] == "ok" and r["exit"] == 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Seeded fuzzing of every vrwkv-edge input (see tests/fuzz/cases.py).")
    ap.add_argument("--cases-per-kind", type=int, default=40)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--budget-s", type=float, default=float("inf"), help="stop starting new seeds after this")
    ap.add_argument("--out", type=Path, default=None, help="write the summary as JSON here")
    args = ap.parse_args(argv)
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT, ADDRESS_SPACE_LIMIT))
    torch.set_num_threads(1)
    summary = run(args.cases_per_kind, args.first_seed, budget_s=args.budget_s, progress=True)
    summary["command"] = "python -m tests.fuzz.runner " + " ".join(argv if argv is not None else sys.argv[1:])
    print(file=sys.stderr)
    if args.out:
        write_json(args.out, summary)
    print(json.dumps({k: v for k, v in summary.items() if k != "failures"}, indent=1))
    for f in summary["failures"][:20]:
        print(json.dumps(f)[:600], file=sys.stderr)
    return 0 if not summary["failures"] else 1


if __name__ == "__main__":
    sys.exit(main())
