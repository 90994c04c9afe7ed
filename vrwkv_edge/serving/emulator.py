"""What Triton's sequence batcher with implicit state does to a stateful model, reproduced in process with ONNX
Runtime, so a repository written by :func:`~vrwkv_edge.serving.triton.write_triton_repository` can be driven
and tested where Triton cannot run.

Per call (:meth:`SequenceBatcherEmulator.infer`) it does what the server does for one batch: requests of
different sequences (one request per sequence at most) are stacked along the batch, each row gets its control
tensors (``START`` on a sequence's first request, ``READY`` on every row that holds a request, ``END`` on its
last, ``CORRID`` its correlation id) with the true/false values the configuration declares, and its implicit
state: the configuration's ``initial_state`` for a starting sequence (zeros with ``zero_data``; with
``fresh_state="nan"``, or without an initial state, NaN-filled memory, as uninitialised server memory may be),
else what the sequence's previous request left.  After the run each row's state outputs are kept for its next
request, and dropped on ``END``.  ``slots`` adds empty batch rows (``READY`` false, garbage inputs and state),
as the ``direct`` strategy does.  Refused as the server refuses them: a request of an unknown sequence without
``START``, two requests of one sequence in a batch, a batch over ``max_batch_size``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from vrwkv_edge.fileio import PathLike

from .triton import RepositoryError, check_model, parse_config
from .triton_client import request_inputs

_NP = {"TYPE_FP32": np.float32, "TYPE_INT32": np.int32, "TYPE_INT64": np.int64, "TYPE_UINT64": np.uint64,
       "TYPE_BOOL": np.bool_, "TYPE_FP16": np.float16}


@dataclass
class SequenceRequest:
    """One inference request of a sequence: its inputs without the batch dimension, as a client sends them
    (``input_ids`` as ``[1]``), and the sequence flags."""
    sequence_id: int
    inputs: dict
    start: bool = False
    end: bool = False


@dataclass
class _Control:
    name: str
    kind: str
    dtype: type
    false_true: Optional[tuple] = None


@dataclass
class _StateSpec:
    input_name: str
    output_name: str
    dtype: type
    dims: list
    zero_init: bool = field(default=False)


class SequenceBatcherEmulator:
    """A stateful model of a Triton repository run as the sequence batcher runs it (module docstring)."""

    def __init__(self, model_dir: PathLike, *, threads: int = 1, fresh_state: str = "config"):
        import onnxruntime as ort  # optional dependency (export extra): the emulator runs the ONNX model
        from tritonclient.grpc import model_config_pb2 as mc  # optional dependency: Triton's schema

        if fresh_state not in ("config", "nan"):
            raise ValueError(f"fresh_state must be 'config' or 'nan', got {fresh_state!r}")
        self.model_dir = Path(model_dir)
        check_model(self.model_dir)
        self.config = c = parse_config(self.model_dir / "config.pbtxt")
        if not c.HasField("sequence_batching"):
            raise RepositoryError(f"{self.model_dir / 'config.pbtxt'}: not a stateful model (no sequence_batching)")
        self.max_batch_size = c.max_batch_size
        self.fresh_state = fresh_state
        self.controls: list[_Control] = []
        for ci in c.sequence_batching.control_input:
            for ctl in ci.control:
                kind = mc.ModelSequenceBatching.Control.Kind.Name(ctl.kind)
                if ctl.int32_false_true:
                    self.controls.append(_Control(ci.name, kind, np.int32, tuple(ctl.int32_false_true)))
                elif ctl.fp32_false_true:
                    self.controls.append(_Control(ci.name, kind, np.float32, tuple(ctl.fp32_false_true)))
                elif ctl.bool_false_true:
                    self.controls.append(_Control(ci.name, kind, np.bool_, tuple(ctl.bool_false_true)))
                else:
                    self.controls.append(_Control(ci.name, kind, _NP[mc.DataType.Name(ctl.data_type)]))
        self.states = [_StateSpec(s.input_name, s.output_name, _NP[mc.DataType.Name(s.data_type)], list(s.dims),
                                  any(i.zero_data for i in s.initial_state)) for s in c.sequence_batching.state]
        self.inputs = {i.name: (_NP[mc.DataType.Name(i.data_type)], list(i.dims),
                                list(i.reshape.shape) if i.HasField("reshape") else None) for i in c.input}
        self.outputs = [o.name for o in c.output]
        version = sorted((p for p in self.model_dir.iterdir() if p.is_dir() and p.name.isdigit()),
                         key=lambda p: int(p.name))[-1]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(version / "model.onnx"), sess_options=opts,
                                            providers=["CPUExecutionProvider"])
        self._store: dict[int, dict[str, np.ndarray]] = {}
        self.calls = 0
        self.batch_sizes: list[int] = []

    @property
    def live_sequences(self) -> list[int]:
        return sorted(self._store)

    def _fresh(self, s: _StateSpec) -> np.ndarray:
        if s.zero_init and self.fresh_state == "config":
            return np.zeros(s.dims, s.dtype)
        return np.full(s.dims, np.nan, s.dtype)

    def infer(self, requests: Sequence[SequenceRequest], slots: Optional[int] = None) -> list[dict]:
        """One batch: returns each request's outputs (without the batch dimension), in request order."""
        n = len(requests)
        rows = slots if slots is not None else n
        if n == 0:
            raise ValueError("infer: an empty batch")
        if rows < n or rows > self.max_batch_size:
            raise RepositoryError(f"{self.model_dir.name}: a batch of {rows} rows ({n} requests); max_batch_size is "
                                  f"{self.max_batch_size}")
        ids = [r.sequence_id for r in requests]
        if len(set(ids)) != n:
            raise RepositoryError("two requests of one sequence in one batch: the sequence batcher never does that")
        for r in requests:
            if not r.start and r.sequence_id not in self._store:
                raise RepositoryError(f"inference request for sequence {r.sequence_id} to model "
                                      f"'{self.model_dir.name}' must specify the START flag on the first request "
                                      f"of the sequence")
        feed = {}
        rng = np.random.default_rng(self.calls)
        for name, (dtype, dims, reshape) in self.inputs.items():
            vals = []
            for r in requests:
                if name not in r.inputs:
                    raise RepositoryError(f"request of sequence {r.sequence_id}: input {name} is missing")
                v = np.asarray(r.inputs[name], dtype=dtype)
                if list(v.shape) != dims:
                    raise RepositoryError(f"request of sequence {r.sequence_id}: input {name} has shape "
                                          f"{list(v.shape)}, the configuration says {dims}")
                vals.append(v.reshape(reshape) if reshape is not None else v)
            pad = [np.asarray(rng.integers(0, 1 << 30, size=vals[0].shape), dtype=dtype)] * (rows - n)
            feed[name] = np.stack(vals + pad)
        for ctl in self.controls:
            col = []
            for b in range(rows):
                r = requests[b] if b < n else None
                if ctl.kind == "CONTROL_SEQUENCE_CORRID":
                    col.append(r.sequence_id if r else 0)
                    continue
                flag = {"CONTROL_SEQUENCE_START": r is not None and r.start,
                        "CONTROL_SEQUENCE_END": r is not None and r.end,
                        "CONTROL_SEQUENCE_READY": r is not None}[ctl.kind]
                col.append(ctl.false_true[int(flag)])
            feed[ctl.name] = np.asarray(col, dtype=ctl.dtype).reshape(rows, 1)
        for s in self.states:
            vals = [self._fresh(s) if r.start else self._store[r.sequence_id][s.input_name] for r in requests]
            vals += [np.full(s.dims, np.nan, s.dtype)] * (rows - n)
            feed[s.input_name] = np.stack(vals)
        names = self.outputs + [s.output_name for s in self.states]
        outs = dict(zip(names, self.session.run(names, feed)))
        self.calls += 1
        self.batch_sizes.append(rows)
        results = []
        for b, r in enumerate(requests):
            if r.end:
                self._store.pop(r.sequence_id, None)
            else:
                self._store[r.sequence_id] = {s.input_name: outs[s.output_name][b].copy() for s in self.states}
            results.append({name: outs[name][b] for name in self.outputs})
        return results


class EmulatorTransport:
    """The emulator behind the client's transport interface (one request per call, as a chat client sends)."""

    def __init__(self, emulator: SequenceBatcherEmulator):
        self.emulator = emulator
        embeds = emulator.inputs.get("inputs_embeds")
        self.embeds_dim = embeds[1][0] if embeds else None

    def step(self, sequence_id: int, token: int, start: bool, end: bool,
             embeds: Optional[np.ndarray] = None) -> np.ndarray:
        req = SequenceRequest(sequence_id, request_inputs(token, embeds, self.embeds_dim), start, end)
        return self.emulator.infer([req])[0]["logits"]
