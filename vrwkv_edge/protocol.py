"""The model protocol every backend implements: the PyTorch models, the ONNX Runtime backend, and (as they land)
the native C++ and TensorRT runners.  Generation, chat, evaluation and the benchmarks are written against these
protocols only, so any backend runs them unchanged.

A :class:`LanguageModel` maps token ids (or input embeddings) and a :class:`~vrwkv_edge.state.State` to float32
logits and a NEW state (the given state is never modified, so prefixes can be reused):

* ``forward(ids [B, T] | inputs_embeds [B, T, C], state, last_only=...)`` -> ``(logits [B, T, V] | [B, V], state)``
* ``step(ids [B] | inputs_embeds [B, C], state)`` -> ``(logits [B, V], state)``
* ``new_state(batch_size)`` / ``state_or_new(state, batch_size)`` -> the zero state / the given one, checked.

A :class:`VisionLanguageModel` (VisualRWKV) adds ``prefill(prompt)`` over a prompt of token-id chunks and
images, exact layer-wise image scanning included; backends share that code
(:class:`vrwkv_edge.visualrwkv.model.ImagePromptMixin`) by implementing its two hooks, ``prefill_text`` and
``prefill_image``.
"""
from __future__ import annotations

from typing import Any, Optional, Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor

from .config import RWKVConfig
from .state import State


@runtime_checkable
class LanguageModel(Protocol):
    @property
    def cfg(self) -> RWKVConfig: ...

    @property
    def version(self) -> str: ...

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def device(self) -> torch.device: ...

    def new_state(self, batch_size: int = 1) -> State: ...

    def state_or_new(self, state: Optional[State], batch_size: int) -> State: ...

    def forward(self, ids: Optional[Tensor] = None, state: Optional[State] = None, *,
                inputs_embeds: Optional[Tensor] = None, last_only: bool = False,
                chunk_size: Optional[int] = None) -> tuple[Tensor, State]: ...

    def step(self, ids: Optional[Tensor] = None, state: Optional[State] = None, *,
             inputs_embeds: Optional[Tensor] = None) -> tuple[Tensor, State]: ...

    def num_parameters(self) -> int: ...

    def info(self) -> dict: ...


@runtime_checkable
class VisionLanguageModel(LanguageModel, Protocol):
    @property
    def visual_version(self) -> str: ...

    @property
    def tokens_per_image(self) -> int: ...

    def encode_images(self, images: Sequence) -> Tensor: ...

    def prefill(self, prompt: Sequence, state: Optional[State] = None, **kwargs: Any) -> tuple[Tensor, State]: ...

    def prefill_text(self, ids: Tensor, state: State, all_logits: bool, text_mode: str,
                     chunk_size: Optional[int]) -> tuple[Optional[Tensor], Tensor, State]: ...

    def prefill_image(self, item: Any, state: State, all_logits: bool,
                      chunk_size: Optional[int]) -> tuple[Optional[Tensor], Tensor, State]: ...
