"""Command-line glue: ``vrwkv-edge export`` and ``vrwkv-edge validate``.

The main CLI wires these in with :func:`add_export_cli`; each subcommand's handler takes the parsed
``argparse.Namespace`` and returns the process exit code (``args.func(args)``)::

    vrwkv-edge export --model CKPT --out DIR [--dtype fp32|fp16] [--quantize int8|int4] [--wkv standard|custom]
                      [--validate] [--no-embeds] [--opset 18] [--chunk-size 16] [--overwrite]
    vrwkv-edge export --model VRWKV.pth --out FILE.onnx [--image-size 224] [--vision-output logits|tokens]
                      [--wkv standard|custom]

A VisualRWKV checkpoint gives the language-model graphs plus ``vision.onnx`` and ``image_prefill.onnx``.
    vrwkv-edge validate DIR --model CKPT [--tolerance T] [--min-agreement A] [--n-tokens N] [--prompt-ids 1,2,3]

Exit codes: 0 success, 1 validation beyond tolerance, 2 unusable input (missing or broken checkpoint or
export, bad arguments).  ``--model`` takes a checkpoint path, or ``random:PRESET[:SEED]`` for a model with
seeded random weights of a named preset (benchmarks, smoke tests).  Standalone: ``python -m
vrwkv_edge.export.cli export ...``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from vrwkv_edge.checkpoint import CheckpointError, checkpoint_source, read_state_dict
from vrwkv_edge.cli_support import EXIT_ERROR, EXIT_FAILED, EXIT_OK, INPUT_ERRORS, run_command
from vrwkv_edge.config import preset
from vrwkv_edge.loading import load_model
from vrwkv_edge.models import build_model
from vrwkv_edge.ops.custom_op_contract import DEFAULT_WKV_FLAVOUR, DOMAIN, WKV_FLAVOURS
from vrwkv_edge.runtime.artefact import QUANTIZE_MODES
from vrwkv_edge.vision_rwkv.loading import official_state_dict

from .artefact import INT4_BLOCK_SIZE, PROMPT_TEMPLATES, export_model
from .graphs import DEFAULT_CHUNK, DEFAULT_OPSET, SUPPORTED_OPSETS
from .validation import DEFAULT_CRITERIA, validate
from .visual import export_vision_rwkv


def _load(spec: str):
    """A checkpoint path, or ``random:PRESET[:SEED]``."""
    if spec.startswith("random:"):
        parts = spec.split(":")
        seed = int(parts[2]) if len(parts) > 2 else 0
        model = build_model(preset(parts[1])).init_random_(seed)
        model.source = {"file": spec}
        return model
    model = load_model(spec)
    model.source = checkpoint_source(spec)          # recorded in the export's metadata (file, size, SHA-256)
    return model


def _prompt_ids(text: Optional[str]):
    if not text:
        return None
    try:
        return [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise ValueError(f"--prompt-ids takes comma-separated integers, got {text!r}") from None


def _errors():
    return INPUT_ERRORS


def _is_vision_rwkv(spec: str) -> bool:
    """True for an official Vision-RWKV classifier / backbone checkpoint (``backbone.*`` keys)."""
    if spec.startswith("random:"):
        return False
    try:
        official_state_dict(read_state_dict(spec), spec)
    except CheckpointError:
        return False
    return True


def cmd_export(args: argparse.Namespace) -> int:
    """Handler of ``export``: writes the directory, then validates it when ``--validate`` is given.  A
    Vision-RWKV checkpoint is written as one ONNX file instead (``--out`` a file, or DIR/vision_rwkv.onnx)."""
    try:
        if _is_vision_rwkv(args.model):
            out = Path(args.out)
            out = out if out.suffix == ".onnx" else out / "vision_rwkv.onnx"
            export_vision_rwkv(args.model, out, image_size=args.image_size, output=args.vision_output,
                               opset=args.opset, overwrite=args.overwrite, wkv=args.wkv)
            print(f"exported {out}")
            return EXIT_OK
        model = _load(args.model)
        out = export_model(model, args.out, dtype=args.dtype, quantize=args.quantize, embeds=not args.no_embeds,
                           opset=args.opset, chunk_size=args.chunk_size, overwrite=args.overwrite,
                           tokenizer=args.tokenizer, prompt_template=args.prompt_template, progress=not args.quiet,
                           wkv=args.wkv)
    except _errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    print(f"exported {out}")
    if not args.validate:
        return EXIT_OK
    return _run_validate(str(out), model, args)


def cmd_validate(args: argparse.Namespace) -> int:
    """Handler of ``validate``: PyTorch vs ONNX Runtime; non-zero exit beyond tolerance."""
    try:
        model = _load(args.model)
    except _errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    return _run_validate(args.dir, model, args)


def _run_validate(directory: str, model, args) -> int:
    try:
        report = validate(directory, model, _prompt_ids(args.prompt_ids), n_tokens=args.n_tokens,
                          tolerance=args.tolerance, min_agreement=args.min_agreement,
                          providers=args.providers.split(",") if args.providers else None, verbose=True)
    except _errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK if report.passed else EXIT_FAILED


def _validation_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("validation")
    g.add_argument("--tolerance", type=float, default=None,
                   help="max-abs logit difference allowed (default by precision: "
                        + ", ".join(f"{k} {t:g}" for k, (t, _) in DEFAULT_CRITERIA.items()) + ")")
    g.add_argument("--min-agreement", type=float, default=None,
                   help="least greedy top-1 agreement, 0..1 (default: "
                        + ", ".join(f"{k} {a:g}" for k, (_, a) in DEFAULT_CRITERIA.items()) + ")")
    g.add_argument("--n-tokens", type=int, default=64, help="greedy decode steps compared (default 64)")
    g.add_argument("--prompt-ids", default=None, help="prompt token ids, comma-separated (default: fixed random)")
    g.add_argument("--providers", default=None, help="ONNX Runtime providers, comma-separated (cpu,cuda,tensorrt)")


def add_export_cli(subparsers) -> None:
    """Registers the ``export`` and ``validate`` subcommands on an ``argparse`` subparsers object; each sets
    ``func`` to its handler (:func:`cmd_export`, :func:`cmd_validate`), which returns the exit code."""
    p = subparsers.add_parser("export", help="export a model to ONNX graphs + metadata (a deployable directory)",
                              description="Writes DIR with decode.onnx, prefill.onnx (+ *_embeds.onnx), "
                                          "metadata.json and the tokenizer vocabulary.")
    p.add_argument("--model", required=True, help="checkpoint (.pth/.safetensors) or random:PRESET[:SEED]")
    p.add_argument("--out", required=True, help="output directory (appears whole or not at all)")
    p.add_argument("--dtype", choices=("fp32", "fp16"), default="fp32")
    p.add_argument("--quantize", choices=tuple(q for q in QUANTIZE_MODES if q), default=None,
                   help="int8: dynamic int8 MatMul weights (CPU); int4: block-wise 4-bit weight-only MatMulNBits "
                        f"(block {INT4_BLOCK_SIZE}, asymmetric); both keep state, norms, decay and WKV in fp32")
    p.add_argument("--wkv", choices=WKV_FLAVOURS, default=DEFAULT_WKV_FLAVOUR,
                   help="standard: the WKV in standard ONNX operators (default); custom: one node per WKV in ONNX "
                        f"domain '{DOMAIN}' (needs the op library; see export/README.md)")
    p.add_argument("--validate", action="store_true", help="compare with PyTorch after exporting")
    p.add_argument("--no-embeds", action="store_true", help="skip the inputs_embeds graphs")
    p.add_argument("--opset", type=int, choices=SUPPORTED_OPSETS, default=DEFAULT_OPSET)
    p.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK, help="prefill WKV chunk (default 16)")
    p.add_argument("--tokenizer", default="auto", help="auto | world | bytes | PATH to a vocabulary file (auto: "
                   "bytes for a 256-row byte-level model, else the bundled World vocabulary)")
    p.add_argument("--prompt-template", default=None,
                   help=f"recorded for runtimes (default: {PROMPT_TEMPLATES['world']} for World, "
                        f"{PROMPT_TEMPLATES['bytes']} for bytes)")
    p.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    g = p.add_argument_group("Vision-RWKV checkpoints (exported as one ONNX file)")
    g.add_argument("--image-size", type=int, default=None, help="input pixels (default: the model's test size)")
    g.add_argument("--vision-output", choices=("logits", "tokens"), default="logits")
    _validation_args(p)
    p.set_defaults(func=cmd_export)

    v = subparsers.add_parser("validate", help="compare an exported directory with the PyTorch model",
                              description="Runs the same prompt through PyTorch and ONNX Runtime; exits 1 when "
                                          "the logits differ beyond the tolerance.")
    v.add_argument("dir", help="exported directory")
    v.add_argument("--model", required=True, help="checkpoint (.pth/.safetensors) or random:PRESET[:SEED]")
    _validation_args(v)
    v.set_defaults(func=cmd_validate)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="vrwkv-edge", description="vrwkv_edge export tools")
    sub = parser.add_subparsers(dest="command", required=True)
    add_export_cli(sub)
    return run_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
