"""``vrwkv-edge``: the command-line interface.

    vrwkv-edge demo                                   the embedded VisualRWKV on new pictures, PyTorch + ONNX (vrwkv_edge.demo)
    vrwkv-edge train --config FILE                    VisualRWKV training (vrwkv_edge.training)
    vrwkv-edge info CKPT                              sizes and parameter count of a checkpoint
    vrwkv-edge generate --model CKPT --prompt TEXT    streamed generation
    vrwkv-edge chat / eval                            VisualRWKV (vrwkv_edge.visualrwkv.cli)
    vrwkv-edge classify                               Vision-RWKV image classification (vrwkv_edge.vision_rwkv.cli)
    vrwkv-edge export / validate                      ONNX artefacts (vrwkv_edge.export.cli)
    vrwkv-edge bench                                  benchmarks (vrwkv_edge.bench)
    vrwkv-edge export-triton / triton-chat            Triton Inference Server (vrwkv_edge.serving.cli)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

from . import __version__
from .bench import add_bench_cli
from .cli_support import add_sampling_args, run_command, sampling_from_args, text_argument, tokenizer_for
from .demo import add_demo_cli
from .export.cli import add_export_cli
from .generation import SamplingParams, TextStreamer, generate_stream
from .loading import load_model
from .native.build import add_build_native_cli
from .serving.cli import add_serving_cli
from .training.cli import add_train_cli
from .trt.build import add_build_trt_cli
from .vision_rwkv.cli import add_classify_cli
from .visualrwkv.cli import add_visual_cli

# Sub-commands that live with the parts they belong to register themselves on the parser.
SUBCOMMANDS = (add_demo_cli, add_train_cli, add_visual_cli, add_classify_cli, add_export_cli, add_bench_cli, add_serving_cli, add_build_native_cli,
               add_build_trt_cli)


def run_generation(model, tok, prompt: str, params: SamplingParams, out=None) -> dict:
    out = out or sys.stdout
    ids = tok.encode(text_argument(prompt, "--prompt"))
    if not ids:
        raise ValueError("--prompt is empty: nothing to condition on")
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
    path = args.model or args.checkpoint
    if path is None or (args.model and args.checkpoint and args.model != args.checkpoint):
        raise ValueError("info: name one checkpoint, as --model CKPT (or positionally)")
    model = load_model(path, dtype="fp32", device="meta" if args.fast else "cpu")
    info = {"file": str(path), **model.info()}
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for k, v in info.items():
            print(f"{k:>12}: {v:,}" if isinstance(v, int) else f"{k:>12}: {v}")
    return 0


def cmd_generate(args) -> int:
    torch.set_grad_enabled(False)
    model = load_model(args.model, dtype=args.dtype)
    tok = tokenizer_for(model, args.tokenizer)
    stats = run_generation(model, tok, args.prompt, sampling_from_args(args))
    if args.stats:
        print(json.dumps(stats), file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vrwkv-edge", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"vrwkv_edge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="sizes and parameter count of a checkpoint")
    p.add_argument("checkpoint", type=Path, nargs="?", help="the checkpoint (or --model)")
    p.add_argument("--model", type=Path, default=None, help="the checkpoint")
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

    for register in SUBCOMMANDS:
        register(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_command(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
