"""``vrwkv-edge classify``: top-k ImageNet classes of an image with a Vision-RWKV checkpoint.

The package CLI registers it with ``add_classify_cli(subparsers)``; the handler is ``args.func(args)`` and
returns the exit status.  Standalone: ``python -m vrwkv_edge.vision_rwkv.cli classify --model CKPT --image PATH``.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from ..cli_support import run_command
from .backbone import VRWKV_PRESETS
from .classify import classify
from .loading import load_vision_rwkv


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def add_classify_cli(subparsers) -> argparse.ArgumentParser:
    """Registers the ``classify`` subcommand on an ``argparse`` subparsers object."""
    p = subparsers.add_parser(
        "classify", help="classify an image with a Vision-RWKV checkpoint",
        description="Print the top-k classes of an image under a Vision-RWKV (VRWKV / VRWKV6) classifier.")
    p.add_argument("--model", required=True, metavar="CKPT",
                   help="official checkpoint (.pth from mmcls / InternImage, or .safetensors)")
    p.add_argument("--image", required=True, metavar="PATH", help="image file (any format Pillow reads)")
    p.add_argument("--topk", type=_positive_int, default=5, metavar="K", help="how many classes to print (5)")
    p.add_argument("--labels", metavar="FILE", default=None, help="class names, one per line, in index order")
    p.add_argument("--arch", choices=sorted(VRWKV_PRESETS), default=None,
                   help="check the checkpoint against this preset (default: infer it from the weights)")
    p.set_defaults(func=run_classify)
    return p


def run_classify(args: argparse.Namespace) -> int:
    model = load_vision_rwkv(args.model, arch=args.arch)
    results = classify(model, args.image, topk=args.topk, labels_path=args.labels)
    print(f"{'rank':>4}  {'prob':>7}  {'class':>5}  label")
    for rank, (index, label, prob) in enumerate(results, 1):
        print(f"{rank:>4}  {prob:7.4f}  {index:>5}  {label if label is not None else '-'}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="vrwkv-edge")
    add_classify_cli(parser.add_subparsers(dest="command", required=True))
    return run_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
