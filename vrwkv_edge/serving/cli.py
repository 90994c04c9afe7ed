"""``vrwkv-edge export-triton`` and ``vrwkv-edge triton-chat``, registered by :func:`add_serving_cli`.

    vrwkv-edge export-triton DIR --out REPO [--name NAME] [--max-batch-size 32] [--preferred-batch-size 8,16,32]
                             [--max-candidate-sequences 64] [--max-queue-delay-us 1000] [--instances 1]
                             [--kind auto|cpu|gpu] [--backend auto|onnxruntime|tensorrt] [--engine PLAN]
                             [--no-corrid] [--check] [--overwrite]
    vrwkv-edge triton-chat --url localhost:8001 --model NAME [--prompt TEXT] [sampling flags]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .triton import BACKENDS, INSTANCE_KINDS, ServingOptions, check_repository, describe, write_triton_repository
from .triton_client import add_client_args


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def cmd_export_triton(args) -> int:
    defaults = ServingOptions()
    options = ServingOptions(
        max_batch_size=args.max_batch_size,
        preferred_batch_size=args.preferred_batch_size or tuple(
            b for b in defaults.preferred_batch_size if b <= args.max_batch_size) or (args.max_batch_size,),
        max_candidate_sequences=args.max_candidate_sequences or max(defaults.max_candidate_sequences,
                                                                    args.max_batch_size),
        max_queue_delay_us=args.max_queue_delay_us, max_sequence_idle_us=args.max_sequence_idle_us,
        instances=args.instances, kind=args.kind)
    out = write_triton_repository(args.dir, args.out, name=args.name, options=options, backend=args.backend,
                                  engine=args.engine, corrid=False if args.no_corrid else None,
                                  overwrite=args.overwrite)
    names = sorted(p.name for p in out.iterdir() if p.is_dir())
    if args.check:
        check_repository(out)
        print(f"checked against Triton's model configuration schema: {', '.join(names)}", file=sys.stderr)
    print(describe(out, names))
    return 0


def add_serving_cli(subparsers) -> None:
    p = subparsers.add_parser("export-triton", help="a Triton Inference Server model repository from an export "
                                                    "(sequence batcher with implicit state)")
    p.add_argument("dir", type=Path, help="an export directory (vrwkv-edge export)")
    p.add_argument("--out", type=Path, required=True, help="the repository directory to write")
    p.add_argument("--name", default=None, help="model name (default: the export directory's name)")
    p.add_argument("--max-batch-size", type=int, default=ServingOptions.max_batch_size)
    p.add_argument("--preferred-batch-size", type=_ints, default=None,
                   help="comma list (default: 8,16,32 up to the max batch size)")
    p.add_argument("--max-candidate-sequences", type=int, default=None,
                   help=f"sequences the oldest strategy considers (default: {ServingOptions.max_candidate_sequences} "
                        f"or the max batch size)")
    p.add_argument("--max-queue-delay-us", type=int, default=ServingOptions.max_queue_delay_us)
    p.add_argument("--max-sequence-idle-us", type=int, default=ServingOptions.max_sequence_idle_us,
                   help="a sequence idle this long is dropped with its state")
    p.add_argument("--instances", type=int, default=ServingOptions.instances, help="model instances")
    p.add_argument("--kind", default=ServingOptions.kind, choices=sorted(INSTANCE_KINDS))
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="auto: tensorrt when an engine is given or DIR/serving_decode.plan exists")
    p.add_argument("--engine", type=Path, default=None, help="a TensorRT engine built from the serving graph")
    p.add_argument("--no-corrid", action="store_true",
                   help="leave out the CORRID control (for a graph a TensorRT engine is built from)")
    p.add_argument("--check", action="store_true",
                   help="parse the configurations with Triton's schema and check them against the graphs "
                        "(needs tritonclient)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_export_triton)

    p = subparsers.add_parser("triton-chat", help="chat with a model served by Triton (tritonclient)")
    add_client_args(p)
