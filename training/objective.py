"""The training loss of VisualRWKV (spec §7.4): sample-level cross-entropy, wrapped in L2Wrap.

* Per-token cross-entropy at the target positions; each sample's losses are summed and divided by ITS OWN
  number of targets (at least 1), then the samples are averaged, so every sample weighs the same whatever its
  answer length.
* :class:`L2Wrap` leaves the loss value unchanged and, in backward, adds ``factor * max_logit`` to the gradient
  of each logit row's argmax entry (RWKV-LM's regulariser pushing the largest logits toward 0).  The original
  applies it to the full [B, T, V] logits with ``factor = 1e-4 / (B * T)``; the training forward computes only
  the rows at target positions, so here the push reaches those rows, with the same ``1e-4 / (B * T)`` factor
  (T = the padded batch length): rows whose logits are never used get no push.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

L2WRAP_SCALE = 1e-4


class L2Wrap(torch.autograd.Function):
    @staticmethod
    def forward(ctx, loss: Tensor, logits: Tensor, factor: float):
        ctx.save_for_backward(logits)
        ctx.factor = factor
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        (logits,) = ctx.saved_tensors
        top, idx = logits.max(-1, keepdim=True)
        g = torch.zeros_like(logits).scatter_(-1, idx, top * ctx.factor)
        return grad_output, g, None


def sample_level_loss(logits: Tensor, targets: Tensor, sample_index: Tensor, batch_size: int) -> Tensor:
    """Mean over the batch of each sample's mean target cross-entropy.  ``logits`` [K, V] / ``targets`` [K] /
    ``sample_index`` [K]: the K target positions of the whole batch (see ``training_logits``)."""
    per_token = F.cross_entropy(logits.float(), targets, reduction="none")
    totals = torch.zeros(batch_size, dtype=per_token.dtype, device=per_token.device).index_add(
        0, sample_index, per_token)
    counts = torch.bincount(sample_index, minlength=batch_size).clamp(min=1).to(per_token.dtype)
    return (totals / counts).mean()


def training_loss(logits: Tensor, targets: Tensor, sample_index: Tensor, batch_size: int, seq_len: int,
                  l2wrap: bool = True) -> Tensor:
    loss = sample_level_loss(logits, targets, sample_index, batch_size)
    if l2wrap:
        loss = L2Wrap.apply(loss, logits, L2WRAP_SCALE / (batch_size * seq_len))
    return loss
