"""``vrwkv-edge``: the command-line interface.

    vrwkv-edge demo                                   generation on the embedded default model (no download)
    vrwkv-edge info CKPT                              sizes and parameter count of a checkpoint
    vrwkv-edge generate --model CKPT --prompt TEXT    streamed generation
    vrwkv-edge chat / eval                            VisualRWKV (vrwkv_edge.visual.cli)
    vrwkv-edge classify                               Vision-RWKV image classification (vrwkv_edge.vision.cli)
    vrwkv-edge export / validate                      ONNX artefacts (vrwkv_edge.export.cli)
    vrwkv-edge bench                                  benchmarks (vrwkv_edge.bench)
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Optional, Sequence

import torch

from . import __version__
from .generation import SamplingParams, TextStreamer, generate_stream

DATA = Path(__file__).resolve().parent / "data"
DEMO_MODEL = DATA / "tiny-rwkv7-834K.safetensors"
DEMO_PROMPT = "The"
# Sub-commands that live with the parts they belong to: (module, function that registers them).
PLUGINS = [("vrwkv_edge.visual.cli", "add_visual_cli"), ("vrwkv_edge.vision.cli", "add_classify_cli"),
           ("vrwkv_edge.export.cli", "add_export_cli"), ("vrwkv_edge.bench", "add_bench_cli")]


def add_sampling_args(p: argparse.ArgumentParser, **overrides) -> None:
    """One flag per SamplingParams field; the defaults come from the dataclass (defined once)."""
    defaults = {**{f.name: f.default for f in fields(SamplingParams)}, **overrides}
    g = p.add_argument_group("sampling")
    g.add_argument("--temperature", type=float, default=defaults["temperature"], help="0 = greedy")
    g.add_argument("--top-p", type=float, default=defaults["top_p"])
    g.add_argument("--top-k", type=int, default=defaults["top_k"], help="0 = off")
    g.add_argument("--presence-penalty", type=float, default=defaults["presence_penalty"])
    g.add_argument("--frequency-penalty", type=float, default=defaults["frequency_penalty"])
    g.add_argument("--penalty-decay", type=float, default=defaults["penalty_decay"])
    g.add_argument("--max-new-tokens", type=int, default=defaults["max_new_tokens"])
    g.add_argument("--stop-token", type=int, action="append", dest="stop_tokens",
                   help=f"repeatable; default {list(defaults['stop_tokens'])}")
    g.add_argument("--no-stop", action="store_true", help="ignore stop tokens (generate max-new-tokens)")
    g.add_argument("--seed", type=int, default=defaults["seed"])


def sampling_from_args(args) -> SamplingParams:
    stops = () if args.no_stop else tuple(args.stop_tokens or SamplingParams.stop_tokens)
    return SamplingParams(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                          presence_penalty=args.presence_penalty, frequency_penalty=args.frequency_penalty,
                          penalty_decay=args.penalty_decay, max_new_tokens=args.max_new_tokens,
                          stop_tokens=stops, seed=args.seed)


def tokenizer_for(model, name: str = "auto"):
    """``world`` (65536-row models), ``bytes`` (256-row byte-level models such as the demo), or a vocab file."""
    from .tokenizer import ByteTokenizer, load_tokenizer
    vocab = model.cfg.vocab_size
    if name == "auto":
        name = "bytes" if vocab == 256 else "world"
    if name == "bytes":
        return ByteTokenizer()
    tok = load_tokenizer(None if name == "world" else name)
    if vocab < len(tok):
        raise ValueError(f"the tokenizer has {len(tok)} tokens but the model only {vocab} embedding rows; "
                         f"pass --tokenizer bytes or a matching vocabulary file")
    return tok


def run_generation(model, tok, prompt: str, params: SamplingParams, out=None) -> dict:
    out = out or sys.stdout
    ids = tok.encode(prompt)
    if not ids:
        raise SystemExit("error: --prompt is empty: nothing to condition on")
    t0 = time.perf_counter()
    logits, state = model.forward(torch.tensor([ids]), last_only=True)
    t_prefill = time.perf_counter() - t0
    streamer = TextStreamer(tok)
    n = 0
    t1 = time.perf_counter()
    for token in generate_stream(model, state=state, prefix_logits=logits, params=params):
        if int(token[0]) in params.stop_tokens:
            break
        out.write(streamer.push(int(token[0])))
        out.flush()
        n += 1
    out.write(streamer.flush() + "\n")
    t_decode = time.perf_counter() - t1
    return {"prompt_tokens": len(ids), "new_tokens": n, "prefill_s": t_prefill,
            "decode_tokens_per_s": n / t_decode if t_decode > 0 else float("nan")}


def cmd_info(args) -> int:
    from .checkpoint import load_model
    model = load_model(args.checkpoint, dtype="fp32", device="meta" if args.fast else "cpu")
    info = {"file": str(args.checkpoint), **model.info()}
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for k, v in info.items():
            print(f"{k:>12}: {v:,}" if isinstance(v, int) else f"{k:>12}: {v}")
    return 0


def cmd_generate(args) -> int:
    from .checkpoint import load_model
    torch.set_grad_enabled(False)
    model = load_model(args.model, dtype=args.dtype)
    tok = tokenizer_for(model, args.tokenizer)
    stats = run_generation(model, tok, args.prompt, sampling_from_args(args))
    if args.stats:
        print(json.dumps(stats), file=sys.stderr)
    return 0


def cmd_demo(args) -> int:
    from .checkpoint import load_model
    torch.set_grad_enabled(False)
    model = load_model(DEMO_MODEL)
    print(f"vrwkv_edge {__version__} demo: {DEMO_MODEL.name} (RWKV-7 x070, {model.num_parameters():,} parameters, "
          f"byte-level, a lightly trained rwkv.cpp test model; MIT licence in data/)", file=sys.stderr)
    print(f"prompt: {args.prompt!r}", file=sys.stderr)
    stats = run_generation(model, tokenizer_for(model), args.prompt, sampling_from_args(args))
    print(f"[{stats['new_tokens']} tokens, {stats['decode_tokens_per_s']:.1f} tokens/s decode]", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vrwkv-edge", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"vrwkv_edge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="sizes and parameter count of a checkpoint")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--json", action="store_true")
    p.add_argument("--fast", action="store_true", help="read shapes only (no weight checks)")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("generate", help="streamed text generation from a prompt")
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--prompt", required=True)
    p.add_argument("--tokenizer", default="auto", help="auto | world | bytes | PATH to a vocabulary file")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--stats", action="store_true", help="print timing as JSON on stderr")
    add_sampling_args(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("demo", help="generation on the embedded default model (no download)")
    p.add_argument("--prompt", default=DEMO_PROMPT)
    # penalties suit word-level vocabularies, not a byte-level model: off for the demo
    add_sampling_args(p, max_new_tokens=64, temperature=1.0, top_p=0.3, frequency_penalty=0.0, seed=0)
    p.set_defaults(func=cmd_demo)

    for module, func in PLUGINS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name and module.startswith(e.name):   # that part is not installed; its commands are absent
                continue
            raise
        getattr(mod, func)(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_command(build_parser().parse_args(argv))


def run_command(args) -> int:
    """Runs a parsed sub-command; bad input becomes ``error: ...`` on stderr and exit code 2."""
    try:
        return args.func(args) or 0
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
