"""Image scanning: the per-layer patch orders of VisualRWKV and their exact recurrent equivalent.

Training (spec §5.1) runs each layer over the WHOLE sequence with the image's patch span permuted for that
layer and permuted back afterwards:

* ``unidirectional`` (v7.00, v6.20): never permuted;
* ``bidirectional`` (v6.0, HD): odd layers see the patches reversed (``x[:, s:e].flip(1)``);
* ``multidirectional`` (v5.1 / v6.01): layer ``l % 4`` = 0 row-major, 1 row-major reversed, 2 column-major
  (``view(B, H, W, C).transpose(1, 2)``), 3 column-major reversed (transpose, then flip).

Only the patch span moves: v6's CLS token (appended after the patches) and all text stay in place.

**Why a token-by-token RNN is wrong for v6.0 and what is exact.**  With a per-layer order, layer l+1 cannot
start on the image until layer l has produced all image outputs.  Every layer is causal, so the state a layer
carries out of the image (its token shift and WKV) depends only on the tokens it saw, in the order it saw them.
The exact recurrent form therefore runs the image chunk *layer by layer* (:func:`scan_prefill`): take each
layer's state after the text before the image, run that layer (``Block.run(seq=True)``) over the chunk in the
layer's order, un-permute its outputs and hand them to the next layer.  Text after the image continues with
ordinary steps (or chunks) from the resulting states, so everything after the image, generation included, is a
plain RNN.  :func:`training_style_forward` is the reference: the training code's whole-sequence forward with the
in-place span permutations, written with the training ops (``flip``, ``view/transpose``) rather than index
permutations so that the two are independent.

For RWKV-7 the per-token ``v_first`` (layer 0's value, used by every later layer for the same token) is
permuted together with x, which is what VisualRWKV v7.03/v7.04 do when they flip a sequence.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor

from ..state import State

SCAN_MODES = ("unidirectional", "bidirectional", "multidirectional")


def check_scan_mode(mode: str) -> str:
    if mode not in SCAN_MODES:
        raise ValueError(f"unknown image scan mode {mode!r}; choose one of {SCAN_MODES}")
    return mode


def patch_order(mode: str, layer: int, grid_h: int, grid_w: int) -> Optional[Tensor]:
    """``order[j]`` = canonical (row-major) index of the patch that layer ``layer`` sees at position j of the
    span; ``None`` for the identity."""
    check_scan_mode(mode)
    n = grid_h * grid_w
    if n <= 1 or mode == "unidirectional":
        return None
    if mode == "bidirectional":
        return torch.arange(n - 1, -1, -1) if layer % 2 == 1 else None
    k = layer % 4
    if k == 0:
        return None
    idx = torch.arange(n)
    if k >= 2:                                         # column-major: position c*H + r holds patch r*W + c
        idx = idx.view(grid_h, grid_w).t().reshape(-1)
    if k % 2 == 1:
        idx = idx.flip(0)
    return idx


@dataclass(frozen=True)
class ImageSpan:
    """An image inside a sequence: ``num_patches`` scanned tokens on a ``grid_h x grid_w`` grid starting at
    ``start``; tokens after them (v6's CLS) are not part of the span."""
    start: int
    grid_h: int
    grid_w: int

    @property
    def num_patches(self) -> int:
        return self.grid_h * self.grid_w

    @property
    def end(self) -> int:
        return self.start + self.num_patches


def chunk_order(mode: str, layer: int, length: int, spans: Sequence[ImageSpan]) -> Optional[Tensor]:
    """Permutation of a whole chunk of ``length`` tokens for one layer (identity outside the spans)."""
    order = None
    for sp in spans:
        p = patch_order(mode, layer, sp.grid_h, sp.grid_w)
        if p is None:
            continue
        if order is None:
            order = torch.arange(length)
        order[sp.start:sp.end] = p + sp.start
    return order


def scan_prefill(lm, x: Tensor, state: Optional[State], spans: Sequence[ImageSpan], mode: str,
                 chunk_size: Optional[int] = None) -> tuple[Tensor, State]:
    """Exact recurrent prefill of a chunk of input embeddings ``x`` [B, T, C] that holds image span(s): layer by
    layer, each layer from its own state, over the chunk in that layer's patch order.  Returns
    ``(hidden [B, T, C] in canonical order (before ln_out), new State)``."""
    check_scan_mode(mode)
    if x.dim() != 3:
        raise ValueError(f"scan_prefill expects embeddings [B, T, C], got {tuple(x.shape)}")
    x = x.to(lm.dtype)
    state = lm.state_or_new(state, x.shape[0])
    T = x.shape[1]
    for sp in spans:
        if sp.start < 0 or sp.end > T:
            raise ValueError(f"image span {sp} does not fit a chunk of {T} tokens")
    v_first = None
    layers = []
    impl = lm.wkv
    for i, block in enumerate(lm.blocks):
        order = chunk_order(mode, i, T, spans)
        if order is not None:
            order = order.to(x.device)
            inverse = torch.empty_like(order)
            inverse[order] = torch.arange(T, device=x.device)
            x = x[:, order]
            if v_first is not None:
                v_first = v_first[:, order]
        x, layer_state, v_first = block.run(x, state.layer(i), v_first, True, impl, chunk_size)
        if order is not None:
            x = x[:, inverse]
            if v_first is not None:
                v_first = v_first[:, inverse]
        layers.append(layer_state)
    return x, State(*(tuple(t) for t in zip(*layers)))


def _apply_training_permutation(t: Tensor, sp: ImageSpan, mode: str, layer: int, undo: bool) -> Tensor:
    """The training code's in-place span ops (on a clone), or their inverse."""
    s, e, H, W = sp.start, sp.end, sp.grid_h, sp.grid_w
    if sp.num_patches <= 1 or mode == "unidirectional":
        return t
    B, C = t.shape[0], t.shape[-1]
    if mode == "bidirectional":
        if layer % 2 == 1:
            t = t.clone()
            t[:, s:e] = t[:, s:e].flip(1).clone()
        return t
    k = layer % 4
    transpose, reverse = k >= 2, k % 2 == 1
    if not (transpose or reverse):
        return t
    t = t.clone()
    if not undo:
        if transpose:
            t[:, s:e] = t[:, s:e].reshape(B, H, W, C).transpose(1, 2).reshape(B, H * W, C).clone()
        if reverse:
            t[:, s:e] = t[:, s:e].flip(1).clone()
    else:
        if reverse:
            t[:, s:e] = t[:, s:e].flip(1).clone()
        if transpose:
            t[:, s:e] = t[:, s:e].reshape(B, W, H, C).transpose(1, 2).reshape(B, H * W, C).clone()
    return t


def training_style_forward(lm, x: Tensor, spans: Sequence[ImageSpan], mode: str,
                           chunk_size: Optional[int] = None) -> Tensor:
    """The training forward (v6.0 ``bidirectional_forward``, v5.1 ``multidirectional_forward``, v7.00 plain):
    the whole sequence of embeddings ``x`` [B, T, C] from a zero state, each layer over the full sequence with
    the patch spans permuted in place for that layer and restored after it.  Returns logits [B, T, V] float32."""
    check_scan_mode(mode)
    x = x.to(lm.dtype)
    state = lm.new_state(x.shape[0])
    v_first = None
    impl = lm.wkv
    for i, block in enumerate(lm.blocks):
        for sp in spans:
            x = _apply_training_permutation(x, sp, mode, i, undo=False)
            if v_first is not None:
                v_first = _apply_training_permutation(v_first, sp, mode, i, undo=False)
        x, _, v_first = block.run(x, state.layer(i), v_first, True, impl, chunk_size)
        for sp in reversed(spans):
            x = _apply_training_permutation(x, sp, mode, i, undo=True)
            if v_first is not None:
                v_first = _apply_training_permutation(v_first, sp, mode, i, undo=True)
    return lm.logits(x)
