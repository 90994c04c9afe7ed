"""``vrwkv-edge chat`` and ``vrwkv-edge eval`` for VisualRWKV checkpoints.

    vrwkv-edge chat [--model CKPT] --image PATH [--prompt TEXT]      (default model: the embedded one)
        one answer to --prompt (streamed), or an interactive session when no prompt is given
        (commands: /image PATH [PATH ...] (new conversation), /reset, /quit; Ctrl-D ends)
    vrwkv-edge eval --model CKPT --question-file Q.jsonl --answers-file A.jsonl [--image-folder DIR]
        LLaVA-style questions ({"question_id", "image", "text"} per line, or a .json list) -> one answer line per
        question in the original evaluate.py format ({"question_id", "prompt", "text", "avg_logit", "avg_prob",
        "model_id", "metadata": {"image_file"}}), greedy, max 128 new tokens, stop at "\\n\\n"; lines are written
        and flushed one by one and a rerun resumes, skipping question_ids already in the answers file.

``add_visual_cli(subparsers)`` registers both on the main ``vrwkv-edge`` parser; ``python -m
vrwkv_edge.visualrwkv.cli chat|eval ...`` runs them standalone.  ``--model`` accepts a full VisualRWKV file or either
half of a split ``*_rwkv`` / ``*_visual`` pair (``--visual`` names the visual half explicitly).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch
from tqdm import tqdm

from ..cli_support import flag_names, read_text_file, run_command, text_argument
from ..demo import DEFAULT_VISUAL_MODEL
from ..generation import SamplingParams
from ..loading import load_model
from ..tokenizer import load_tokenizer
from .cache import ImageStateCache
from .loading import assemble_vrwkv_visual_model, load_visual_model, save_visual_checkpoint
from .model import VisualRWKV
from .prompts import IMAGE_TAG, question_prompt
from .runtime import CHAT_STOP_TOKENS, ChatSession, answer, chat_params, eval_params

SCAN_CHOICES = ("unidirectional", "bidirectional", "multidirectional")


# ---- shared ------------------------------------------------------------------------------------------------
def _add_model_args(p: argparse.ArgumentParser, default_model: bool = False) -> None:
    if default_model:          # chat: without --model, the embedded default model (vrwkv_edge.demo)
        p.add_argument("--model", type=Path, default=None,
                       help="VisualRWKV checkpoint (full, or one half of a pair); default: the embedded model")
    else:
        p.add_argument("--model", required=True, type=Path,
                       help="VisualRWKV checkpoint (full, or one half of a pair)")
    p.add_argument("--visual", type=Path, default=None, help="the *_visual file, if not next to --model")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--scan", default=None, choices=SCAN_CHOICES,
                   help="image scan in the LM (default: bidirectional for v6, unidirectional for v7)")
    p.add_argument("--image-position", default=None, choices=["first", "middle", "last"],
                   help="v6 prompt: image first/last or the sandwich prompt (default middle)")
    p.add_argument("--grid-size", type=int, default=None, help="v6 grid pooling (-1 = 577 tokens, the default)")
    p.add_argument("--num-token-per-image", type=int, default=None,
                   help="tokens per image after pooling, v7 and Vision-RWKV towers (default: the whole grid)")
    p.add_argument("--image-size", type=int, default=None,
                   help="Vision-RWKV tower input size in pixels (default: the backbone's own)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def load_visual(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    overrides = dict(scan=args.scan, image_position=args.image_position, grid_size=args.grid_size,
                     num_token_per_image=args.num_token_per_image, image_size=args.image_size)
    if args.model is None:
        args.model = DEFAULT_VISUAL_MODEL
    if args.visual is not None or any(v is not None for v in overrides.values()):
        model = load_visual_model(args.model, dtype=args.dtype, visual_path=args.visual, **overrides)
    else:
        model = load_model(args.model, dtype=args.dtype)
    if not isinstance(model, VisualRWKV):
        raise ValueError(f"{args.model}: a plain RWKV language model, not a VisualRWKV checkpoint "
                         f"(no vit.* / proj.* weights and no *_visual file next to it)")
    return model


def _tokenizer(model):
    tok = load_tokenizer()
    if model.cfg.vocab_size < len(tok):
        raise ValueError(f"the model has {model.cfg.vocab_size} embedding rows, fewer than the World tokenizer's "
                         f"{len(tok)} tokens")
    return tok


# ---- chat --------------------------------------------------------------------------------------------------
def _chat_sampling(args) -> SamplingParams:
    with flag_names():
        return _chat_params(args)


def _chat_params(args) -> SamplingParams:
    if args.greedy:
        return SamplingParams.greedy(max_new_tokens=args.max_new_tokens, stop_tokens=CHAT_STOP_TOKENS)
    return chat_params(temperature=args.temperature, top_p=args.top_p, frequency_penalty=args.frequency_penalty,
                       presence_penalty=args.presence_penalty, penalty_decay=args.penalty_decay,
                       max_new_tokens=args.max_new_tokens, seed=args.seed)


def cmd_chat(args, stdin=None, stdout=None) -> int:
    stdin = stdin or sys.stdin
    out = stdout or sys.stdout
    model = load_visual(args)
    tok = _tokenizer(model)
    images = list(args.image or [])
    if model.visual_version == "v6" and len(images) > 1:
        raise ValueError("VisualRWKV v6 takes one image per conversation")
    session = ChatSession(model, tok, images, _chat_sampling(args))

    def write(s):
        out.write(s)
        out.flush()

    def ask(q):
        res = session.ask(q, on_text=write)
        write("\n")
        if args.stats:
            print(json.dumps({"finish_reason": res.finish_reason, **res.timings}), file=sys.stderr)

    if args.prompt is not None:
        if not text_argument(args.prompt, "--prompt").strip():
            raise ValueError("--prompt is empty")
        ask(args.prompt)
        return 0
    interactive = hasattr(stdin, "isatty") and stdin.isatty()
    if interactive:
        print(f"VisualRWKV {model.visual_version} chat about {', '.join(map(str, images)) or 'no image'}; "
              f"/image PATH, /reset, /quit", file=sys.stderr)
    while True:
        if interactive:
            write("User: ")
        line = stdin.readline()
        if not line:
            break
        q = line.strip()
        if not q:
            continue
        if q in ("/quit", "/exit"):
            break
        if q == "/reset":
            session.reset()
            continue
        if q.startswith("/image"):
            paths = q.split()[1:]
            if not paths:
                print("usage: /image PATH [PATH ...]", file=sys.stderr)
                continue
            session.set_images(paths)
            continue
        if interactive:
            write("Assistant:")
        ask(q)
    return 0


# ---- eval --------------------------------------------------------------------------------------------------
def load_questions(path: Path) -> list[dict]:
    """A LLaVA-style question file: one JSON object per line (``.jsonl``) or a JSON list (``.json``); every
    question is checked here (an object with an id, a text and string image names), naming the file and line."""
    path = Path(path)
    if path.suffix not in (".jsonl", ".json"):
        raise ValueError(f"{path}: unsupported question file type {path.suffix!r} (use .jsonl or .json)")
    text = read_text_file(path, "--question-file")
    try:
        if path.suffix == ".json":
            data = json.loads(text)
            if not isinstance(data, list):
                raise ValueError(f"{path}: expected a JSON list of questions")
            entries = [(f"{path}[{n}]", q) for n, q in enumerate(data)]
        else:
            entries = [(f"{path}:{n}", json.loads(line)) for n, line in enumerate(text.splitlines(), 1)
                       if line.strip()]
    except (json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from None
    for where, q in entries:
        check_question(q, where)
    return [q for _, q in entries]


def check_question(q, where: str) -> None:
    if not isinstance(q, dict):
        raise ValueError(f"{where}: a question must be a JSON object, got {type(q).__name__}")
    question_id(q, where)
    if not isinstance(question_text(q, where), str):
        raise ValueError(f"{where}: the question text must be a string")
    image = q.get("image")
    images = image if isinstance(image, list) else [] if image is None else [image]
    if not all(isinstance(p, str) and p for p in images):
        raise ValueError(f"{where}: 'image' must be a file name or a list of file names, got {image!r}")


def question_id(line: dict, where: str = "question"):
    for k in ("question_id", "id", "index"):
        if k in line:
            return line[k]
    raise ValueError(f"{where}: no question id (question_id / id / index)")


def question_text(line: dict, where: str = "question") -> str:
    if "text" in line:
        return line["text"]
    conv = line.get("conversations")
    if isinstance(conv, list) and conv and isinstance(conv[0], dict) and "value" in conv[0]:
        return conv[0]["value"]
    raise ValueError(f"{where}: no question text ('text', or 'conversations' with a first 'value')")


def get_chunk(items: list, num_chunks: int, chunk_idx: int) -> list:
    """evaluate.py's split: ceil(len / n)-sized consecutive chunks."""
    if num_chunks < 1 or not 0 <= chunk_idx < num_chunks:
        raise ValueError(f"--chunk-idx must be in [0, {num_chunks})")
    size = math.ceil(len(items) / num_chunks) if items else 1
    chunks = [items[i:i + size] for i in range(0, len(items), size)]
    return chunks[chunk_idx] if chunk_idx < len(chunks) else []


def done_question_ids(path: Path) -> set:
    """question_ids already answered; a partial last line (a killed run) is cut off the file."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with open(path, "r+b") as f:
            f.truncate(cut)
        data = data[:cut]
    done = set()
    for line in data.decode("utf-8", errors="replace").splitlines():     # our own output; skip what is damaged
        if line.strip():
            try:
                done.add(json.dumps(json.loads(line)["question_id"]))
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    return done


def cmd_eval(args) -> int:
    questions = get_chunk(load_questions(args.question_file), args.num_chunks, args.chunk_idx)   # cheap checks first
    model = load_visual(args)
    tok = _tokenizer(model)
    out_path = Path(args.answers_file)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    done = done_question_ids(out_path)
    todo = [q for q in questions if json.dumps(question_id(q)) not in done]
    model_id = args.model_id or Path(args.model).parent.name
    folder = Path(args.image_folder) if args.image_folder is not None else None
    version = model.visual_version
    params = eval_params(args.max_new_tokens)
    cache = ImageStateCache(args.cache_size) if args.cache_size > 0 else None
    skipped = 0
    with open(out_path, "a", encoding="utf-8") as f, \
            tqdm(total=len(questions), initial=len(questions) - len(todo), disable=args.no_progress,
                 desc="eval", unit="q") as bar:
        for line in todo:
            qid = question_id(line)
            image_field = line.get("image")
            files = [] if image_field is None else (image_field if isinstance(image_field, list) else [image_field])
            paths = [folder / p if folder is not None else Path(p) for p in files]
            if not paths and version == "v7":
                skipped += 1                            # v7 evaluate.py skips lines without an image
                bar.update(1)
                continue
            text = question_text(line)
            if version == "v6":
                prompt = question_prompt(tok, text, "v6", image_position=model.vcfg.image_position, num_images=1)
                items = prompt.with_images([paths[0] if paths else _zero_image_embedding(model)])
            else:
                prompt = question_prompt(tok, text.replace(IMAGE_TAG, ""), "v7", num_images=len(paths))
                items = prompt.with_images(paths)
            res = answer(model, tok, items, params, cache=cache)
            rec = {"question_id": qid, "prompt": prompt.text, "text": res.text,
                   "avg_logit": str(round(res.avg_logit, 3)), "avg_prob": str(round(res.avg_prob, 3)),
                   "model_id": model_id, "metadata": {"image_file": image_field}}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            f.flush()
            bar.update(1)
    if skipped:
        print(f"skipped {skipped} question(s) without an image (as v7 evaluate.py does)", file=sys.stderr)
    return 0


def _zero_image_embedding(model):
    """v6 evaluate.py feeds an all-zero pixel tensor (already normalised) for a question without an image."""
    pixels = {k: torch.zeros(3, t.size, t.size) for k, t in model.transforms.items()}
    return model.encode_images([next(iter(pixels.values())) if len(pixels) == 1 else pixels])[0]


# ---- registration ------------------------------------------------------------------------------------------
def add_visual_cli(subparsers) -> None:
    p = subparsers.add_parser("chat", help="chat about an image with a VisualRWKV model (streamed)")
    _add_model_args(p, default_model=True)
    p.add_argument("--image", action="append", default=None, help="image path (repeat for several, v7)")
    p.add_argument("--prompt", default=None, help="one question; interactive session when omitted")
    g = p.add_argument_group("sampling (defaults: the VisualRWKV demo apps)")
    g.add_argument("--greedy", action="store_true", help="greedy decoding (as evaluate.py)")
    g.add_argument("--temperature", type=float, default=0.2)
    g.add_argument("--top-p", type=float, default=0.3)
    g.add_argument("--frequency-penalty", type=float, default=1.0)
    g.add_argument("--presence-penalty", type=float, default=0.0)
    g.add_argument("--penalty-decay", type=float, default=0.996)
    g.add_argument("--max-new-tokens", type=int, default=256)
    g.add_argument("--seed", type=int, default=None)
    p.add_argument("--stats", action="store_true", help="timings as JSON on stderr")
    p.set_defaults(func=cmd_chat)

    p = subparsers.add_parser("eval", help="answer a LLaVA-style question file (evaluate.py format, resumable)")
    _add_model_args(p)
    p.add_argument("--question-file", required=True, type=Path)
    p.add_argument("--answers-file", required=True, type=Path)
    p.add_argument("--image-folder", type=Path, default=None)
    p.add_argument("--model-id", default=None, help="default: the checkpoint's folder name (as evaluate.py)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--num-chunks", type=int, default=1)
    p.add_argument("--chunk-idx", type=int, default=0)
    p.add_argument("--cache-size", type=int, default=4, help="image-state cache entries (0 = off)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = subparsers.add_parser("assemble", help="a VisualRWKV with a Vision-RWKV tower from an LM and a Vision-RWKV "
                                               "checkpoint (fresh projector: the start of stage-1 training)")
    p.add_argument("--lm", required=True, type=Path, help="RWKV-6/7 language-model checkpoint")
    p.add_argument("--tower", required=True,
                   help="official Vision-RWKV checkpoint (head dropped), or a preset name for random weights")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--version", default=None, choices=["v6", "v7"], help="prompts and scan (default: the LM's)")
    p.add_argument("--proj-type", default="linear", choices=["linear", "mlp"])
    p.add_argument("--num-token-per-image", type=int, default=None)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=0, help="projector initialisation")
    p.add_argument("--split", action="store_true", help="write the *_rwkv + *_visual pair")
    p.set_defaults(func=cmd_assemble)


def cmd_assemble(args) -> int:
    torch.set_grad_enabled(False)
    model = assemble_vrwkv_visual_model(args.lm, args.tower, version=args.version, proj_type=args.proj_type,
                                        num_token_per_image=args.num_token_per_image, image_size=args.image_size,
                                        seed=args.seed)
    paths = save_visual_checkpoint(model, args.out, split=args.split)
    info = model.info()
    print(f"wrote {', '.join(map(str, paths))}: VisualRWKV {info['visual']['version']} with a "
          f"{info['visual']['vrwkv']['variant']} tower ({info['visual']['vrwkv']['embed_dims']} wide), "
          f"{model.tokens_per_image} tokens per image, {info['parameters']:,} parameters")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vrwkv_edge.visualrwkv.cli", description="VisualRWKV chat and eval")
    add_visual_cli(parser.add_subparsers(dest="command", required=True))
    return run_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
