"""Shared pieces of the training tests: a tiny model, tiny LLaVA data (single- and multi-image), the reference
loss computed sample by sample without batching, padding or gathers."""
from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vrwkv_edge.tokenizer import load_tokenizer
from vrwkv_edge.training.config import TrainConfig
from vrwkv_edge.training.data import TrainingDataset
from vrwkv_edge.training.synthetic import make_split
from vrwkv_edge.config import RWKVConfig
from vrwkv_edge.visualrwkv import VisualConfig, build_random_visual_model
from vrwkv_edge.visualrwkv.builders import TINY_VRWKV
from vrwkv_edge.visualrwkv.training_forward import IGNORE_INDEX, reference_sample_logits

TRAIN_EXTRA_MODULES = ("deepspeed", "yaml")


def require_train_extra() -> None:
    """Skips (fails in CI, VRWKV_EDGE_REQUIRE_EXTRAS=1) when the 'train' extra is not installed."""
    missing = [m for m in TRAIN_EXTRA_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        reason = f"needs the 'train' extra (pip install -e '.[train]'): {', '.join(missing)} not installed"
        if os.environ.get("VRWKV_EDGE_REQUIRE_EXTRAS") == "1":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)


# Small enough that the per-sample reference (full 65536-wide logits at every position) stays fast: 2 x 64.
TEST_LMS = {"x070": RWKVConfig("x070", 2, 64, 32, 65536, 128, {"w": 8, "a": 8, "v": 8, "g": 8}),
            "x060": RWKVConfig("x060", 2, 64, 32, 65536, 128, {"mix": 8, "decay": 8})}


def tiny_model(lm: str = "x070", seed: int = 0, **visual):
    """RWKV-7 (or -6) 2 x 64 + a 2-layer 32-wide Vision-RWKV on 64 px (16 image tokens), mlp projector, in
    train mode.  The prompt/scan version follows the LM (v7 unidirectional, v6 bidirectional)."""
    visual.setdefault("proj_type", "mlp")
    visual.setdefault("version", "v7" if lm == "x070" else "v6")
    vcfg = VisualConfig(tower="vrwkv", vrwkv=asdict(TINY_VRWKV), image_size=64, **visual)
    return build_random_visual_model(TEST_LMS[lm], vcfg, seed).train()


def write_data(folder: Path, records: int = 8, seed: int = 0, extra=()) -> Path:
    """Synthetic-task records (1-3 turns) plus ``extra`` records; returns the train.json path."""
    path = make_split(folder, "train", records, seed)
    if extra:
        data = json.loads(path.read_text()) + list(extra)
        path.write_text(json.dumps(data))
    return path


def two_image_record(folder: Path) -> dict:
    """A v7 multi-image conversation over two images of the synthetic train split."""
    return {"id": "two-images", "image": ["images/train/000000.png", "images/train/000001.png"],
            "conversations": [{"from": "human", "value": "<image>\n<image>\nHow many shapes are there?"},
                              {"from": "gpt", "value": "three"},
                              {"from": "human", "value": "And in the first image?"},
                              {"from": "gpt", "value": "two"}]}


def dataset(model, path: Path, ctx_len: int = 256, **kw) -> TrainingDataset:
    return TrainingDataset(path, None, load_tokenizer(), model.visual_version, model.image_layout,
                           model.preprocess, ctx_len, model.vcfg.image_position, **kw)


def config(tmp_path: Path, data: Path, **kw) -> TrainConfig:
    base = dict(out_dir=str(tmp_path / "run"), train_data=str(data), steps=4, micro_batch_size=2, l2wrap=False,
                lr_init=1e-3, lr_final=1e-4, log_every=1, save_every=0)
    base.update(kw)
    return TrainConfig(**base)


def reference_loss(model, data: TrainingDataset, indices) -> torch.Tensor:
    """Each sample on its own: every position's logits from the training-style forward, CE at the targets
    (position t predicts labels[t + 1]), the sample's mean, then the batch mean."""
    losses = []
    for i in indices:
        s = data.samples[i]
        logits = reference_sample_logits(model, s.ids, [model.preprocess(p) for p in s.images], s.spans)
        labels = torch.tensor(s.labels[1:])
        keep = labels != IGNORE_INDEX
        losses.append(F.cross_entropy(logits[:-1][keep].float(), labels[keep]))
    return torch.stack(losses).mean()


def grads(model) -> dict:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
