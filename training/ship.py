"""Packs a finished run's weights as a shipped model: fp16 safetensors in the official layout (with its
VisualConfig inside) plus a JSON card with the architecture and the training configuration.

    python -m vrwkv_edge.training.ship build/runs/synthetic_default vrwkv_edge/data/vrwkv-shapes-8.6M.safetensors

fp16 halves the file (the World embedding and head are 97% of this model); the runtime computes in fp32.  The
card's ``max_abs_fp16_rounding`` records the largest weight change the rounding made.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ..fileio import write_json
from ..loading import load_model
from ..visualrwkv.loading import save_visual_checkpoint

SIZE_LIMIT = 20 * 1024 * 1024


def ship(run_dir: Path, target: Path) -> dict:
    model = load_model(run_dir / "model.safetensors")
    (path,) = save_visual_checkpoint(model, target, dtype=torch.float16)
    size = path.stat().st_size
    if size > SIZE_LIMIT:
        path.unlink()
        raise ValueError(f"{path}: {size} bytes, over the {SIZE_LIMIT}-byte limit of a shipped model")
    rounding = max(float((p.detach() - p.detach().half().float()).abs().max()) for p in model.parameters())
    card = {"file": path.name, "bytes": size, "dtype": "float16", "parameters": model.num_parameters(),
            "max_abs_fp16_rounding": rounding, "architecture": model.info(),
            "training_config": json.loads((run_dir / "config.json").read_text(encoding="utf-8")),
            "summary": json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))}
    write_json(path.with_suffix(".json"), card)
    return card


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("target", type=Path)
    a = p.parse_args(argv)
    card = ship(a.run_dir, a.target)
    print(f"wrote {a.target} ({card['bytes']:,} bytes, {card['parameters']:,} parameters)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
