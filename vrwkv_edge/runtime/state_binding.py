"""Prebound state buffers for the ONNX Runtime backend: a decode step with no feeds and no allocation.

The graphs read the state from one preallocated buffer set and write the next state (and the logits) into the
other; the two sets are bound to ONNX Runtime IO bindings once (per graph and direction) and ping-ponged, so a
decode step copies the token ids into a bound buffer and calls ``run_with_iobinding``.  The ``feeds`` path of
:class:`~vrwkv_edge.runtime.ort.OrtModel` (``io_binding=False``) is the reference; the two give bit-identical
logits and states (``tests/runtime/test_prebound.py``).

Immutability.  :class:`~vrwkv_edge.state.State` is immutable from the caller's point of view, but a ping-pong
writes step ``n + 2`` into the memory that held step ``n``.  So before a set is written, :meth:`BufferSet.state_free`
checks that nobody but this module still holds it: the ``State`` object, its three tuples and its tensors have
the reference counts they had when the set was made, and the buffer's storage has no extra users (views, numpy
arrays).  A set still held is left to its holder and replaced by fresh memory (the same for the logits), so a
caller may keep any state or logits it was given; the common loop ``logits, state = model.step(t, state)`` drops
them and never allocates.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, Optional

import numpy as np
import torch
from torch import Tensor

from vrwkv_edge.state import State

# Graphs whose first input has a fixed shape per batch size: it gets a buffer bound once (the sequence graphs'
# first input changes length with every call and is bound per call).
FIXED_ENTRY_KINDS = ("decode", "decode_embeds")
_NP_TYPES = {torch.float32: np.float32, torch.int64: np.int64}


_USE_COUNT = getattr(torch._C, "_storage_Use_Count", None)


class _Storage:
    """A tensor's storage, held once, so that asking how many tensors (views, numpy arrays) share it is one C call
    per step (no torch op: right after a Run the first torch ops of a step are the slow, cache-cold ones)."""

    def __init__(self, t: Tensor):
        self.storage = t.untyped_storage()              # keeps the handle below valid
        self.handle = self.storage._cdata

    def users(self) -> int:
        """-1 where torch does not tell (then the memory counts as held)."""
        return -1 if _USE_COUNT is None else _USE_COUNT(self.handle)


class BufferSet:
    """One state (the graphs' ``present.*`` layout, layer by layer) and its logits in preallocated memory,
    handed to callers as a :class:`State` and a ``[B, V]`` tensor."""

    def __init__(self, shapes: list[tuple[int, ...]], logits_shape: tuple[int, int], device: torch.device):
        sizes = [int(np.prod(s)) for s in shapes]
        self.flat = torch.zeros(sum(sizes), dtype=torch.float32, device=device)
        offsets = np.cumsum([0] + sizes)
        self.tensors = [self.flat[int(o):int(o) + n].view(s) for o, n, s in zip(offsets, sizes, shapes)]
        self.state = State.from_flat(self.tensors)
        self._flat_storage = _Storage(self.flat)
        self._state_refs = self._state_refcounts()
        self.logits_shape, self.device = logits_shape, device
        self.new_logits()

    def new_logits(self) -> None:
        """Fresh logits memory (the old tensor stays with whoever holds it)."""
        self.logits = torch.zeros(self.logits_shape, dtype=torch.float32, device=self.device)
        self._logits_storage = _Storage(self.logits)
        self._logits_refs = self._logits_refcounts()

    # The counts below include this module's own references; they are compared with the counts taken when the
    # objects were made, never with absolute numbers.  An unknown storage count (-1) means "assume held".
    def _state_refcounts(self) -> tuple:
        s = self.state
        return (sys.getrefcount(s), sys.getrefcount(s.shift_att), sys.getrefcount(s.wkv),
                sys.getrefcount(s.shift_ffn), self._flat_storage.users(), *map(sys.getrefcount, self.tensors))

    def _logits_refcounts(self) -> tuple:
        return sys.getrefcount(self.logits), self._logits_storage.users()

    def state_free(self) -> bool:
        return self._state_refs[4] >= 0 and self._state_refcounts() == self._state_refs

    def logits_free(self) -> bool:
        return self._logits_refs[1] >= 0 and self._logits_refcounts() == self._logits_refs


class _Bound:
    __slots__ = ("session", "binding", "entry", "entry_np")

    def __init__(self, session, binding, entry: Optional[Tensor]):
        self.session, self.binding, self.entry = session, binding, entry
        self.entry_np = entry.numpy() if entry is not None and entry.device.type == "cpu" else None


class PreboundRunner:
    """The two buffer sets of one batch size and the IO bindings between them (one runner per thread: the sets
    are shared mutable memory).  ``session_for(kind)`` gives the graph's session, ``specs[kind]`` its metadata
    entry (``inputs``/``outputs`` with names and shapes)."""

    def __init__(self, session_for: Callable, specs: dict, batch: int, state_shapes: list[tuple[int, ...]],
                 vocab_size: int, device: torch.device):
        self.session_for, self.specs, self.batch, self.device = session_for, specs, batch, device
        self.dev_type, self.dev_id = ("cuda", device.index or 0) if device.type == "cuda" else ("cpu", 0)
        self.state_shapes = state_shapes
        self.logits_shape = (batch, vocab_size)
        self.sets = [self._new_set(), self._new_set()]
        self.bound: dict[tuple[str, int], _Bound] = {}     # (graph kind, source set) -> binding
        self.entries: dict[str, Tensor] = {}                # fixed-shape first inputs, bound once per kind
        self.allocations = 2                                # buffer sets and logits made (for tests)
        # Time inside ONNX Runtime's run (the rest of a step is this wrapper's overhead), as the C++ Session::Stats.
        self.runs, self.run_seconds = 0, 0.0

    def _new_set(self) -> BufferSet:
        return BufferSet(self.state_shapes, self.logits_shape, self.device)

    def owns(self, state: State) -> bool:
        """True when ``state`` is one of this runner's buffer sets (so it was made by the graphs: no checks)."""
        return state is self.sets[0].state or state is self.sets[1].state

    # ---- bindings ---------------------------------------------------------------------------------------------
    def _bind(self, binding, name: str, t: Tensor, output: bool) -> None:
        fn = binding.bind_output if output else binding.bind_input
        fn(name, self.dev_type, self.dev_id, _NP_TYPES[t.dtype], list(t.shape), t.data_ptr())

    def _binding(self, kind: str, src: int) -> _Bound:
        b = self.bound.get((kind, src))
        if b is not None:
            return b
        sess = self.session_for(kind)                # first: it names a graph the export lacks
        spec = self.specs[kind]
        binding = sess.io_binding()
        ins, outs = [i["name"] for i in spec["inputs"]], [o["name"] for o in spec["outputs"]]
        for name, t in zip(ins[1:], self.sets[src].tensors):
            self._bind(binding, name, t, output=False)
        dst = self.sets[1 - src]
        self._bind(binding, outs[0], dst.logits, output=True)
        for name, t in zip(outs[1:], dst.tensors):
            self._bind(binding, name, t, output=True)
        entry = None
        if kind in FIXED_ENTRY_KINDS:
            entry = self.entries.get(kind)
            if entry is None:
                first = spec["inputs"][0]
                shape = [self.batch if d == "batch" else d for d in first["shape"]]
                dtype = torch.int64 if first["dtype"] == "int64" else torch.float32
                entry = self.entries[kind] = torch.zeros(shape, dtype=dtype, device=self.device)
            self._bind(binding, ins[0], entry, output=False)
        b = self.bound[(kind, src)] = _Bound(sess, binding, entry)
        return b

    # ---- one run ----------------------------------------------------------------------------------------------
    def _writable(self, i: int) -> None:
        """Makes set ``i`` safe to overwrite: memory still held by a caller is left to it and replaced."""
        s = self.sets[i]
        if not s.state_free():
            self.sets[i] = self._new_set()
            self.allocations += 1
            self.bound.clear()                       # every binding reads or writes set i: rebuilt on demand
        elif not s.logits_free():
            s.new_logits()
            self.allocations += 1
            for (kind, src), b in self.bound.items():
                if src != i:                         # the bindings that write into set i
                    self._bind(b.binding, self.specs[kind]["outputs"][0]["name"], s.logits, output=True)

    def run_ids(self, ids: list[int], state: State) -> tuple[Tensor, State]:
        """A decode step from token ids given as Python ints (checked by the caller), written into the bound
        buffer through its numpy view: no torch op per step (CPU)."""
        return self.run("decode", ids, state)

    def run(self, kind: str, x, state: State) -> tuple[Tensor, State]:
        """``x``: the graph's first input (int64 ids or float32 embeddings, batch ``self.batch``; for ``decode``
        also a list of ints); ``state``: checked by the caller unless :meth:`owns` it.  Returns the logits and
        state of the other set."""
        sets = self.sets
        src = 0 if state is sets[0].state else 1 if state is sets[1].state else -1
        if src < 0:                                  # a state from elsewhere: copied into a free set
            src = 0 if sets[0].state_free() else 1
            self._writable(src)
            for mine, theirs in zip(self.sets[src].tensors, state.flat()):
                mine.copy_(theirs.detach())
        dst = 1 - src
        self._writable(dst)
        b = self._binding(kind, src)
        if type(x) is list:                          # ids as ints (run_ids): through the numpy view
            b.entry_np[:] = x
        elif b.entry is not None:
            b.entry.copy_(x.detach() if x.requires_grad else x)
        else:                                        # a sequence: bound per call, kept alive through the run
            x = x.detach().to(self.device).contiguous()
            self._bind(b.binding, self.specs[kind]["inputs"][0]["name"], x, output=False)
        if self.dev_type == "cuda":                  # torch's copies are queued on its stream; ORT uses its own
            torch.cuda.current_stream(self.device).synchronize()
            b.binding.synchronize_inputs()
        t0 = time.perf_counter()
        b.session.run_with_iobinding(b.binding)
        self.run_seconds += time.perf_counter() - t0
        self.runs += 1
        if self.dev_type == "cuda":
            b.binding.synchronize_outputs()
        out = self.sets[dst]
        return out.logits, out.state
