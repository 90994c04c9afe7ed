"""A TensorRT runner for the engines ``vrwkv-edge build-trt`` writes: UNTESTED.

**Never run**: it needs a CUDA GPU, a CUDA build of torch and the ``tensorrt`` Python package, none of which the
development machine has.  It is kept small on purpose; treat it as a starting point to verify on the target, not a
tested backend.  Nothing imports it except a caller who asks for it.

Design: the recurrent state lives on the device as float32 torch tensors; each step binds the graph's
``past_key_values.*`` inputs to the current state and its ``present.*`` outputs to a second set of buffers, and the
two sets swap roles after every step (no copy).  ``decode`` with a fixed batch is captured in two CUDA graphs, one per
direction of the swap, and replayed.  The language-model API follows :class:`vrwkv_edge.protocol.LanguageModel`
for ``step`` / ``forward`` on token ids; ``forward`` runs the prefill engine.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch

from vrwkv_edge.runtime.artefact import config_from_metadata, read_metadata
from vrwkv_edge.state import State
from vrwkv_edge.trt.build import ENGINE_DIR, MANIFEST, import_tensorrt


class TrtLanguageModel:
    """UNTESTED (see the module docstring).  Decode / prefill engines of an export on one CUDA device."""

    def __init__(self, directory, plugin: Optional[str] = None, device: str = "cuda"):
        trt = import_tensorrt()
        if trt is None:
            raise RuntimeError("the tensorrt Python package is not installed")
        d = Path(directory)
        self.meta = read_metadata(d)
        self.cfg = config_from_metadata(self.meta)
        manifest = json.loads((d / ENGINE_DIR / MANIFEST).read_text(encoding="utf-8"))
        self.device = torch.device(device)
        self.stream = torch.cuda.Stream(self.device)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        if plugin or manifest.get("plugin"):
            self._runtime.get_plugin_registry().load_library(str(plugin or manifest["plugin"]["file"]))
        self.engines, self.contexts = {}, {}
        for kind in ("decode", "prefill"):
            engine = self._runtime.deserialize_cuda_engine((d / ENGINE_DIR / manifest["engines"][kind]["file"])
                                                           .read_bytes())
            self.engines[kind], self.contexts[kind] = engine, engine.create_execution_context()
        self.in_names = State.io_names(self.cfg.n_layer, "past_key_values")
        self.out_names = State.io_names(self.cfg.n_layer, "present")
        self._graphs: dict = {}

    def new_state(self, batch_size: int = 1) -> State:
        c = self.cfg
        return State.zeros(c.n_layer, batch_size, c.n_embd, c.n_head, c.head_size).to(self.device)

    def _run(self, kind: str, ids: torch.Tensor, state: State, out_state: State) -> torch.Tensor:
        ctx = self.contexts[kind]
        ids = ids.to(self.device, torch.int64).contiguous()
        logits = torch.empty(ids.shape[0], self.cfg.vocab_size, device=self.device, dtype=torch.float32)
        ctx.set_input_shape("input_ids", tuple(ids.shape))
        ctx.set_tensor_address("input_ids", ids.data_ptr())
        for name, t in zip(self.in_names, state.flat()):
            ctx.set_input_shape(name, tuple(t.shape))
            ctx.set_tensor_address(name, t.data_ptr())
        for name, t in zip(self.out_names, out_state.flat()):
            ctx.set_tensor_address(name, t.data_ptr())
        ctx.set_tensor_address("logits", logits.data_ptr())
        if not ctx.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError(f"TensorRT {kind} enqueue failed")
        return logits

    def step(self, ids: torch.Tensor, state: Optional[State] = None) -> tuple[torch.Tensor, State]:
        state = state if state is not None else self.new_state(ids.shape[0])
        out = state.clone()                      # a new state, as the protocol requires (state is not modified)
        logits = self._run("decode", ids, state, out)
        self.stream.synchronize()
        return logits, out

    def forward(self, ids: torch.Tensor, state: Optional[State] = None, *, last_only: bool = True
                ) -> tuple[torch.Tensor, State]:
        if not last_only:
            raise ValueError("the prefill engine returns the last position's logits only (last_only=True)")
        state = state if state is not None else self.new_state(ids.shape[0])
        out = state.clone()
        logits = self._run("prefill", ids, state, out)
        self.stream.synchronize()
        return logits, out

    def decode_graphed(self, first_ids: torch.Tensor, state: State, steps: int, pick=None) -> list[torch.Tensor]:
        """Greedy (or ``pick(logits) -> ids``) decoding of ``steps`` tokens with the decode step captured in two CUDA
        graphs (state A -> B and B -> A) over static buffers; returns the chosen ids per step."""
        pick = pick or (lambda logits: logits.argmax(-1))
        ids = first_ids.to(self.device, torch.int64).clone()
        bufs = [state.clone(), state.clone()]
        logits = {}
        with torch.cuda.stream(self.stream):
            for k in (0, 1):                      # warm up, then capture each direction
                self._run("decode", ids, bufs[k], bufs[1 - k])
                self.stream.synchronize()
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, stream=self.stream):
                    logits[k] = self._run("decode", ids, bufs[k], bufs[1 - k])
                self._graphs[k] = graph
            for dst, src in zip(bufs[0].flat(), state.flat()):   # the captures advanced the buffers: start
                dst.copy_(src)                                     # again, in place (the graphs hold addresses)
            out = []
            for i in range(steps):
                self._graphs[i % 2].replay()
                nxt = pick(logits[i % 2])
                ids.copy_(nxt)
                out.append(nxt.clone())
        self.stream.synchronize()
        return out
