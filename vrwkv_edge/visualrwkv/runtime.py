"""Answering questions about images with a :class:`~.model.VisualRWKV`: one-shot answers with the evaluation
statistics of the original ``evaluate.py``, and multi-turn chat sessions that reuse the recurrent state.

* :func:`answer`: prefill a prompt (with the image-state cache), then generate until a stop token.  Greedy by
  default, exactly like ``evaluate.py`` (which raises on sampling); ``avg_logit`` is the mean of the chosen
  tokens' raw logits and ``avg_prob`` the geometric mean of their softmax probabilities, both INCLUDING the final
  stop token as ``evaluate.py`` counts it; ``text`` is the decoded output cut at the first ``"\\n\\n"``, stripped.
* :class:`ChatSession`: the first question is rendered with the training template (v6 ``image_position``, v7
  image-first); every later question continues from the running state as a new ``User: ...\\n\\n`` +
  ``Assistant:`` turn after the previous answer has been closed with ``"\\n\\n"`` (token 261), which is the
  multi-turn layout the models were trained on.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from ..generation import Sampler, SamplingParams, TextStreamer
from .cache import ImageStateCache
from .prompts import STOP_TEXT, STOP_TOKEN, followup_ids, question_prompt

EVAL_STOP_TOKENS = (STOP_TOKEN,)                 # evaluate.py stops on 261 only
CHAT_STOP_TOKENS = (STOP_TOKEN, 0)               # the gradio apps stop on 261 and 0


def eval_params(max_new_tokens: int = 128) -> SamplingParams:
    """evaluate.py: greedy, no penalties, stop at 261."""
    return SamplingParams(temperature=0.0, top_p=1.0, frequency_penalty=0.0, presence_penalty=0.0,
                          max_new_tokens=max_new_tokens, stop_tokens=EVAL_STOP_TOKENS)


def chat_params(**kw) -> SamplingParams:
    """The VisualRWKV gradio apps' sampling: temperature 0.2, top_p 0.3, frequency penalty 1.0 decaying by 0.996
    per step, stop on 261 and 0."""
    d = dict(temperature=0.2, top_p=0.3, frequency_penalty=1.0, presence_penalty=0.0, penalty_decay=0.996,
             max_new_tokens=256, stop_tokens=CHAT_STOP_TOKENS)
    d.update(kw)
    return SamplingParams(**d)


def token_bytes(tokenizer, token: int) -> bytes:
    """A token's bytes; ids without a token (a random model can emit 65530..65535) give b""."""
    try:
        return tokenizer.decode_bytes([token])
    except (ValueError, KeyError, IndexError):
        return b""


def decode_answer(tokenizer, ids: Sequence[int]) -> str:
    """``evaluate.py``: decode the output ids (stop token included), cut at ``"\\n\\n"``, strip.  Like the
    reference tokenizer, bytes that are not valid UTF-8 make the whole text ``"\\ufffd"``."""
    data = b"".join(token_bytes(tokenizer, t) for t in ids)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = "\ufffd"
    return text.split(STOP_TEXT)[0].strip()


@dataclass
class AnswerResult:
    text: str
    tokens: list                       # generated ids, stop token excluded
    output_ids: list                   # as evaluate.py: generated ids including the stop token if one came
    avg_logit: float
    avg_prob: float
    finish_reason: str                 # "stop" or "length"
    state: object = None               # state after the last token fed (the stop token is NOT fed)
    logits: Optional[Tensor] = None    # logits after that state
    timings: dict = field(default_factory=dict)


def generate_answer(model, logits: Tensor, state, params: SamplingParams,
                    on_token: Optional[Callable[[int], None]] = None) -> tuple:
    """Generation loop from ``(logits [1, V], state)`` that also records each chosen token's raw logit and
    probability.  Returns (tokens, output_ids, chosen_logits, chosen_probs, finish_reason, state, logits)."""
    sampler = Sampler(params, 1, logits.shape[-1])
    stops = set(params.stop_tokens or ())
    tokens, output_ids, chosen_logits, chosen_probs = [], [], [], []
    reason = "length"
    dev = getattr(model, "device", "cpu")
    for _ in range(params.max_new_tokens):
        raw = logits.float()
        tok = int(sampler(raw)[0])
        chosen_logits.append(float(raw[0, tok]))
        chosen_probs.append(float(torch.softmax(raw[0], -1)[tok]))
        output_ids.append(tok)
        if tok in stops:
            reason = "stop"
            break
        tokens.append(tok)
        if on_token is not None:
            on_token(tok)
        logits, state = model.step(torch.tensor([tok], device=dev), state)
    return tokens, output_ids, chosen_logits, chosen_probs, reason, state, logits


def _means(logits: list, probs: list) -> tuple[float, float]:
    if not logits:
        return float("nan"), float("nan")
    avg_logit = sum(logits) / len(logits)
    if any(p <= 0 for p in probs):
        return avg_logit, 0.0
    return avg_logit, math.exp(sum(math.log(p) for p in probs) / len(probs))


def answer(model, tokenizer, prompt_items: Sequence, params: Optional[SamplingParams] = None, *,
           cache: Optional[ImageStateCache] = None, on_text: Optional[Callable[[str], None]] = None,
           state=None) -> AnswerResult:
    """Prefill ``prompt_items`` (token chunks and images) from ``state`` (zeros if None) and generate one answer
    (greedy evaluate.py settings unless ``params``).  ``on_text`` receives the streamed text (complete UTF-8
    only).  The cache is used from a zero state only."""
    params = params or eval_params()
    t0 = time.perf_counter()
    with torch.no_grad():
        logits, state = model.prefill(prompt_items, state=state, cache=cache)
        t1 = time.perf_counter()
        streamer = TextStreamer(tokenizer) if on_text is not None else None

        def emit(tok):
            if streamer is not None:
                try:
                    s = streamer.push(tok)
                except (ValueError, KeyError, IndexError):
                    s = ""
                if s:
                    on_text(s)

        toks, out_ids, lg, pr, reason, state, last_logits = generate_answer(model, logits, state, params, emit)
        if streamer is not None:
            rest = streamer.flush()
            if rest:
                on_text(rest)
    t2 = time.perf_counter()
    avg_logit, avg_prob = _means(lg, pr)
    return AnswerResult(decode_answer(tokenizer, out_ids), toks, out_ids, avg_logit, avg_prob, reason, state,
                        last_logits, {"prefill_s": t1 - t0, "decode_s": t2 - t1, "new_tokens": len(toks)})


class ChatSession:
    """A multi-turn conversation about one image (v6) or several (v7)."""

    def __init__(self, model, tokenizer, images: Sequence, params: Optional[SamplingParams] = None,
                 cache: Optional[ImageStateCache] = None, image_position: Optional[str] = None):
        self.model = model
        self.tokenizer = tokenizer
        self.images = list(images)
        self.params = params or chat_params()
        self.cache = cache if cache is not None else ImageStateCache(4)
        self.image_position = image_position or model.vcfg.image_position
        self.reset()

    def reset(self) -> None:
        self.state = None
        self.turns: list[tuple[str, str]] = []

    def set_images(self, images: Sequence) -> None:
        self.images = list(images)
        self.reset()

    def ask(self, question: str, on_text: Optional[Callable[[str], None]] = None) -> AnswerResult:
        m = self.model
        if self.state is None:
            p = question_prompt(self.tokenizer, question, m.visual_version, image_position=self.image_position,
                                num_images=len(self.images))
            items = p.with_images(self.images)
        else:
            items = [followup_ids(self.tokenizer, question)]
        res = answer(m, self.tokenizer, items, self.params, cache=self.cache, on_text=on_text, state=self.state)
        # close the assistant turn with "\n\n" (261), as in training, so that the next turn can follow
        with torch.no_grad():
            _, self.state = m.step(torch.tensor([STOP_TOKEN], device=m.device), res.state)
        self.turns.append((question, res.text))
        return res
