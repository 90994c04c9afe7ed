"""Exact-match scoring of a VisualRWKV on LLaVA-format question records, through the inference path.

Each record's FIRST human turn is the question (its ``<image>`` tag removed) and the gpt turn after it the
reference answer.  The prompt is :func:`~vrwkv_edge.visualrwkv.prompts.question_prompt` (the template the model
is deployed with), the answer greedy with the ``evaluate.py`` settings (:func:`~vrwkv_edge.visualrwkv.answer`),
and a question counts when the stripped answer equals the reference exactly.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

import torch

from ..fileio import PathLike
from ..visualrwkv.prompts import IMAGE_TAG, question_prompt
from ..visualrwkv.runtime import answer, eval_params


def read_questions(path: PathLike, image_folder: Optional[PathLike] = None, limit: int = 0) -> list[dict]:
    """``[{"id", "image": [paths], "question", "answer"}]`` from a LLaVA JSON list (first turn pair)."""
    path = Path(path)
    base = Path(image_folder) if image_folder is not None else path.parent
    records = json.loads(path.read_text(encoding="utf-8"))
    out = []
    for n, rec in enumerate(records[: limit or None]):
        conv = rec.get("conversations") or []
        if len(conv) < 2 or conv[0].get("from") != "human" or conv[1].get("from") != "gpt":
            raise ValueError(f"{path}: record {n} (id {rec.get('id')!r}) does not start with a human/gpt pair")
        images = rec.get("image") or []
        images = [images] if isinstance(images, str) else list(images)
        out.append({"id": rec.get("id", str(n)), "image": [str(base / p) for p in images],
                    "question": conv[0]["value"].replace(IMAGE_TAG, "").strip(),
                    "answer": conv[1]["value"].strip()})
    return out


def answer_question(model, tokenizer, q: dict, max_new_tokens: int = 16):
    prompt = question_prompt(tokenizer, q["question"], model.visual_version,
                             image_position=model.vcfg.image_position, num_images=len(q["image"]))
    return answer(model, tokenizer, prompt.with_images(q["image"]), eval_params(max_new_tokens))


def exact_match(model, tokenizer, questions: list[dict], on_result: Optional[Callable[[dict], None]] = None,
                max_new_tokens: int = 16) -> dict:
    """Scores ``questions``; returns ``{"exact_match", "correct", "total", "results"}``."""
    was_training = getattr(model, "training", None)        # None: not an nn.Module (an ONNX Runtime backend)
    if was_training is not None:
        model.eval()
    results = []
    try:
        with torch.no_grad():
            for q in questions:
                res = answer_question(model, tokenizer, q, max_new_tokens)
                row = {"id": q["id"], "question": q["question"], "answer": q["answer"], "output": res.text,
                       "correct": res.text == q["answer"]}
                results.append(row)
                if on_result is not None:
                    on_result(row)
    finally:
        if was_training is not None:
            model.train(was_training)
    correct = sum(r["correct"] for r in results)
    return {"exact_match": correct / max(len(results), 1), "correct": correct, "total": len(results),
            "results": results}
