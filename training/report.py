"""Records the embedded default model's results: exact match on the test split, the ONNX export's validation and
its greedy answers on the same split, with the training run's wall time and loss curve.

    python -m vrwkv_edge.training.report --run build/runs/synthetic_default \\
        --model vrwkv_edge/data/vrwkv-shapes-8.6M.safetensors --test build/synthetic/test.json \\
        --out training/results

``--model`` is the shipped (fp16) file, evaluated as the demo and chat load it (fp32 compute).  Writes
``OUT/default_model.json`` (scores per question family, the export checks, timings), ``OUT/test_answers.jsonl``
and copies the run's ``metrics.jsonl`` / ``loss_curve.png`` / ``summary.json`` there.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from ..export import export_model
from ..export.validation import validate
from ..fileio import write_json
from ..loading import load_model
from ..runtime.ort import load_onnx_model
from ..tokenizer import load_tokenizer
from .evaluate import exact_match, read_questions


def question_family(question: str) -> str:
    words = question.split()
    if words[:2] == ["How", "many"]:
        return "count (all shapes)" if words[2] == "shapes" else (
            "count (by colour)" if words[3] == "shapes" else "count (by shape)")
    return {"What color": "colour", "What shape": "shape", "Where is": "position", "Is the": "size",
            "Is there": "presence"}.get(" ".join(words[:2]), "other")


def by_family(results: list) -> dict:
    fam = collections.defaultdict(lambda: [0, 0])
    for r in results:
        f = fam[question_family(r["question"])]
        f[0] += r["correct"]
        f[1] += 1
    return {k: {"correct": c, "total": n, "exact_match": c / n} for k, (c, n) in sorted(fam.items())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, required=True, help="the training run's out_dir")
    p.add_argument("--model", type=Path, required=True, help="the shipped checkpoint")
    p.add_argument("--test", type=Path, required=True, help="the test split (LLaVA JSON)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--train-wall-s", type=float, default=None, help="wall time of the training command")
    p.add_argument("--train-command", default="vrwkv-edge train --config training/configs/synthetic_default.yaml")
    a = p.parse_args(argv)
    torch.set_grad_enabled(False)
    tok = load_tokenizer()
    questions = read_questions(a.test)
    model = load_model(a.model)
    t0 = time.perf_counter()
    torch_scores = exact_match(model, tok, questions)
    torch_s = time.perf_counter() - t0
    print(f"pytorch: {torch_scores['exact_match']:.4f} exact match on {len(questions)} test questions", file=sys.stderr)

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "export"
        t0 = time.perf_counter()
        export_model(model, directory, dtype="fp32", embeds=False, progress=False)
        export_s = time.perf_counter() - t0
        report = validate(directory, model, tolerance=1e-4, verbose=False)
        ort = load_onnx_model(directory)
        t0 = time.perf_counter()
        ort_scores = exact_match(ort, tok, questions)
        ort_s = time.perf_counter() - t0
    same = sum(a_["output"] == b_["output"] for a_, b_ in zip(torch_scores["results"], ort_scores["results"]))
    print(f"onnx: {ort_scores['exact_match']:.4f}; identical answers {same}/{len(questions)}; validate "
          f"passed={report.passed} max_abs={report.max_abs_diff:.2e}", file=sys.stderr)

    a.out.mkdir(parents=True, exist_ok=True)
    for name in ("metrics.jsonl", "loss_curve.png", "summary.json", "config.json"):
        if (a.run / name).is_file():
            shutil.copyfile(a.run / name, a.out / name)
    with open(a.out / "test_answers.jsonl", "w", encoding="utf-8") as f:
        for t, o in zip(torch_scores["results"], ort_scores["results"]):
            f.write(json.dumps({**t, "onnx_output": o["output"]}) + "\n")
    result = {
        "model": {"file": a.model.name, "bytes": a.model.stat().st_size, "parameters": model.num_parameters(),
                  "info": model.info()},
        "test_split": {"file": str(a.test), "questions": len(questions),
                       "exact_match": torch_scores["exact_match"], "correct": torch_scores["correct"],
                       "by_family": by_family(torch_scores["results"]), "seconds": torch_s},
        "onnx": {"exact_match": ort_scores["exact_match"], "identical_answers": same,
                 "all_answers_identical": same == len(questions), "export_seconds": export_s,
                 "answer_seconds": ort_s,
                 "validate": {"passed": report.passed, "tolerance": report.tolerance, "max_abs": report.max_abs_diff,
                              "prefill_max_abs": report.prefill_max_abs,
                              "decode_max_abs": report.decode_max_abs, "greedy_agreement": report.greedy_agreement,
                              "with_image": report.with_image}},
        "training": {"command": a.train_command, "wall_seconds": a.train_wall_s,
                     "summary": json.loads((a.run / "summary.json").read_text()) if (a.run / "summary.json").is_file()
                     else None},
        "machine": {"cpus": os.cpu_count(), "load_average_at_report": os.getloadavg(),
                    "torch": torch.__version__},
    }
    write_json(a.out / "default_model.json", result)
    print(json.dumps({k: result[k] for k in ("test_split", "onnx")}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
