"""Continuous batching on any :class:`~vrwkv_edge.protocol.LanguageModel` (PyTorch, ONNX Runtime, ...).

Many streams share one model: sequences join and leave the running batch at any step, each batch row carries
its own state and position, and a newcomer is prefilled while the others keep decoding (interleaved: each
engine step prefills up to ``prefill_per_step`` newcomers, then runs one batched decode step for every row).

    batcher = ContinuousBatcher(model, max_batch=8)
    a = batcher.submit(tok.encode("Hello"), SamplingParams.greedy(max_new_tokens=32))
    b = batcher.submit(tok.encode("Tell me"), SamplingParams(temperature=1.0, seed=0))
    for event in batcher.events():          # or batcher.run(): every sequence to its end
        print(event.request_id, event.token, event.finished)

Why this is exact: the RWKV state is fixed-size and every operation of a decode step is per batch row, so a
row's logits do not depend on the other rows (up to float reassociation inside batched matmuls).  The batch is
kept compact: a finishing row is removed (:meth:`State.select` of the others), a newcomer's state is appended
(:meth:`State.cat`), so a decode step costs only the rows that are running.  Each sequence has its own
:class:`~vrwkv_edge.generation.Sampler` (its own penalties and seeded generator), so its tokens are those of
:func:`~vrwkv_edge.generation.generate` on the same prompt with the same parameters, run alone.

One exception, measured: an ONNX Runtime **int8** export quantizes activations dynamically with ONE scale per
tensor, i.e. over the whole batch (``DynamicQuantizeLinear`` before ``MatMulInteger``), so an int8 row's logits
depend on its batch mates (up to 0.84 in logits at 0.1B with two rows; one row per call: identical), and its
tokens can differ from a solo run.  fp32 and fp16 graphs are row-independent (0.1B fp32: identical logits).

A sequence follows ``generate``'s rules: it samples from the logits after its last input, stops on a stop token
(not emitted) or after ``max_new_tokens`` tokens; a finished row leaves before the next decode step (its last
token is never fed, as no logits after it are needed).  :meth:`cancel` removes a sequence at any step.
"""
from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Hashable, Iterator, Optional, Sequence

import torch
from torch import Tensor

from vrwkv_edge.generation import Sampler, SamplingParams
from vrwkv_edge.protocol import LanguageModel
from vrwkv_edge.state import State


@dataclass
class SequenceResult:
    """One sequence's outcome: generated tokens (stop token excluded), why it ended, when it joined and left
    (engine step numbers) and, with ``keep_logits``, the logits [V] each token was sampled from."""
    request_id: Hashable
    prompt_tokens: int
    tokens: list[int] = field(default_factory=list)
    finish_reason: Optional[str] = None          # "stop", "length" or "cancelled"
    joined_step: Optional[int] = None
    left_step: Optional[int] = None
    logits: list[Tensor] = field(default_factory=list)


@dataclass(frozen=True)
class TokenEvent:
    """What one engine step produced for one sequence: a token (``None`` when it ended without one) and whether
    the sequence has finished (then ``finish_reason`` says why)."""
    request_id: Hashable
    token: Optional[int]
    finished: bool
    finish_reason: Optional[str] = None


class _Sequence:
    def __init__(self, request_id: Hashable, prompt: Tensor, params: SamplingParams, vocab_size: int,
                 keep_logits: bool):
        self.result = SequenceResult(request_id, int(prompt.numel()))
        self.prompt = prompt
        self.params = params
        self.sampler = Sampler(params, 1, vocab_size)
        self.stops = set(params.stop_tokens or ())
        self.keep_logits = keep_logits
        self.prefilled = 0                       # prompt tokens already run
        self.state: Optional[State] = None       # batch-1 state while prefilling
        self.first_logits: Optional[Tensor] = None   # [1, V] after the prompt, until the sequence joins
        self.position = 0                        # tokens this sequence has fed to the model

    @property
    def request_id(self) -> Hashable:
        return self.result.request_id


class ContinuousBatcher:
    """A batch of at most ``max_batch`` running sequences over ``model``; see the module docstring.

    ``prefill_per_step``: newcomers prefilled per engine step (the rest wait, so decoding rows are not stalled
    by a burst of arrivals).  ``prefill_chunk``: prompt tokens per prefill call (None: the whole prompt in one
    ``forward``; a number splits long prompts over several engine steps, exact as the state carries over).
    ``keep_logits``: record every sampled-from logits row in the results (tests, analysis)."""

    def __init__(self, model: LanguageModel, max_batch: int = 8, *, prefill_per_step: int = 1,
                 prefill_chunk: Optional[int] = None, keep_logits: bool = False):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if prefill_per_step < 1:
            raise ValueError(f"prefill_per_step must be >= 1, got {prefill_per_step}")
        if prefill_chunk is not None and prefill_chunk < 1:
            raise ValueError(f"prefill_chunk must be >= 1 or None, got {prefill_chunk}")
        self.model = model
        self.max_batch = max_batch
        self.prefill_per_step = prefill_per_step
        self.prefill_chunk = prefill_chunk
        self.keep_logits = keep_logits
        self.vocab_size = model.cfg.vocab_size
        self.step_count = 0
        self.decode_batch_sizes: list[int] = []          # rows of every decode call, for statistics
        self._ids = itertools.count()
        self._waiting: deque[_Sequence] = deque()
        self._prefilling: list[_Sequence] = []
        self._rows: list[_Sequence] = []                 # row r of the batch state is self._rows[r]
        self._state: Optional[State] = None
        self._logits: Optional[Tensor] = None            # [rows, V]: the logits each row samples from next
        self._results: dict[Hashable, SequenceResult] = {}
        self._known: set = set()

    # ---- requests ---------------------------------------------------------------------------------------
    def submit(self, prompt_ids: Sequence[int] | Tensor, params: Optional[SamplingParams] = None,
               request_id: Optional[Hashable] = None) -> Hashable:
        """Queues a sequence; it joins the batch at a later :meth:`step`.  Returns its request id."""
        prompt = torch.as_tensor(prompt_ids, dtype=torch.long).reshape(-1)
        if prompt.numel() == 0:
            raise ValueError("submit: prompt_ids is empty (a sequence needs at least one token to condition on)")
        if int(prompt.min()) < 0 or int(prompt.max()) >= self.vocab_size:
            raise ValueError(f"submit: token ids must be in [0, {self.vocab_size}), got range "
                             f"[{int(prompt.min())}, {int(prompt.max())}]")
        if request_id is None:
            request_id = next(self._ids)
            while request_id in self._known:
                request_id = next(self._ids)
        elif request_id in self._known:
            raise ValueError(f"submit: request id {request_id!r} is already in use")
        self._known.add(request_id)
        self._waiting.append(_Sequence(request_id, prompt, params or SamplingParams(), self.vocab_size,
                                       self.keep_logits))
        return request_id

    def cancel(self, request_id: Hashable) -> bool:
        """Ends a sequence wherever it is (waiting, prefilling or decoding); False if it is not running."""
        for queue in (self._waiting, self._prefilling):
            for seq in list(queue):
                if seq.request_id == request_id:
                    queue.remove(seq)
                    self._finish(seq, "cancelled")
                    return True
        for r, seq in enumerate(self._rows):
            if seq.request_id == request_id:
                self._finish(seq, "cancelled")
                self._leave([r])
                return True
        return False

    # ---- status -----------------------------------------------------------------------------------------
    @property
    def running(self) -> int:
        """Sequences holding a slot (decoding or being prefilled)."""
        return len(self._rows) + len(self._prefilling)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def idle(self) -> bool:
        return not (self._rows or self._prefilling or self._waiting)

    def result(self, request_id: Hashable) -> SequenceResult:
        try:
            return self._results[request_id]
        except KeyError:
            raise KeyError(f"no finished sequence with request id {request_id!r}") from None

    def results(self) -> dict[Hashable, SequenceResult]:
        """Every finished sequence so far, by request id."""
        return dict(self._results)

    def row_positions(self) -> dict[Hashable, int]:
        """Tokens each decoding row has fed to the model (its position), by request id."""
        return {seq.request_id: seq.position for seq in self._rows}

    # ---- the engine -------------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self) -> list[TokenEvent]:
        """One engine step: admit and prefill newcomers, sample one token for every row, let finished rows
        leave, then one batched decode step for the rows that go on.  Returns this step's events."""
        self.step_count += 1
        while self._waiting and self.running < self.max_batch:
            self._prefilling.append(self._waiting.popleft())
        for seq in self._prefilling[:self.prefill_per_step]:
            self._prefill(seq)
        joined = [s for s in self._prefilling if s.prefilled == s.prompt.numel()]
        self._prefilling = [s for s in self._prefilling if s.prefilled < s.prompt.numel()]
        self._join(joined)
        if not self._rows:
            return []
        events, tokens, leaving = [], [], []
        for r, seq in enumerate(self._rows):
            token, reason = self._sample(seq, self._logits[r:r + 1])
            if reason is not None:
                self._finish(seq, reason)
                leaving.append(r)
            events.append(TokenEvent(seq.request_id, token, reason is not None, reason))
            tokens.append(token)
        self._leave(leaving)
        gone = set(leaving)
        going = [t for r, t in enumerate(tokens) if r not in gone]
        if going:
            ids = torch.tensor(going, dtype=torch.long, device=self.model.device)
            self._logits, self._state = self.model.step(ids, self._state)
            self.decode_batch_sizes.append(len(going))
            for seq in self._rows:
                seq.position += 1
        return events

    def events(self) -> Iterator[TokenEvent]:
        """Steps until every submitted sequence has finished, yielding each step's events."""
        while not self.idle():
            yield from self.step()

    def run(self) -> dict[Hashable, SequenceResult]:
        """Runs every submitted sequence to its end; returns all results by request id."""
        for _ in self.events():
            pass
        return self.results()

    # ---- internals --------------------------------------------------------------------------------------
    def _prefill(self, seq: _Sequence) -> None:
        n = seq.prompt.numel() - seq.prefilled
        if self.prefill_chunk is not None:
            n = min(n, self.prefill_chunk)
        ids = seq.prompt[seq.prefilled:seq.prefilled + n][None].to(self.model.device)
        logits, seq.state = self.model.forward(ids, seq.state, last_only=True)
        seq.prefilled += n
        seq.position += n
        seq.first_logits = logits

    def _join(self, joined: list[_Sequence]) -> None:
        if not joined:
            return
        states = ([self._state] if self._rows else []) + [s.state for s in joined]
        logits = ([self._logits] if self._rows else []) + [s.first_logits for s in joined]
        self._state = State.cat(states)
        self._logits = torch.cat(logits, 0)
        for seq in joined:
            seq.state = seq.first_logits = None
            seq.result.joined_step = self.step_count
            self._rows.append(seq)

    def _leave(self, rows: list[int]) -> None:
        if not rows:
            return
        gone = set(rows)
        keep = [r for r in range(len(self._rows)) if r not in gone]
        self._rows = [self._rows[r] for r in keep]
        if keep:
            self._state = self._state.select(keep)
            self._logits = self._logits[torch.tensor(keep, dtype=torch.long, device=self._logits.device)]
        else:
            self._state = self._logits = None

    def _sample(self, seq: _Sequence, logits: Tensor) -> tuple[Optional[int], Optional[str]]:
        res = seq.result
        if len(res.tokens) >= seq.params.max_new_tokens:
            return None, "length"
        token = int(seq.sampler(logits)[0])
        if seq.keep_logits:
            res.logits.append(logits[0].float().cpu())
        if token in seq.stops:
            return None, "stop"
        res.tokens.append(token)
        if len(res.tokens) >= seq.params.max_new_tokens:
            return token, "length"
        return token, None

    def _finish(self, seq: _Sequence, reason: str) -> None:
        seq.result.finish_reason = reason
        seq.result.left_step = self.step_count
        self._results[seq.request_id] = seq.result
