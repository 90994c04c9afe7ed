"""What trains, the optimiser's parameter groups and the learning-rate schedule (spec §7.1, §7.5).

Stages (what ``requires_grad``):

* ``1`` (projector alignment): ``proj.*`` only; the LM and the tower are frozen (``--freeze_rwkv n_layer``).
* ``2`` (visual instruction tuning): the LM blocks, ``ln_out``, ``head`` and ``proj.*``; the tower and the
  embedding stay frozen, as in the original; ``freeze_rwkv N`` freezes the first N blocks (N = n_layer also
  freezes ``ln_out`` and ``head``), ``freeze_proj`` the projector.
* ``full``: every parameter, tower and embedding included.  Not an original stage: it trains a model FROM
  SCRATCH where no pretrained tower or language model exists (the embedded default model of this package).

AdamW (betas 0.9 / 0.99, eps 1e-8) with two groups: parameters whose ``squeeze()`` has fewer than 2 dimensions
get no weight decay, the rest ``weight_decay``.  Schedule: cosine from ``lr_init`` to ``lr_final`` over the run,
times the linear warm-up factor ``0.1 + 0.9 * step / warmup_steps`` during the first ``warmup_steps``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

STAGES = ("1", "2", "full")


def apply_stage(model: nn.Module, stage: str, freeze_rwkv: int = 0, freeze_proj: bool = False) -> None:
    """Sets ``requires_grad`` of every parameter of a :class:`VisualRWKV` for ``stage``."""
    stage = str(stage)
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    n_layer = len(model.rwkv.blocks)
    if not 0 <= freeze_rwkv <= n_layer:
        raise ValueError(f"freeze_rwkv must be in [0, {n_layer}] (the LM's layers), got {freeze_rwkv}")
    model.requires_grad_(True)
    if stage == "full":
        return
    model.vit.requires_grad_(False)
    model.rwkv.emb.requires_grad_(False)
    if stage == "1":
        freeze_rwkv = n_layer
    for block in model.rwkv.blocks[:freeze_rwkv]:
        block.requires_grad_(False)
    if freeze_rwkv == n_layer:
        model.rwkv.ln_out.requires_grad_(False)
        model.rwkv.head.requires_grad_(False)
    if freeze_proj:
        model.proj.requires_grad_(False)
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError(f"stage {stage} with freeze_rwkv={freeze_rwkv}, freeze_proj={freeze_proj} trains nothing")


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """The original two groups over the trainable parameters (names kept for logs and tests)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.squeeze().dim() < 2 else decay).append((name, p))
    groups = [{"params": [p for _, p in no_decay], "names": [n for n, _ in no_decay], "weight_decay": 0.0}]
    if decay:
        groups.append({"params": [p for _, p in decay], "names": [n for n, _ in decay],
                       "weight_decay": float(weight_decay)})
    return [g for g in groups if g["params"]]


def build_adamw(groups: list[dict], lr: float, betas=(0.9, 0.99), eps: float = 1e-8) -> torch.optim.AdamW:
    return torch.optim.AdamW([{k: v for k, v in g.items() if k != "names"} for g in groups], lr=lr,
                             betas=tuple(betas), eps=eps)


def learning_rate(step: int, total_steps: int, lr_init: float, lr_final: float, warmup_steps: int) -> float:
    """The learning rate of optimizer step ``step`` (0-based)."""
    progress = min(max(step / max(total_steps, 1), 0.0), 1.0)
    lr = lr_final + 0.5 * (lr_init - lr_final) * (1 + math.cos(math.pi * progress))
    if warmup_steps > 0 and step < warmup_steps:
        lr *= 0.1 + 0.9 * step / warmup_steps
    return lr


def set_learning_rate(optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr
