"""An ONNX Runtime backend with the API of the PyTorch models (``new_state`` / ``forward`` / ``step``).

    from vrwkv_edge.export import load_onnx_model
    model = load_onnx_model("out/rwkv7-0.1b-fp32")                # CPU by default
    state = model.new_state(1)
    logits, state = model.forward(prompt_ids, state, last_only=True)   # prefill graph, logits [B, V]
    logits, state = model.step(next_ids, state)                        # decode graph, logits [B, V]

Everything returned is a float32 ``torch.Tensor`` or a :class:`vrwkv_edge.state.State` (float32 tensors: the
graphs take and return the state in float32 whatever their compute precision).  States are never modified in
place, as with the PyTorch models.

``forward`` semantics: the prefill graph returns only the LAST token's logits, so ``forward(...,
last_only=True)`` runs the prefill graph (in blocks of ``max_prefill_tokens`` tokens; exact, the state
carries over) and returns ``[B, V]``; ``forward(..., last_only=False)`` returns per-token logits
``[B, T, V]`` by stepping the decode graph once per token (same numbers as the PyTorch ``forward``, slower).

Threads: ``threads`` (intra-op threads, default all cores) and ``spinning=False`` (no busy-waiting worker
threads between runs, for processes that share the cores with other work).

Providers (``providers=``): names or ``(name, options)`` tuples as ONNX Runtime takes them, or the short names
``"cpu"``, ``"cuda"``, ``"tensorrt"``; default CPU.  ``CPUExecutionProvider`` is appended as the fallback.
IO binding (default on; :mod:`vrwkv_edge.runtime.state_binding`): the state lives in two preallocated buffer
sets bound to the graphs once and ping-ponged, so a decode step builds no feeds and allocates nothing (with a
CUDA build of torch the buffers are on the GPU and the state never visits the host).  A state or logits tensor
the caller still holds is never overwritten (that set is replaced instead).  ``io_binding=False``: the
reference path, numpy feeds per call, the same numbers bit for bit.

On load the backend checks ``metadata.json`` (structure, sizes, files present with the recorded sizes), that
each graph carries the same metadata, and that each graph's inputs and outputs have the names, element types
and shapes the metadata promises; a mismatch raises :class:`~vrwkv_edge.export.artefact.ArtefactError`
naming the file and tensor.  A state of the wrong layer count, shape or dtype raises ``ValueError`` naming
the tensor by its graph input name.
"""
from __future__ import annotations

import json
import threading
import warnings
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

from vrwkv_edge.fileio import PathLike
from vrwkv_edge.runtime.artefact import (METADATA_FILE, METADATA_PROP, ArtefactError, config_from_metadata,
                                         embedded_metadata, read_metadata, verify_hashes)
from vrwkv_edge.runtime.custom_ops import register_for_artefact
from vrwkv_edge.runtime.state_binding import PreboundRunner
from vrwkv_edge.state import State
from vrwkv_edge.visualrwkv.model import ImagePromptMixin, VisualConfig
from vrwkv_edge.visualrwkv.preprocess import ImageTransform
from vrwkv_edge.visualrwkv.towers import TowerLayout

PROVIDER_ALIASES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                    "tensorrt": "TensorrtExecutionProvider", "trt": "TensorrtExecutionProvider"}
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
_ID_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)
_ORT_TYPES = {"float32": "tensor(float)", "int64": "tensor(int64)", "float16": "tensor(float16)"}


def normalize_providers(providers) -> list:
    """``None`` -> CPU; short names expanded; unknown or unavailable providers refused; CPU appended."""
    import onnxruntime as ort

    if providers is None:
        providers = ["CPUExecutionProvider"]
    elif isinstance(providers, str) or (isinstance(providers, tuple) and len(providers) == 2
                                        and isinstance(providers[1], dict)):
        providers = [providers]                   # one name, or one (name, options) pair
    else:
        providers = list(providers)
    available = ort.get_available_providers()
    out = []
    for p in providers:
        name, opts = (p if isinstance(p, tuple) else (p, None))
        name = PROVIDER_ALIASES.get(str(name).lower(), name)
        if name not in available:
            raise ValueError(f"execution provider {name} is not available in this onnxruntime build "
                             f"(available: {available}); for CUDA/TensorRT install onnxruntime-gpu "
                             f"(pip install vrwkv_edge[gpu]) instead of onnxruntime")
        out.append((name, opts) if opts else name)
    if all((p[0] if isinstance(p, tuple) else p) != "CPUExecutionProvider" for p in out):
        out.append("CPUExecutionProvider")
    return out


def _provider_name(p) -> str:
    return p[0] if isinstance(p, tuple) else p


def _first_difference(a, b, path: str = "") -> Optional[tuple[str, object, object]]:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return (f"{path}.{k}".lstrip("."), a.get(k, "<missing>"), b.get(k, "<missing>"))
            d = _first_difference(a[k], b[k], f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            d = _first_difference(x, y, f"{path}[{i}]")
            if d:
                return d
        return None
    return None if a == b else (path.lstrip(".") or "<root>", a, b)


class OrtModel:
    """An exported vrwkv_edge directory run by ONNX Runtime; the API of :class:`~vrwkv_edge.models.RWKVModel`.

    ``verify`` (default True): every file's SHA-256 is checked against ``metadata.json`` before a session is
    made, so a graph swapped in from another export of the same shapes, or a damaged one, is refused instead
    of running with wrong weights (one sequential read of the files; ``verify=False`` skips it)."""

    def __init__(self, directory: PathLike, providers=None, *, io_binding: Optional[bool] = None,
                 session_options=None, threads: Optional[int] = None, max_prefill_tokens: int = 1024,
                 spinning: Optional[bool] = None, lazy: bool = False, verify: bool = True):
        import onnxruntime as ort

        self.path = Path(directory)
        self.metadata = read_metadata(self.path)
        if verify:
            verify_hashes(self.path, self.metadata)
        self.cfg = config_from_metadata(self.metadata)
        self.providers = normalize_providers(providers)
        primary = _provider_name(self.providers[0])
        on_gpu = primary in GPU_PROVIDERS
        if on_gpu and torch.cuda.is_available():
            dev_id = 0
            opts = self.providers[0][1] if isinstance(self.providers[0], tuple) else None
            if opts and "device_id" in opts:
                dev_id = int(opts["device_id"])
            self.device = torch.device("cuda", dev_id)
        else:
            self.device = torch.device("cpu")
        self.io_binding = True if io_binding is None else bool(io_binding)
        if max_prefill_tokens < 1:
            raise ValueError(f"max_prefill_tokens must be >= 1, got {max_prefill_tokens}")
        self.max_prefill_tokens = max_prefill_tokens
        if session_options is None:
            session_options = ort.SessionOptions()
            session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            session_options.log_severity_level = 3
            if threads:
                session_options.intra_op_num_threads = threads
            if spinning is not None:
                # ORT's worker threads spin between runs by default; turn that off when ORT shares the cores
                # with other work (e.g. a PyTorch model in the same process, as in validate()).
                session_options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        # A custom-flavour export's vrwkv nodes need the op library (found, version-checked and registered here;
        # nothing for the standard flavour): vrwkv_edge.runtime.custom_ops.
        self.op_library = register_for_artefact(session_options, self.metadata, where=str(self.path / METADATA_FILE))
        self.session_options = session_options
        self._sessions: dict = {}
        self._local = threading.local()              # this thread's PreboundRunner (see _runner)
        self._generation = 0                         # bumped by close(): runners of older sessions are dropped
        if not lazy:
            for kind in ("decode", "prefill"):
                self._session(kind)

    # ---- sizes, state, information ------------------------------------------------------------------
    @property
    def version(self) -> str:
        return self.cfg.version

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of everything at the graph boundary (state, logits, inputs_embeds)."""
        return torch.float32

    @property
    def batch_fixed(self) -> Optional[int]:
        b = self.metadata.get("batch", "dynamic")
        return None if b == "dynamic" else int(b)

    def new_state(self, batch_size: int = 1) -> State:
        self._check_batch(batch_size)
        c = self.cfg
        return State.zeros(c.n_layer, batch_size, c.n_embd, c.n_head, c.head_size, torch.float32, self.device)

    def check_state(self, state: State, batch_size: Optional[int] = None) -> None:
        """Raises ``ValueError`` naming the first state tensor (by graph input name) that does not fit."""
        if not isinstance(state, State):
            raise TypeError(f"state must be a vrwkv_edge.state.State, got {type(state).__name__}")
        c = self.cfg
        if state.n_layer != c.n_layer:
            raise ValueError(f"state has {state.n_layer} layers, the exported graphs take {c.n_layer} "
                             f"(past_key_values.0 .. past_key_values.{c.n_layer - 1})")
        b = state.batch_size if batch_size is None else batch_size
        shapes = {"shift_att": (b, c.n_embd), "wkv": (b, c.n_head, c.head_size, c.head_size),
                  "shift_ffn": (b, c.n_embd)}
        for i in range(c.n_layer):
            for field, t in zip(("shift_att", "wkv", "shift_ffn"), state.layer(i)):
                name = f"past_key_values.{i}.{field}"
                if not isinstance(t, Tensor):
                    raise ValueError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
                if tuple(t.shape) != shapes[field]:
                    what = " (batch size differs from the input's)" if (
                        tuple(t.shape[1:]) == shapes[field][1:] and t.dim() == len(shapes[field])) else ""
                    raise ValueError(f"{name}: shape {tuple(t.shape)}, expected {shapes[field]}{what}")
                if t.dtype != torch.float32:
                    raise ValueError(f"{name}: dtype {t.dtype}, the exported graphs take float32 state tensors "
                                     f"(convert with state.to(dtype=torch.float32))")

    def num_parameters(self) -> int:
        return int(self.metadata["model"]["parameters"])

    def info(self) -> dict:
        m = self.metadata
        c = self.cfg
        return {"backend": "onnxruntime", "path": str(self.path), "version": c.version, "n_layer": c.n_layer,
                "n_embd": c.n_embd, "n_head": c.n_head, "head_size": c.head_size, "vocab_size": c.vocab_size,
                "dim_ffn": c.dim_ffn, "lora": dict(c.lora), "parameters": self.num_parameters(),
                "dtype": m["dtype"], "quantize": m.get("quantize"), "opset": m["opset"], "batch": m.get("batch"),
                "chunk_size": m["chunk_size"], "scan_mode": m["scan_mode"], "graphs": sorted(m["graphs"]),
                "providers": [_provider_name(p) for p in self.providers],
                "session_providers": {k: s.get_providers() for k, s in self._sessions.items()},
                "device": str(self.device), "io_binding": self.io_binding,
                "exporter_version": m["exporter_version"], "tokenizer": m["tokenizer"],
                "prompt_template": m["prompt_template"]}

    # ---- sessions -----------------------------------------------------------------------------------
    def _session(self, kind: str):
        sess = self._sessions.get(kind)
        if sess is not None:
            return sess
        import onnxruntime as ort

        graphs = self.metadata["graphs"]
        if kind not in graphs:
            hint = " (exported with embeds=False)" if kind.endswith("_embeds") else ""
            raise ArtefactError(f"{self.path}: this export has no {kind} graph{hint}")
        file = self.path / graphs[kind]["file"]
        if not file.is_file():
            raise ArtefactError(f"{self.path}: graph file {file.name} is missing")
        try:
            sess = ort.InferenceSession(str(file), sess_options=self.session_options, providers=self.providers)
        except Exception as e:                       # ORT raises its own Fail/InvalidGraph/... types
            raise ArtefactError(f"{file}: ONNX Runtime cannot load this graph (corrupt or truncated?): "
                                f"{str(e).strip()[:500]}") from e
        self._check_session(kind, file, sess)
        primary = _provider_name(self.providers[0])
        if primary not in sess.get_providers():
            warnings.warn(f"{file.name}: {primary} was requested but ONNX Runtime runs the graph on "
                          f"{sess.get_providers()} (missing CUDA/TensorRT libraries?)", RuntimeWarning)
        self._sessions[kind] = sess
        return sess

    def _check_session(self, kind: str, file: Path, sess) -> None:
        custom = sess.get_modelmeta().custom_metadata_map
        raw = custom.get(METADATA_PROP)
        if raw is None:
            raise ArtefactError(f"{file}: carries no {METADATA_PROP} metadata: not a graph written by "
                                f"vrwkv_edge export_model")
        try:
            inner = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ArtefactError(f"{file}: its embedded {METADATA_PROP} is not valid JSON: {e}") from e
        diff = _first_difference(embedded_metadata(self.metadata), inner)
        if diff is not None:
            key, a, b = diff
            raise ArtefactError(f"{self.path / METADATA_FILE} does not match the metadata embedded in {file.name}: "
                                f"{key} is {a!r} in {METADATA_FILE} but {b!r} in the graph (was {METADATA_FILE} "
                                f"edited, or copied from another export?)")
        if custom.get("vrwkv_edge.graph") != kind:
            raise ArtefactError(f"{file}: holds the {custom.get('vrwkv_edge.graph')!r} graph, "
                                f"{METADATA_FILE} lists it as {kind!r}")
        spec = self.metadata["graphs"][kind]
        fixed_batch = self.batch_fixed
        for side, actual in (("inputs", sess.get_inputs()), ("outputs", sess.get_outputs())):
            want = spec[side]
            names = [a.name for a in actual]
            if names != [w["name"] for w in want]:
                missing = [w["name"] for w in want if w["name"] not in names]
                raise ArtefactError(f"{file}: graph {side} {names[:4]}... do not match {METADATA_FILE} "
                                    f"(missing {missing[:4]})")
            for a, w in zip(actual, want):
                if a.type != _ORT_TYPES[w["dtype"]]:
                    raise ArtefactError(f"{file}: {side[:-1]} {a.name} has type {a.type}, "
                                        f"{METADATA_FILE} says {w['dtype']}")
                if len(a.shape) != len(w["shape"]):
                    raise ArtefactError(f"{file}: {side[:-1]} {a.name} has rank {len(a.shape)}, "
                                        f"{METADATA_FILE} says shape {w['shape']}")
                for got, exp in zip(a.shape, w["shape"]):
                    if isinstance(exp, int) and got != exp:
                        raise ArtefactError(f"{file}: {side[:-1]} {a.name} has shape {a.shape}, "
                                            f"{METADATA_FILE} says {w['shape']}")
                    if exp == "batch" and fixed_batch is not None and got not in (fixed_batch, None) and \
                            not isinstance(got, str):
                        raise ArtefactError(f"{file}: {side[:-1]} {a.name} has batch {got}, "
                                            f"{METADATA_FILE} says {fixed_batch}")

    def close(self) -> None:
        self._sessions.clear()
        self._generation += 1                        # every thread's prebound bindings belong to the old sessions

    # ---- inputs -------------------------------------------------------------------------------------
    def _check_batch(self, batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        fixed = self.batch_fixed
        if fixed is not None and batch_size != fixed:
            raise ValueError(f"this export has a fixed batch size {fixed} (metadata 'batch'), got {batch_size}")

    def _entry(self, ids, inputs_embeds, seq: bool) -> tuple[str, Tensor]:
        if (ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of ids and inputs_embeds")
        c = self.cfg
        if ids is not None:
            ids = torch.as_tensor(ids)
            if ids.dtype.is_floating_point or ids.dtype == torch.bool or ids.is_complex():
                raise ValueError(f"ids must be an integer tensor, got {ids.dtype}")
            want = 2 if seq else 1
            if ids.dim() != want:
                raise ValueError(f"{'forward' if seq else 'step'} expects ids {'[B, T]' if seq else '[B]'}, "
                                 f"got shape {tuple(ids.shape)}")
            if ids.numel():
                self._check_id_range(*(int(v) for v in torch.aminmax(ids)))
            return ("prefill" if seq else "decode"), ids.to(torch.int64)
        x = torch.as_tensor(inputs_embeds)
        want = 3 if seq else 2
        if x.dim() != want or x.shape[-1] != c.n_embd:
            raise ValueError(f"{'forward' if seq else 'step'} expects inputs_embeds "
                             f"{'[B, T, C]' if seq else '[B, C]'} with C = {c.n_embd}, got {tuple(x.shape)}")
        if not x.dtype.is_floating_point:
            raise ValueError(f"inputs_embeds must be floating point, got {x.dtype}")
        return ("prefill_embeds" if seq else "decode_embeds"), x.to(torch.float32)

    def _check_id_range(self, lo: int, hi: int) -> None:
        if lo < 0 or hi >= self.cfg.vocab_size:
            raise ValueError(f"token ids must be in [0, {self.cfg.vocab_size}), got range [{lo}, {hi}]")

    def state_or_new(self, state: Optional[State], batch_size: int) -> State:
        self._check_batch(batch_size)
        if state is None:
            return self.new_state(batch_size)
        if isinstance(state, State) and state.n_layer == self.cfg.n_layer and state.batch_size != batch_size:
            raise ValueError(f"state has batch size {state.batch_size} but the input has {batch_size}")
        self.check_state(state, batch_size)
        return state

    # ---- running ------------------------------------------------------------------------------------
    def _run(self, kind: str, x: Tensor, state: State) -> tuple[Tensor, State]:
        if self.io_binding:
            return self._runner(x.shape[0]).run(kind, x, state)
        return self._run_feeds(kind, x, state)

    def _runner(self, batch: int) -> PreboundRunner:
        """This thread's prebound buffer sets for ``batch`` (remade when the batch size changes: one runner per
        thread, so a decode loop never allocates and concurrent callers never share buffers)."""
        r = getattr(self._local, "runner", None)
        if r is None or r.batch != batch or self._local.generation != self._generation:
            c = self.cfg
            shapes = [(batch, c.n_embd), (batch, c.n_head, c.head_size, c.head_size), (batch, c.n_embd)] * c.n_layer
            r = self._local.runner = PreboundRunner(self._session, self.metadata["graphs"], batch, shapes,
                                                    c.vocab_size, self.device)
            self._local.generation = self._generation
        return r

    def _owns(self, state) -> bool:
        r = getattr(self._local, "runner", None)
        return r is not None and self._local.generation == self._generation and r.owns(state)

    def run_stats(self) -> dict:
        """This thread's prebound runs: ``runs`` and ``run_seconds`` spent inside ONNX Runtime's run (a step's
        time beyond that is this wrapper's overhead); zeros before the first run or with ``io_binding=False``."""
        r = getattr(self._local, "runner", None)
        if r is None or not self.io_binding or self._local.generation != self._generation:
            return {"runs": 0, "run_seconds": 0.0}
        return {"runs": r.runs, "run_seconds": r.run_seconds}

    def _run_feeds(self, kind: str, x: Tensor, state: State) -> tuple[Tensor, State]:
        """The reference path (``io_binding=False``): numpy feeds built per call, outputs allocated by ONNX
        Runtime; the prebound path must give the same numbers bit for bit."""
        sess = self._session(kind)
        names_in = [i["name"] for i in self.metadata["graphs"][kind]["inputs"]]
        feed = {names_in[0]: x.detach().cpu().contiguous().numpy()}
        for name, t in zip(names_in[1:], state.flat()):
            feed[name] = t.detach().cpu().contiguous().numpy()
        outs = sess.run(None, feed)
        tensors = [torch.from_numpy(o) for o in outs]
        if self.device.type != "cpu":
            tensors = [t.to(self.device) for t in tensors]
        return tensors[0], State.from_flat(tensors[1:])

    def step(self, ids=None, state: Optional[State] = None, *,
             inputs_embeds: Optional[Tensor] = None) -> tuple[Tensor, State]:
        """One token: ids [B] (or inputs_embeds [B, C]) -> ``(logits [B, V] float32, new_state)``."""
        if (self.io_binding and inputs_embeds is None and type(ids) is Tensor and ids.dtype in _ID_DTYPES
                and ids.dim() == 1 and self.device.type == "cpu" and ids.device.type == "cpu"):
            # The decode loop's path: the ids as Python ints (no torch op: right after a Run the first torch ops
            # of a step are cache-cold and cost ~0.1 ms each here), the same checks as _entry.
            vals = ids.tolist()
            if vals:
                self._check_id_range(min(vals), max(vals))
            if not (self._owns(state) and state.batch_size == len(vals)):
                state = self.state_or_new(state, len(vals))
            return self._runner(len(vals)).run_ids(vals, state)
        kind, x = self._entry(ids, inputs_embeds, seq=False)
        if not (self.io_binding and self._owns(state) and state.batch_size == x.shape[0]):
            state = self.state_or_new(state, x.shape[0])
        return self._run(kind, x, state)

    def forward(self, ids=None, state: Optional[State] = None, *, inputs_embeds: Optional[Tensor] = None,
                last_only: bool = False, chunk_size: Optional[int] = None) -> tuple[Tensor, State]:
        """A sequence: ids [B, T] (or inputs_embeds [B, T, C]).  ``last_only=True``: the prefill graph,
        logits [B, V]; ``last_only=False``: per-token logits [B, T, V] by stepping the decode graph."""
        if chunk_size is not None and chunk_size != self.metadata["chunk_size"]:
            raise ValueError(f"this export's prefill graph has chunk_size {self.metadata['chunk_size']} built in; "
                             f"got chunk_size={chunk_size}")
        kind, x = self._entry(ids, inputs_embeds, seq=True)
        B, T = x.shape[0], x.shape[1]
        if T < 1:
            raise ValueError("forward needs at least one token (T >= 1)")
        state = self.state_or_new(state, B)
        if not last_only:
            step_kind = "decode" if kind == "prefill" else "decode_embeds"
            logits = []
            for t in range(T):
                lg, state = self._run(step_kind, x[:, t], state)
                logits.append(lg)
            return torch.stack(logits, 1), state
        logits = None
        for start in range(0, T, self.max_prefill_tokens):
            logits, state = self._run(kind, x[:, start:start + self.max_prefill_tokens], state)
        return logits, state

    __call__ = forward

    def __repr__(self) -> str:
        m = self.metadata
        return (f"OrtModel({str(self.path)!r}, {self.cfg.version}, L={self.cfg.n_layer}, C={self.cfg.n_embd}, "
                f"{m['dtype']}{'+' + m['quantize'] if m.get('quantize') else ''}, "
                f"providers={[_provider_name(p) for p in self.providers]})")


class OrtVisualModel(ImagePromptMixin, OrtModel):
    """A VisualRWKV export run by ONNX Runtime: :class:`OrtModel` plus the image API of
    :class:`~vrwkv_edge.visualrwkv.VisualRWKV` (``preprocess``, ``encode_images``, ``prefill`` of token chunks and
    images, ``vcfg``, ``visual_version``, ``tokens_per_image``), so :func:`~vrwkv_edge.visualrwkv.answer` and
    :class:`~vrwkv_edge.visualrwkv.ChatSession` run on it unchanged.  Images go through the ``vision`` graph and
    then the ``image_prefill`` graph (the exact per-layer image scan); text through the prefill graph."""

    def __init__(self, directory: PathLike, providers=None, **kwargs):
        super().__init__(directory, providers, **kwargs)

        v = self.metadata.get("visual")
        if v is None:
            raise ArtefactError(f"{self.path}: not a VisualRWKV export (no 'visual' section in {METADATA_FILE})")
        self.vcfg = VisualConfig(**v["config"])
        self.transforms = {p["transform"]: ImageTransform(p["mode"], p["size"], tuple(p["mean"]), tuple(p["std"]),
                                                          p.get("crop"))
                           for p in v["pixel_inputs"]}
        self._pixel_names = [p["name"] for p in v["pixel_inputs"]]
        self.image_layout = TowerLayout(**v["layout"])

    def encode_images(self, images) -> Tensor:
        """Projected image embeddings [N, tokens_per_image, C] float32 by the ``vision`` graph."""
        if not isinstance(images, (list, tuple)):
            images = [images]
        pixels = self._stack_pixels(images)
        pixels = [pixels] if isinstance(pixels, Tensor) else [pixels[k] for k in self.transforms]
        sess = self._session("vision")
        outs = sess.run(None, {n: t.detach().float().cpu().contiguous().numpy()
                               for n, t in zip(self._pixel_names, pixels)})
        return torch.from_numpy(outs[0]).to(self.device)

    def prefill_text(self, ids: Tensor, state: State, all_logits: bool, text_mode: str,
                  chunk_size: Optional[int]) -> tuple[Optional[Tensor], Tensor, State]:
        if all_logits or text_mode == "step":
            lg, state = self.forward(ids[None], state, last_only=False)
            return (lg[0] if all_logits else None), lg[0, -1:], state
        lg, state = self.forward(ids[None], state, last_only=True)
        return None, lg, state

    def prefill_image(self, item, state: State, all_logits: bool,
                   chunk_size: Optional[int]) -> tuple[Optional[Tensor], Tensor, State]:
        if all_logits:
            raise ValueError("the image_prefill graph returns the logits after the image only: all_logits=True "
                             "is not available for images in an ONNX export")
        emb = self._embed_item(item)[None].to(torch.float32)
        return (None, *self._run("image_prefill", emb, state))


def load_onnx_model(directory: PathLike, providers=None, **kwargs) -> OrtModel:
    """Opens an export made by :func:`~vrwkv_edge.export.export_model` (see :class:`OrtModel` for kwargs): an
    :class:`OrtVisualModel` for a VisualRWKV export, else an :class:`OrtModel`."""
    meta = read_metadata(directory)
    cls = OrtVisualModel if "visual" in meta else OrtModel
    return cls(directory, providers=providers, **kwargs)
