"""A Triton Inference Server model repository from an export directory (``vrwkv-edge export-triton``).

    REPO/<name>/config.pbtxt            the decode model: sequence batcher, implicit state, oldest strategy
    REPO/<name>/1/model.onnx            the serving variant of decode.onnx (:mod:`vrwkv_edge.export.serving`)
    REPO/<name>/1/model.plan            ... or a TensorRT engine built from it (``engine=``)
    REPO/<name>/metadata.json           the export's metadata (sizes, tokenizer, prompt template) for clients
    REPO/<name>/<vocabulary>.txt        the export's tokenizer vocabulary
    REPO/<name>_vision/config.pbtxt     VisualRWKV only: pixels -> projected image embeddings (stateless,
    REPO/<name>_vision/1/model.onnx     dynamic batching); see the README for the image + text flow

The decode model's configuration (what Triton's sequence batcher with implicit state requires):

* ``max_batch_size`` > 0, so every ``dims`` omits the batch; ``input_ids`` is a rank-1 ``[batch]`` graph input,
  declared ``dims: [1]`` with ``reshape { shape: [] }``; ``logits`` ``[V]``; for a VisualRWKV export also
  ``inputs_embeds`` ``[C]`` (a request with ``input_ids`` -1 enters that embedding row: image embeddings from the
  ``<name>_vision`` model go in one row per request, exact for the unidirectional scan of v7.00);
* ``sequence_batching``: control inputs ``START`` / ``END`` / ``READY`` (``int32_false_true: [0, 1]``) and
  ``CORRID`` (``TYPE_UINT64``; left out for TensorRT, which has no uint64 tensors), one ``state`` entry per
  state tensor mapping ``past_key_values.{i}.{field}`` to ``present.{i}.{field}`` (float32, static dims, a zero
  ``initial_state``), the ``oldest`` strategy with ``max_candidate_sequences``, ``preferred_batch_size`` and a
  queue delay, and ``max_sequence_idle_microseconds`` (a sequence idle that long is dropped with its state);
* ``instance_group``: ``count`` instances of ``kind`` (``KIND_CPU``, ``KIND_GPU`` or ``KIND_AUTO``);
* backend ``onnxruntime`` (default), or ``tensorrt`` when an engine is given (or ``DIR/serving_decode.plan``
  exists with ``backend="auto"``).

:func:`check_repository` parses every ``config.pbtxt`` with Triton's own schema (``model_config_pb2`` from the
``tritonclient`` package) and checks it against the graph it points to.  The repository directory appears whole
or not at all (built beside ``out`` and renamed into place).
"""
from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from vrwkv_edge.export.artefact import _publish
from vrwkv_edge.export.serving import CONTROLS, control_names, write_serving_decode
from vrwkv_edge.fileio import PathLike, atomic_write
from vrwkv_edge.runtime.artefact import (METADATA_FILE, ArtefactError, config_from_metadata, read_metadata,
                                         state_input_names, state_output_names, state_shapes)

BACKENDS = ("auto", "onnxruntime", "tensorrt")
INSTANCE_KINDS = {"cpu": "KIND_CPU", "gpu": "KIND_GPU", "auto": "KIND_AUTO"}
ENGINE_FILE = "serving_decode.plan"             # an engine placed in the export directory (backend "auto")
# Triton data types <-> ONNX element types
TRITON_TO_ONNX = {"TYPE_FP32": 1, "TYPE_INT32": 6, "TYPE_INT64": 7, "TYPE_BOOL": 9, "TYPE_FP16": 10,
                  "TYPE_UINT64": 13}
ONNX_TO_TRITON = {v: k for k, v in TRITON_TO_ONNX.items()}


class RepositoryError(ValueError):
    """A model repository (or its configuration) Triton would refuse; the message names the file at fault."""


@dataclass(frozen=True)
class ServingOptions:
    """How the decode model is served; every field becomes a configuration entry (module docstring)."""
    max_batch_size: int = 32
    preferred_batch_size: tuple[int, ...] = (8, 16, 32)
    max_candidate_sequences: int = 64
    max_queue_delay_us: int = 1000
    max_sequence_idle_us: int = 60_000_000
    instances: int = 1
    kind: str = "auto"
    vision_max_batch_size: int = 4

    def __post_init__(self):
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1 (Triton's sequence batcher batches along dimension 0), "
                             f"got {self.max_batch_size}")
        bad = [b for b in self.preferred_batch_size if not 1 <= b <= self.max_batch_size]
        if bad or not self.preferred_batch_size:
            raise ValueError(f"preferred_batch_size {list(self.preferred_batch_size)}: each must be in "
                             f"[1, max_batch_size = {self.max_batch_size}]")
        if self.max_candidate_sequences < self.max_batch_size:
            raise ValueError(f"max_candidate_sequences ({self.max_candidate_sequences}) must be >= max_batch_size "
                             f"({self.max_batch_size}), or batches can never fill")
        for name in ("max_queue_delay_us", "max_sequence_idle_us"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.instances < 1:
            raise ValueError(f"instances must be >= 1, got {self.instances}")
        if self.kind not in INSTANCE_KINDS:
            raise ValueError(f"kind {self.kind!r}: choose one of {sorted(INSTANCE_KINDS)}")
        if self.vision_max_batch_size < 1:
            raise ValueError(f"vision_max_batch_size must be >= 1, got {self.vision_max_batch_size}")


# ---- the text format ----------------------------------------------------------------------------------
class Enum(str):
    """A protobuf enum value (written unquoted)."""


def render_pbtxt(msg: dict, indent: int = 0) -> str:
    """A nested dict as protobuf text format: lists of scalars as ``[a, b]``, lists of dicts as repeated
    messages, :class:`Enum` values unquoted."""
    pad = "  " * indent
    lines = []

    def scalar(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, Enum):
            return str(v)
        if isinstance(v, str):
            return json.dumps(v)
        return repr(v)

    for key, value in msg.items():
        if isinstance(value, dict):
            lines += [f"{pad}{key} {{", render_pbtxt(value, indent + 1), f"{pad}}}"]
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for v in value:
                lines += [f"{pad}{key} {{", render_pbtxt(v, indent + 1), f"{pad}}}"]
        elif isinstance(value, list):
            lines.append(f"{pad}{key}: [{', '.join(scalar(v) for v in value)}]")
        else:
            lines.append(f"{pad}{key}: {scalar(value)}")
    return "\n".join(line for line in lines if line)


# ---- configurations -----------------------------------------------------------------------------------
def _dims(shape: list) -> list[int]:
    """A metadata shape without its leading ``"batch"`` (Triton's ``dims`` with max_batch_size > 0)."""
    if not shape or shape[0] != "batch" or not all(isinstance(d, int) for d in shape[1:]):
        raise ArtefactError(f"shape {shape}: Triton's batching needs a leading 'batch' and static other dims")
    return list(shape[1:])


def decode_config(name: str, meta: dict, options: ServingOptions, platform: str, corrid: bool,
                  embeds: bool = False) -> dict:
    """The decode model's ``config.pbtxt`` as a dict (:func:`render_pbtxt` writes it)."""
    cfg = config_from_metadata(meta)
    shapes = state_shapes(cfg)
    states = []
    for n_in, n_out in zip(state_input_names(cfg.n_layer), state_output_names(cfg.n_layer)):
        dims = _dims(shapes[n_in.rsplit(".", 1)[1]])
        states.append({"input_name": n_in, "output_name": n_out, "data_type": Enum("TYPE_FP32"), "dims": dims,
                       "initial_state": {"name": "zeros", "data_type": Enum("TYPE_FP32"), "dims": dims,
                                         "zero_data": True}})
    controls = []
    for cname, dtype, kind in CONTROLS:
        if cname not in control_names(corrid):
            continue
        control = ({"kind": Enum(kind), "data_type": Enum("TYPE_UINT64")} if dtype == "UINT64"
                   else {"kind": Enum(kind), "int32_false_true": [0, 1]})
        controls.append({"name": cname, "control": [control]})
    return {
        "name": name,
        "platform": platform,
        "max_batch_size": options.max_batch_size,
        "input": [{"name": "input_ids", "data_type": Enum("TYPE_INT64"), "dims": [1], "reshape": {"shape": []}}]
        + ([{"name": "inputs_embeds", "data_type": Enum("TYPE_FP32"), "dims": [cfg.n_embd]}] if embeds else []),
        "output": [{"name": "logits", "data_type": Enum("TYPE_FP32"), "dims": [cfg.vocab_size]}],
        "sequence_batching": {
            "max_sequence_idle_microseconds": options.max_sequence_idle_us,
            "oldest": {"max_candidate_sequences": options.max_candidate_sequences,
                       "preferred_batch_size": list(options.preferred_batch_size),
                       "max_queue_delay_microseconds": options.max_queue_delay_us},
            "control_input": controls,
            "state": states,
        },
        "instance_group": [{"count": options.instances, "kind": Enum(INSTANCE_KINDS[options.kind])}],
    }


def vision_config(name: str, meta: dict, options: ServingOptions) -> dict:
    """The VisualRWKV tower's configuration: stateless, dynamic batching, pixels -> ``image_embeds``."""
    io = meta["graphs"]["vision"]
    return {
        "name": name,
        "platform": "onnxruntime_onnx",
        "max_batch_size": options.vision_max_batch_size,
        "input": [{"name": i["name"], "data_type": Enum("TYPE_FP32"), "dims": _dims(i["shape"])} for i in io["inputs"]],
        "output": [{"name": o["name"], "data_type": Enum("TYPE_FP32"), "dims": _dims(o["shape"])}
                   for o in io["outputs"]],
        "dynamic_batching": {"max_queue_delay_microseconds": options.max_queue_delay_us},
        "instance_group": [{"count": options.instances, "kind": Enum(INSTANCE_KINDS[options.kind])}],
    }


# ---- the repository -----------------------------------------------------------------------------------
def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def _pick_backend(export_dir: Path, backend: str, engine: Optional[PathLike]) -> tuple[str, Optional[Path]]:
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r}: choose one of {BACKENDS}")
    if engine is None and backend in ("auto", "tensorrt") and (export_dir / ENGINE_FILE).is_file():
        engine = export_dir / ENGINE_FILE
    if backend == "auto":
        backend = "tensorrt" if engine is not None else "onnxruntime"
    if backend == "tensorrt":
        if engine is None:
            raise ValueError(f"backend 'tensorrt' needs an engine (--engine PLAN, or {export_dir / ENGINE_FILE}) "
                             f"built from the serving graph without CORRID (export-triton --no-corrid)")
        engine = Path(engine)
        if not engine.is_file():
            raise FileNotFoundError(f"--engine {engine}: no such file")
        return backend, engine
    if engine is not None:
        raise ValueError("an engine was given, but backend is 'onnxruntime'; use --backend tensorrt or auto")
    return backend, None


def write_triton_repository(export_dir: PathLike, out: PathLike, *, name: Optional[str] = None,
                            options: Optional[ServingOptions] = None, backend: str = "auto",
                            engine: Optional[PathLike] = None, corrid: Optional[bool] = None,
                            embeds: Optional[bool] = None, overwrite: bool = False) -> Path:
    """Writes the model repository ``out`` for the export ``export_dir`` (module docstring); returns ``out``.

    ``name``: the decode model's name (default: the export directory's name).  ``corrid``: declare the
    ``CORRID`` control (default: yes for ONNX Runtime, no for TensorRT, which cannot take uint64 inputs).
    ``embeds``: the ``inputs_embeds`` entry (default: for a VisualRWKV export, whose images enter so)."""
    export_dir = Path(export_dir)
    meta = read_metadata(export_dir)
    options = options or ServingOptions()
    backend, engine = _pick_backend(export_dir, backend, engine)
    if corrid is None:
        corrid = backend == "onnxruntime"
    if corrid and backend == "tensorrt":
        raise ValueError("CORRID is a uint64 control, which TensorRT engines cannot take: leave corrid off")
    if embeds is None:
        embeds = "visual" in meta
    name = name or export_dir.name
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"model name {name!r}: must be a plain directory name")
    out = Path(out).absolute()
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        model_dir = tmp / name
        version = model_dir / "1"
        version.mkdir(parents=True)
        if backend == "tensorrt":
            _copy(engine, version / "model.plan")
            platform = "tensorrt_plan"
        else:
            write_serving_decode(export_dir, version / "model.onnx", corrid=corrid, embeds=embeds)
            platform = "onnxruntime_onnx"
        _write_config(model_dir, decode_config(name, meta, options, platform, corrid, embeds))
        _copy(export_dir / METADATA_FILE, model_dir / METADATA_FILE)
        if meta["tokenizer"]["file"] is not None:                  # a World vocabulary (none for byte-level)
            _copy(export_dir / meta["tokenizer"]["file"], model_dir / meta["tokenizer"]["file"])
        if "vision" in meta["graphs"]:
            vdir = tmp / f"{name}_vision"
            vfile = meta["graphs"]["vision"]["file"]
            _copy(export_dir / vfile, vdir / "1" / "model.onnx")
            if (export_dir / f"{vfile}.data").is_file():        # external weights keep their file name
                _copy(export_dir / f"{vfile}.data", vdir / "1" / f"{vfile}.data")
            _write_config(vdir, vision_config(f"{name}_vision", meta, options))
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write_config(model_dir: Path, config: dict) -> None:
    with atomic_write(model_dir / "config.pbtxt", suffix=".pbtxt") as tmp:
        Path(tmp).write_text(render_pbtxt(config) + "\n", encoding="utf-8")


# ---- checking a repository without a server -----------------------------------------------------------
def parse_config(path: PathLike):
    """``config.pbtxt`` parsed with Triton's schema (``tritonclient``'s ``model_config_pb2``); an unknown field or
    enum value raises :class:`RepositoryError` naming the file."""
    try:  # optional dependency: tritonclient ships Triton's configuration schema
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError as e:
        raise ImportError(f"checking a Triton configuration needs tritonclient (pip install 'tritonclient[grpc]'): "
                          f"{e}") from e
    path = Path(path)
    try:
        return text_format.Parse(path.read_text(encoding="utf-8"), model_config_pb2.ModelConfig())
    except text_format.ParseError as e:
        raise RepositoryError(f"{path}: not a valid Triton model configuration: {e}") from e


def _graph_io(model_file: Path) -> tuple[dict, dict]:
    """name -> (ONNX element type, dims with None for a symbolic one) for a graph's inputs and outputs."""
    import onnx

    g = onnx.load(str(model_file), load_external_data=False).graph

    def spec(values):
        return {v.name: (v.type.tensor_type.elem_type,
                         [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim])
                for v in values}
    return spec(g.input), spec(g.output)


def check_model(model_dir: PathLike) -> None:
    """One model of a repository against Triton's rules: the configuration parses, its name is the directory's,
    a version directory holds the model file, and (ONNX) the graph's inputs are exactly the configured inputs +
    controls + states, with the configured dtypes and ``[batch] + dims`` shapes, states static apart from batch."""
    model_dir = Path(model_dir)
    cfg_path = model_dir / "config.pbtxt"
    if not cfg_path.is_file():
        raise RepositoryError(f"{model_dir}: config.pbtxt is missing")
    c = parse_config(cfg_path)
    if c.name != model_dir.name:
        raise RepositoryError(f"{cfg_path}: name {c.name!r} differs from its directory {model_dir.name!r}")
    versions = sorted(p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
    if not versions:
        raise RepositoryError(f"{model_dir}: no numeric version directory (<model>/1/model.onnx)")
    file = {"onnxruntime_onnx": "model.onnx", "tensorrt_plan": "model.plan"}.get(c.platform)
    if file is None:
        raise RepositoryError(f"{cfg_path}: platform {c.platform!r} is not one this package writes")
    for v in versions:
        if not (v / file).is_file():
            raise RepositoryError(f"{v}: {file} is missing")
    if file != "model.onnx":
        return                                          # an engine is opaque here; TensorRT checks it on load
    from tritonclient.grpc import model_config_pb2 as mc  # optional dependency (parse_config imported it)

    ins, outs = _graph_io(versions[-1] / file)
    where = f"{cfg_path} vs {versions[-1] / file}"

    def expect(table: dict, side: str, name: str, dtype: str, dims: list) -> None:
        if name not in table:
            raise RepositoryError(f"{where}: {side} {name} is not a graph {side}")
        etype, shape = table[name]
        if etype != TRITON_TO_ONNX[dtype]:
            raise RepositoryError(f"{where}: {side} {name} has ONNX element type {etype}, the configuration "
                                  f"says {dtype}")
        if c.max_batch_size > 0:
            if not shape or shape[0] is not None:
                raise RepositoryError(f"{where}: {side} {name} has shape {shape}; with max_batch_size > 0 its "
                                      f"first dimension must be the dynamic batch")
            shape = shape[1:]
        if shape != list(dims):
            raise RepositoryError(f"{where}: {side} {name} has dims {shape} (batch removed), the configuration "
                                  f"says {list(dims)}")

    declared = set()
    for i in c.input:
        dims = list(i.reshape.shape) if i.HasField("reshape") else list(i.dims)
        expect(ins, "input", i.name, mc.DataType.Name(i.data_type), dims)
        declared.add(i.name)
    for o in c.output:
        expect(outs, "output", o.name, mc.DataType.Name(o.data_type), list(o.dims))
    if c.HasField("sequence_batching"):
        sb = c.sequence_batching
        for ci in sb.control_input:
            for ctl in ci.control:
                if ctl.int32_false_true:
                    dtype = "TYPE_INT32"
                elif ctl.fp32_false_true:
                    dtype = "TYPE_FP32"
                elif ctl.bool_false_true:
                    dtype = "TYPE_BOOL"
                else:
                    dtype = mc.DataType.Name(ctl.data_type)
                expect(ins, "control input", ci.name, dtype, [1])
            declared.add(ci.name)
        for s in sb.state:
            dtype = mc.DataType.Name(s.data_type)
            if any(d < 1 for d in s.dims):
                raise RepositoryError(f"{cfg_path}: state {s.input_name} has dims {list(s.dims)}; implicit state "
                                      f"needs them fully static")
            expect(ins, "state input", s.input_name, dtype, list(s.dims))
            expect(outs, "state output", s.output_name, dtype, list(s.dims))
            if len(s.initial_state) > 1:
                raise RepositoryError(f"{cfg_path}: state {s.input_name} has {len(s.initial_state)} initial states; "
                                      f"Triton takes at most one")
            for init in s.initial_state:
                if list(init.dims) != list(s.dims) or init.data_type != s.data_type or not init.name:
                    raise RepositoryError(f"{cfg_path}: initial_state of {s.input_name} must be named and have the "
                                          f"state's dims and dtype")
            declared.add(s.input_name)
    extra = sorted(set(ins) - declared)
    if extra:
        raise RepositoryError(f"{where}: graph inputs {extra[:4]} are neither inputs, controls nor states of the "
                              f"configuration (Triton would not feed them)")


def check_repository(repo: PathLike) -> list[str]:
    """Every model of a repository (:func:`check_model`); returns their names."""
    repo = Path(repo)
    if not repo.is_dir():
        raise RepositoryError(f"{repo}: no such repository directory")
    models = sorted(p for p in repo.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not models:
        raise RepositoryError(f"{repo}: holds no model directory")
    for m in models:
        check_model(m)
    return [m.name for m in models]


def describe(repo: PathLike, names: Sequence[str]) -> str:
    """A short text for the command line: what was written and how to serve it."""
    repo = Path(repo)
    lines = [f"wrote the Triton model repository {repo}:"]
    for n in names:
        c = (repo / n / "config.pbtxt").read_text(encoding="utf-8")
        kind = "sequence batcher, implicit state" if "sequence_batching" in c else "stateless"
        lines.append(f"  {n}: {kind}")
    lines.append(f"serve it with: docker run --rm -p8000:8000 -p8001:8001 -v {repo}:/models "
                 f"nvcr.io/nvidia/tritonserver:24.08-py3 tritonserver --model-repository=/models "
                 f"(add --gpus all for GPU instances)")
    return "\n".join(lines)
