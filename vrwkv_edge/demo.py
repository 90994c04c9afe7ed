"""``vrwkv-edge demo``: the embedded VisualRWKV answers questions about pictures it has never seen, on PyTorch and
on its ONNX export.

The default model (:data:`DEFAULT_VISUAL_MODEL`, shipped in ``vrwkv_edge/data/``) is a small VisualRWKV
(Vision-RWKV tower + RWKV-7 language model with the World vocabulary) trained from scratch by this package's
``vrwkv-edge train`` on the synthetic shapes task of :mod:`vrwkv_edge.training.synthetic` (configuration
``training/configs/synthetic_default.yaml``; results in ``training/results/``).  The demo

1. draws a few new scenes (shapes, colours, sizes, positions) with Pillow, from ``--seed``;
2. asks questions about each one and answers them greedily with the PyTorch runtime;
3. exports the model to ONNX (fp32) into a cache directory on first use (``--cache-dir``, default
   ``~/.cache/vrwkv_edge/demo``; reused while the model file is unchanged) and answers the same questions
   with ONNX Runtime;
4. prints every answer with the expected one, the agreement of the two backends, and each backend's time to
   first token (prefill, image included) and decode speed.

Without the ``export`` extra (onnx, onnxscript, onnxruntime) the ONNX half is skipped with a note.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import random
import sys
import time
from pathlib import Path

import torch

from . import __version__
from .export import export_model
from .loading import load_model
from .runtime.ort import load_onnx_model
from .tokenizer import load_tokenizer
from .training.evaluate import answer_question
from .training.synthetic import draw_scene, questions, random_scene

DATA = Path(__file__).resolve().parent / "data"
DEFAULT_VISUAL_MODEL = DATA / "vrwkv-shapes-8.6M.safetensors"
DEMO_IMAGES = 3
DEMO_QUESTIONS_PER_IMAGE = 3
EXPORT_MODULES = ("onnx", "onnxscript", "onnxruntime")
MAX_ANSWER_TOKENS = 16


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vrwkv_edge" / "demo"


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def missing_export_modules() -> list[str]:
    return [m for m in EXPORT_MODULES if importlib.util.find_spec(m) is None]


def demo_scenes(n: int, seed: int) -> list[tuple]:
    """``n`` (image, [(question, expected answer)]) drawn from the synthetic task's generator."""
    out = []
    for i in range(n):
        rng = random.Random(f"vrwkv-edge-demo:{seed}:{i}")
        shapes = random_scene(rng)
        image = draw_scene(shapes, rng)
        out.append((image, shapes, questions(shapes, rng)[:DEMO_QUESTIONS_PER_IMAGE]))
    return out


def cached_export(model, model_path: Path, cache_dir: Path, out) -> Path:
    """The fp32 ONNX export of ``model`` under ``cache_dir`` (made now if missing, atomically)."""
    target = cache_dir / f"{model_path.stem}-{file_digest(model_path)}-fp32"
    if (target / "metadata.json").is_file():
        print(f"onnx: using the cached export {target}", file=out)
        return target
    print(f"onnx: exporting to {target} (first run only) ...", file=out)
    t0 = time.perf_counter()
    export_model(model, target, dtype="fp32", embeds=False, progress=False, overwrite=True)
    print(f"onnx: exported in {time.perf_counter() - t0:.1f} s", file=out)
    return target


def answer_all(model, tokenizer, scenes) -> tuple[list, dict]:
    """Greedy answers to every question; returns (texts, timing totals)."""
    texts, ttft, decode_s, tokens = [], [], 0.0, 0
    for image, _, qa in scenes:
        for question, _ in qa:
            res = answer_question(model, tokenizer, {"question": question, "image": [image]}, MAX_ANSWER_TOKENS)
            texts.append(res.text)
            ttft.append(res.timings["prefill_s"])
            decode_s += res.timings["decode_s"]
            # the stop token is chosen from the last decode logits: count it as produced
            tokens += len(res.output_ids)
    steps = max(tokens - len(texts), 0)            # decode steps run = tokens after the first of each answer
    return texts, {"ttft_ms": 1000 * sum(ttft) / len(ttft), "tokens": tokens,
                   "decode_tokens_per_s": steps / decode_s if decode_s > 0 and steps else float("nan")}


def cmd_demo(args, out=None) -> int:
    out = out or sys.stderr
    if args.images < 1:
        raise ValueError(f"--images must be >= 1, got {args.images}")
    torch.set_grad_enabled(False)
    if args.threads:
        torch.set_num_threads(args.threads)
    model_path = Path(args.model) if args.model else DEFAULT_VISUAL_MODEL
    model = load_model(model_path)
    if not hasattr(model, "vcfg"):
        raise ValueError(f"{model_path}: the demo needs a VisualRWKV checkpoint (an image model)")
    tok = load_tokenizer()
    print(f"vrwkv_edge {__version__} demo: {model_path.name} (VisualRWKV {model.visual_version}, RWKV-7 "
          f"{model.cfg.n_layer}x{model.cfg.n_embd} + Vision-RWKV tower, {model.num_parameters():,} parameters, "
          f"{model.tokens_per_image} tokens per image; trained by vrwkv-edge train on synthetic shapes)", file=out)
    scenes = demo_scenes(args.images, args.seed)
    answers = {"pytorch": answer_all(model, tok, scenes)}
    skipped = None
    if args.no_onnx:
        skipped = "--no-onnx"
    elif missing_export_modules():
        skipped = (f"the export extra is not installed ({', '.join(missing_export_modules())}); "
                   f"pip install 'vrwkv_edge[export]'")
    else:
        directory = cached_export(model, model_path, Path(args.cache_dir or default_cache_dir()), out)
        ort = load_onnx_model(directory)
        answers["onnx"] = answer_all(ort, tok, scenes)
    if args.save_images:
        Path(args.save_images).mkdir(parents=True, exist_ok=True)
    n, right, agree = 0, {k: 0 for k in answers}, 0
    for i, (image, shapes, qa) in enumerate(scenes):
        desc = ", ".join(f"{s.size} {s.color} {s.kind} ({' '.join(map(str, s.cell))})" for s in shapes)
        where = ""
        if args.save_images:
            path = Path(args.save_images) / f"demo-{args.seed}-{i}.png"
            image.save(path)
            where = f" -> {path}"
        print(f"\nimage {i + 1}: {desc}{where}", file=sys.stdout)
        for question, expected in qa:
            got = {k: v[0][n] for k, v in answers.items()}
            for k, v in got.items():
                right[k] += v == expected
            same = len(set(got.values())) == 1
            agree += same
            line = "  ".join(f"{k}: {v!r}" for k, v in got.items())
            print(f"  Q: {question}\n     {line}   (expected {expected!r}{'' if same else ', BACKENDS DIFFER'})",
                  file=sys.stdout)
            n += 1
    print("", file=out)
    for k, (_, t) in answers.items():
        print(f"{k:>8}: {right[k]}/{n} correct, TTFT {t['ttft_ms']:.1f} ms (image + prompt), "
              f"{t['decode_tokens_per_s']:.1f} tokens/s decode", file=out)
    if skipped:
        print(f"    onnx: skipped ({skipped})", file=out)
    else:
        print(f"agreement: {agree}/{n} answers identical on PyTorch and ONNX Runtime", file=out)
    return 0


def add_demo_cli(sub) -> None:
    p = sub.add_parser("demo", help="the embedded VisualRWKV answers questions about new pictures (PyTorch + ONNX)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=None, help=f"a VisualRWKV checkpoint (default: the embedded "
                                                            f"{DEFAULT_VISUAL_MODEL.name})")
    p.add_argument("--images", type=int, default=DEMO_IMAGES, help="scenes to draw")
    p.add_argument("--seed", type=int, default=0, help="which scenes")
    p.add_argument("--no-onnx", action="store_true", help="PyTorch only (no export)")
    p.add_argument("--cache-dir", type=Path, default=None, help="where the ONNX export is kept (default "
                                                                 "~/.cache/vrwkv_edge/demo)")
    p.add_argument("--save-images", type=Path, default=None, help="write the drawn scenes as PNG files here")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.set_defaults(func=cmd_demo)
