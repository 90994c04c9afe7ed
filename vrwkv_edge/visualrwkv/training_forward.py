"""The differentiable VisualRWKV forward that training uses (the inference paths run under ``no_grad``).

A batch is a right-padded sequence of positions per sample: text ids, and ``tokens_per_image`` positions for each
image (their ids are :data:`IMAGE_POSITION`, a marker, never embedded).  The forward

1. embeds the text with ``rwkv.emb`` and every image with tower -> pooling -> projector
   (:meth:`VisualRWKV.embed_pixels`; the tower runs without autograd when none of its weights train), and writes
   the image embeddings into their positions in (sample, position) order, image by image as the prompt lists them;
2. runs every block over the whole sequence from a zero state, each layer with the sample's image patch spans
   permuted as that layer's scan order says and permuted back afterwards (the per-layer order of
   :func:`~vrwkv_edge.visualrwkv.scan.training_style_forward`, here per sample, so samples whose images sit at
   different offsets share a batch); optional gradient checkpointing recomputes each block in backward;
3. applies ``ln_out`` and the head ONLY at the positions whose next token is a target (the head is 65536 wide:
   every other row would be computed and thrown away).

Right padding never changes a sample's real positions (every layer is causal), so each sample's logits equal its
own unpadded forward, which is what inference computes; the original v6 code instead left-pads the text before
the image to align images across the batch, which shifts the state the image sees.
:func:`reference_sample_logits` is the plain per-sample reference the tests compare against.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from .model import VisualRWKV
from .scan import ImageSpan, chunk_order, training_style_forward

IMAGE_POSITION = -1          # input id of an image position in a training batch (replaced by image embeddings)
IGNORE_INDEX = -100          # label of a position that is not a target (as the original code)


@dataclass
class TrainingBatch:
    """input_ids [B, T] (IMAGE_POSITION at image positions, 0 as right padding), labels [B, T] (the target at
    each position, IGNORE_INDEX elsewhere; position t's logits predict labels[t + 1]), pixels [N, 3, S, S] of
    every image in (sample, slot) order, spans: per sample, the ImageSpans of its images."""
    input_ids: Tensor
    labels: Tensor
    pixels: Optional[Tensor]
    spans: list

    def to(self, device) -> "TrainingBatch":
        return TrainingBatch(self.input_ids.to(device), self.labels.to(device),
                             None if self.pixels is None else self.pixels.to(device), self.spans)

    @property
    def batch_size(self) -> int:
        return self.input_ids.shape[0]


def tower_trains(model: VisualRWKV) -> bool:
    return any(p.requires_grad for p in model.vit.parameters())


def embed_batch(model: VisualRWKV, batch: TrainingBatch) -> Tensor:
    """Input embeddings [B, T, C] with the image embeddings in place (differentiable)."""
    ids = batch.input_ids
    is_image = ids == IMAGE_POSITION
    x = model.rwkv.emb(ids.clamp(min=0))
    n_image_positions = int(is_image.sum())
    if n_image_positions == 0:
        return x
    if batch.pixels is None:
        raise ValueError("the batch has image positions but no pixels")
    with torch.set_grad_enabled(torch.is_grad_enabled() and tower_trains(model)):
        features = model.pixel_features(batch.pixels.to(model.device))
    images = model.proj(features.to(next(model.proj.parameters()).dtype)).to(x.dtype)    # [N, tokens, C]
    if images.shape[0] * images.shape[1] != n_image_positions:
        raise ValueError(f"the batch has {n_image_positions} image positions but its {images.shape[0]} image(s) "
                         f"give {images.shape[0] * images.shape[1]} embeddings")
    # masked_scatter fills the True positions in row-major (sample, position) order: image by image
    return x.masked_scatter(is_image.unsqueeze(-1), images.reshape(-1, images.shape[-1]))


def _layer_orders(mode: str, layer: int, length: int, spans: Sequence[Sequence[ImageSpan]],
                  device) -> Optional[Tensor]:
    """Per-sample gather indices [B, T] for one layer's scan order, or None when no sample is permuted."""
    orders = [chunk_order(mode, layer, length, s) for s in spans]
    if all(o is None for o in orders):
        return None
    identity = torch.arange(length)
    return torch.stack([identity if o is None else o for o in orders]).to(device)


def _gather_positions(t: Tensor, index: Tensor) -> Tensor:
    return t.gather(1, index.unsqueeze(-1).expand(-1, -1, t.shape[-1]))


def run_training_blocks(model: VisualRWKV, x: Tensor, spans: Sequence[Sequence[ImageSpan]],
                        grad_checkpointing: bool = False, chunk_size: Optional[int] = None) -> Tensor:
    """Every block over x [B, T, C] from a zero state with per-layer, per-sample image scan orders; returns the
    hidden states [B, T, C] before ``ln_out``."""
    lm = model.rwkv
    x = x.to(lm.dtype)
    B, T = x.shape[:2]
    state = lm.new_state(B)
    impl = lm.wkv
    v_first = None
    for i, block in enumerate(lm.blocks):
        order = _layer_orders(model.vcfg.scan, i, T, spans, x.device)
        if order is not None:
            inverse = torch.argsort(order, dim=1)
            x = _gather_positions(x, order)
            if v_first is not None:
                v_first = _gather_positions(v_first, order)

        def run(x_, v_first_, block=block, layer_state=state.layer(i)):
            out, _, v = block.run(x_, layer_state, v_first_, True, impl, chunk_size)
            return out, v

        if grad_checkpointing and torch.is_grad_enabled():
            x, v_first = checkpoint(run, x, v_first, use_reentrant=False)
        else:
            x, v_first = run(x, v_first)
        if order is not None:
            x = _gather_positions(x, inverse)
            if v_first is not None:                  # RWKV-7 only: layer 0's value, per token
                v_first = _gather_positions(v_first, inverse)
    return x


def target_positions(labels: Tensor) -> tuple[Tensor, Tensor]:
    """(sample index, position) of every position whose NEXT label is a target, and those targets' values are
    ``labels[b, t + 1]``.  Returns (rows [K, 2] as (b, t), targets [K])."""
    nxt = labels[:, 1:]
    b, t = torch.nonzero(nxt != IGNORE_INDEX, as_tuple=True)
    return torch.stack([b, t], 1), nxt[b, t]


def training_logits(model: VisualRWKV, batch: TrainingBatch, grad_checkpointing: bool = False,
                    chunk_size: Optional[int] = None) -> tuple[Tensor, Tensor, Tensor]:
    """The differentiable forward of a batch.  Returns ``(logits [K, V] float32 at the K target-predicting
    positions, their targets [K], their sample index [K])``."""
    x = embed_batch(model, batch)
    hidden = run_training_blocks(model, x, batch.spans, grad_checkpointing, chunk_size)
    rows, targets = target_positions(batch.labels)
    picked = hidden[rows[:, 0], rows[:, 1]]
    return model.rwkv.logits(picked), targets, rows[:, 0]


def reference_sample_logits(model: VisualRWKV, ids: Sequence[int], images: Sequence[Tensor],
                            spans: Sequence[ImageSpan]) -> Tensor:
    """One sample without padding, batching or gathers (the reference of the tests): text embeddings and each
    image's :meth:`~VisualRWKV.embed_pixels` concatenated in order, then the training-style full-sequence forward
    of :mod:`.scan`; logits at every position [T, V] (differentiable)."""
    parts, image_iter, t = [], iter(images), 0
    ids = list(ids)
    while t < len(ids):
        if ids[t] == IMAGE_POSITION:
            emb = model.embed_pixels(next(image_iter)[None])[0]
            parts.append(emb)
            t += emb.shape[0]
        else:
            end = t
            while end < len(ids) and ids[end] != IMAGE_POSITION:
                end += 1
            parts.append(model.rwkv.emb(torch.tensor(ids[t:end], device=model.device)))
            t = end
    x = torch.cat(parts, 0)[None]
    return training_style_forward(model.rwkv, x, spans, model.vcfg.scan)[0]
