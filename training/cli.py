"""``vrwkv-edge train --config FILE``: one VisualRWKV training run (see :mod:`.config` for the file's keys).

    vrwkv-edge train --config training/configs/synthetic_default.yaml
    torchrun --nproc_per_node 2 -m vrwkv_edge.training.cli train --config run.yaml     # engine: deepspeed

A run resumes by itself from the newest complete checkpoint in its ``out_dir``; ``--restart`` refuses to
start when one exists, so an old run is never overwritten by accident.  ``--set KEY=VALUE`` overrides one key
(the value is parsed as YAML/JSON: numbers, true/false, null, lists).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from ..cli_support import run_command
from .config import load_config
from .trainer import Trainer


def _parse_value(text: str):
    try:
        import yaml
        return yaml.safe_load(text)
    except ImportError:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text


def parse_overrides(items: Sequence[str]) -> dict:
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = _parse_value(value)
    return out


def cmd_train(args) -> int:
    cfg = load_config(args.config, parse_overrides(args.set))
    trainer = Trainer(cfg, progress=not args.no_progress)
    if args.restart and trainer.latest_checkpoint() is not None:
        raise ValueError(f"--restart: {cfg.out_dir} already holds a checkpoint; remove it or drop --restart "
                         f"to resume")
    summary = trainer.train()
    if trainer.is_main:
        print(json.dumps(summary, indent=2))
    return 0


def add_train_cli(sub) -> None:
    p = sub.add_parser("train", help="train a VisualRWKV (stage 1 / 2 / from scratch; PyTorch or DeepSpeed)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, type=Path, help="the run's YAML or JSON configuration")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one key")
    p.add_argument("--restart", action="store_true", help="refuse to resume an existing run")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="vrwkv_edge.training.cli")
    add_train_cli(parser.add_subparsers(dest="command", required=True))
    return run_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
