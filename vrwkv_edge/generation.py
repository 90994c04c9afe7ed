"""Generation on any model with the vrwkv_edge API (``forward``/``step``/``new_state``): the PyTorch models, the
ONNX Runtime backend and VisualRWKV all share it.

Sampling follows the RWKV demo apps (ChatRWKV ``PIPELINE.sample_logits`` and the VisualRWKV gradio apps):
penalties are applied to the logits first, then temperature, top-k and top-p (nucleus); ``temperature == 0``
is greedy.  The penalty of a token that was generated ``n`` times is ``presence + n * frequency`` and every
count decays by ``penalty_decay`` after each step, so old repetitions are gradually forgiven.

States are never modified in place, so a prompt prefix is computed once and reused::

    logits, prefix_state = model.forward(prefix_ids, last_only=True)
    for question in questions:
        out = generate(model, tok.encode(question), state=prefix_state, prefix_logits=logits)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Sequence

import torch
from torch import Tensor

from .tokenizer import DOUBLE_NEWLINE, END_OF_TEXT

DEFAULT_STOP_TOKENS = (DOUBLE_NEWLINE, END_OF_TEXT)
# Penalties are subtracted from logits (useful values are ~0..2; a huge one forbids repetition outright).
# Beyond this bound, times the counts, the logits would overflow float32 to +-inf, so larger ones are refused.
MAX_ABS_PENALTY = 1e9


@dataclass
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 0.3
    top_k: int = 0                      # 0: no top-k cut
    presence_penalty: float = 0.0
    frequency_penalty: float = 1.0
    penalty_decay: float = 0.996
    max_new_tokens: int = 256
    stop_tokens: tuple[int, ...] = DEFAULT_STOP_TOKENS
    seed: Optional[int] = None

    def __post_init__(self):
        checks = [("temperature", self.temperature >= 0), ("top_p", 0 <= self.top_p <= 1),
                  ("top_k", self.top_k >= 0), ("penalty_decay", 0 <= self.penalty_decay <= 1),
                  ("max_new_tokens", self.max_new_tokens >= 0)]
        for name, ok in checks:
            if not ok:
                raise ValueError(f"SamplingParams.{name}={getattr(self, name)!r} is out of range")
        for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty", "penalty_decay"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"SamplingParams.{name} must be finite, got {getattr(self, name)!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)
                                      or not -2 ** 63 <= self.seed < 2 ** 64):
            raise ValueError(f"SamplingParams.seed={self.seed!r} must be an integer in [-2**63, 2**64)")
        for name in ("presence_penalty", "frequency_penalty"):
            if abs(getattr(self, name)) > MAX_ABS_PENALTY:
                raise ValueError(f"SamplingParams.{name}={getattr(self, name)!r} is out of range "
                                 f"[-{MAX_ABS_PENALTY:g}, {MAX_ABS_PENALTY:g}] (logit units)")

    @classmethod
    def greedy(cls, **kw) -> "SamplingParams":
        kw.setdefault("frequency_penalty", 0.0)
        return cls(temperature=0.0, top_p=1.0, **kw)


class Sampler:
    """Turns logits [B, V] into next tokens [B], keeping the per-sequence penalty counts."""

    def __init__(self, params: SamplingParams, batch_size: int, vocab_size: int):
        self.params = params
        self.counts = torch.zeros(batch_size, vocab_size)
        self.generator = torch.Generator()
        if params.seed is not None:
            self.generator.manual_seed(params.seed)
        else:
            self.generator.seed()

    def __call__(self, logits: Tensor) -> Tensor:
        p = self.params
        logits = logits.float().cpu()
        if not torch.isfinite(logits).any(-1).all():
            raise FloatingPointError("the model produced logits with no finite value (NaN/inf): cannot sample")
        seen = self.counts > 0
        logits = logits - (p.presence_penalty * seen + p.frequency_penalty * self.counts)
        if p.temperature == 0:
            token = logits.argmax(-1)
        else:
            token = self._sample(logits)
        self.counts *= p.penalty_decay
        self.counts[torch.arange(len(token)), token] += 1
        return token

    def _sample(self, logits: Tensor) -> Tensor:
        """Top-k, then top-p on the model's distribution, then temperature, all in log space: ``log p / T`` with
        the maximum subtracted first stays finite for any T > 0, so T -> 0 approaches greedy smoothly instead of
        underflowing ``p ** (1/T)`` to an all-zero distribution."""
        p = self.params
        logp = torch.log_softmax(logits.double(), -1)
        if p.top_k > 0:
            kth = logp.topk(min(p.top_k, logp.shape[-1]), -1).values[:, -1:]
            logp = logp.masked_fill(logp < kth, -math.inf)
        if p.top_p < 1.0:
            # Keep the smallest set of most likely tokens whose mass reaches top_p (at least one token).
            sorted_logp, order = logp.sort(-1, descending=True)
            probs = sorted_logp.exp()
            mass_before = probs.cumsum(-1) - probs
            keep_sorted = mass_before < p.top_p * probs.sum(-1, keepdim=True)
            keep_sorted[:, 0] = True
            keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
            logp = logp.masked_fill(~keep, -math.inf)
        scaled = (logp - logp.amax(-1, keepdim=True)) / p.temperature      # the most likely token scores 0
        return torch.multinomial(torch.softmax(scaled, -1), 1, generator=self.generator)[:, 0]


@dataclass
class GenerationResult:
    tokens: list[list[int]]             # generated ids per sequence (stop token excluded)
    state: object                       # the state after the last token fed to the model
    logits: Tensor                      # logits [B, V] after that token
    finish_reason: list[str] = field(default_factory=list)   # "stop" or "length" per sequence


@torch.no_grad()
def prefill_ids(model, ids: Tensor, state=None) -> tuple[Tensor, object]:
    """Runs a prompt [B, T] (T >= 1) and returns (last logits [B, V], state)."""
    if ids.dim() == 1:
        ids = ids[None]
    return model.forward(ids, state, last_only=True)


@torch.no_grad()
def generate_stream(model, prompt_ids: Optional[Sequence[int] | Tensor] = None, *, state=None,
                    prefix_logits: Optional[Tensor] = None, params: Optional[SamplingParams] = None,
                    result: Optional[GenerationResult] = None) -> Iterator[Tensor]:
    """Yields the next tokens [B] one step at a time.  Sequences that hit a stop token keep being padded with
    their stop token and stop being fed, so a batch finishes when all of its sequences have.

    Start either from ``prompt_ids`` ([T] or [B, T], prefilled from ``state``) or, with no prompt, from a
    ``state`` and the ``prefix_logits`` it produced.  ``result`` (optional) receives the final state/logits."""
    params = params or SamplingParams()
    if prompt_ids is not None and len(prompt_ids) > 0:
        ids = torch.as_tensor(prompt_ids, dtype=torch.long)
        logits, state = prefill_ids(model, ids, state)
    elif state is not None and prefix_logits is not None:
        logits = prefix_logits
    else:
        raise ValueError("generate: give prompt_ids, or a state together with the prefix_logits it produced")
    batch = logits.shape[0]
    sampler = Sampler(params, batch, logits.shape[-1])
    stops = torch.tensor(params.stop_tokens or (), dtype=torch.long)
    done = torch.zeros(batch, dtype=torch.bool)
    tokens: list[list[int]] = [[] for _ in range(batch)]
    reasons = ["length"] * batch
    for _ in range(params.max_new_tokens):
        token = sampler(logits)
        token = torch.where(done, tokens_last(tokens, token), token)
        hit = torch.isin(token, stops) & ~done
        for b in range(batch):
            if not done[b]:
                if hit[b]:
                    reasons[b] = "stop"
                else:
                    tokens[b].append(int(token[b]))
        done |= hit
        yield token
        if bool(done.all()):
            break
        logits, state = model.step(token.to(getattr(model, "device", "cpu")), state)
    if result is not None:
        result.tokens, result.state, result.logits, result.finish_reason = tokens, state, logits, reasons


def tokens_last(tokens: list[list[int]], fallback: Tensor) -> Tensor:
    return torch.tensor([t[-1] if t else int(f) for t, f in zip(tokens, fallback)], dtype=torch.long)


def generate(model, prompt_ids=None, *, state=None, prefix_logits=None, params: Optional[SamplingParams] = None,
             on_token: Optional[Callable[[Tensor], None]] = None) -> GenerationResult:
    """Runs :func:`generate_stream` to the end; ``on_token`` is called with each step's tokens [B]."""
    result = GenerationResult([], None, torch.empty(0))
    for token in generate_stream(model, prompt_ids, state=state, prefix_logits=prefix_logits, params=params,
                                 result=result):
        if on_token is not None:
            on_token(token)
    return result


class TextStreamer:
    """Decodes a growing token list incrementally, emitting only complete UTF-8 text (a multi-byte character
    split across tokens is held back until it is whole)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.pending = b""

    def push(self, token: int) -> str:
        self.pending += self.tokenizer.decode_bytes([token])
        try:
            text = self.pending.decode("utf-8")
        except UnicodeDecodeError as e:
            if e.reason == "unexpected end of data":
                text = self.pending[:e.start].decode("utf-8", errors="replace")
                self.pending = self.pending[e.start:]
                return text
            text = self.pending.decode("utf-8", errors="replace")
        self.pending = b""
        return text

    def flush(self) -> str:
        text, self.pending = self.pending.decode("utf-8", errors="replace"), b""
        return text
