"""The deployable artefact: a directory with the ONNX graphs, ``metadata.json`` and the tokenizer vocabulary.

Layout of ``DIR`` (written by :func:`export_model`)::

    DIR/decode.onnx            one token from a state (static shapes apart from ``batch``)
    DIR/prefill.onnx           a block of ``seq`` tokens from a state, last-token logits (exact chunked WKV)
    DIR/decode_embeds.onnx     the same two taking ``inputs_embeds`` instead of token ids (``embeds=True``;
    DIR/prefill_embeds.onnx    the entry point for image features and other precomputed embeddings)
    DIR/vision.onnx            VisualRWKV only: pixels -> projected image embeddings (see :mod:`.visual`)
    DIR/image_prefill.onnx     VisualRWKV only: one image's embeddings through the LM with the image scan
    DIR/metadata.json          everything a runtime needs to drive the graphs (below)
    DIR/rwkv_vocab_v20230424.txt   the tokenizer vocabulary named in the metadata
    DIR/<graph>.onnx.data      external weights, only for a graph over ~1.8 GiB of initializers

``metadata.json`` (``format`` = ``vrwkv_edge.onnx``, ``format_version`` 1) holds the model version and sizes,
the state layout with the graph I/O names, the graphs with their inputs/outputs (dtype and shape, symbolic
dims as strings), the tokenizer file name, the prompt template name, the prefill scan mode and chunk size,
the export dtype/quantization, opset and the exporter version, and for a VisualRWKV a ``visual`` section (the
visual configuration, tokens per image, patch grid, scan mode, prompt version, and per pixel input the resize
mode, size, mean and std); ``files`` adds each file's size and SHA-256.
Everything but ``files`` is also stored in every graph's ``metadata_props`` (key ``vrwkv_edge.metadata``), so
a runtime can detect a ``metadata.json`` that was edited or belongs to another export.

The directory appears whole or not at all: it is built in a hidden temporary directory beside ``DIR`` and
renamed into place at the end; on any error the temporary directory is removed.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

import vrwkv_edge
from vrwkv_edge.config import RWKVConfig
from vrwkv_edge.models.base import RWKVModel
from vrwkv_edge.state import STATE_FIELDS

from .graphs import (DEFAULT_CHUNK, DEFAULT_OPSET, GRAPH_KINDS, SUPPORTED_OPSETS, VISUAL_GRAPH_KINDS, ImageScan,
                     assemble_graph, export_graph_traced, graph_io, prepare_model, state_input_names,
                     state_output_names, state_shapes)

PathLike = Union[str, os.PathLike]

FORMAT = "vrwkv_edge.onnx"
FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"
METADATA_PROP = "vrwkv_edge.metadata"
DEFAULT_TOKENIZER = Path(vrwkv_edge.__file__).parent / "data" / "rwkv_vocab_v20230424.txt"
DEFAULT_PROMPT_TEMPLATE = "rwkv-world-chat"          # "User: {prompt}\n\nAssistant:"
SCAN_MODE = "chunked-scan"
SCAN_MODE_DOC = ("prefill: exact chunked WKV (chunk_size tokens per chunk; the sequence is zero-padded to a "
                 "multiple of chunk_size inside the graph) with one ONNX Scan per layer over the chunks, so any "
                 "seq >= 1 runs in one call; decode: the per-token step, no loop")
# Above this many bytes of initializers a graph is saved with external data (protobuf's hard limit is 2 GiB).
EXTERNAL_DATA_THRESHOLD = int(1.8 * 2 ** 30)
QUANTIZE_MODES = (None, "int8")


class ArtefactError(ValueError):
    """An exported directory that cannot be used; the message names the file, key or tensor at fault."""


# ---- metadata ---------------------------------------------------------------------------------------------
def build_metadata(cfg: RWKVConfig, *, dtype: str, quantize: Optional[str], opset: int, chunk_size: int,
                   graphs: Sequence[str], tokenizer: str, prompt_template: str,
                   source: str, parameters: int, visual: Optional[dict] = None) -> dict:
    graph_entries = {}
    for kind in graphs:
        io = graph_io(kind, cfg, visual)
        graph_entries[kind] = {"file": f"{kind}.onnx", "inputs": io["inputs"], "outputs": io["outputs"]}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "exporter": "vrwkv_edge",
        "exporter_version": vrwkv_edge.__version__,
        "torch_version": torch.__version__.split("+")[0],
        "opset": opset,
        "model": {"kind": "visual_rwkv" if visual else "language_model", "version": cfg.version, "n_layer": cfg.n_layer, "n_embd": cfg.n_embd,
                  "n_head": cfg.n_head, "head_size": cfg.head_size, "vocab_size": cfg.vocab_size,
                  "dim_ffn": cfg.dim_ffn, "lora": dict(cfg.lora), "parameters": parameters, "source": source},
        "dtype": dtype,
        "quantize": quantize,
        "quantization": (None if quantize is None else
                         {"method": "onnxruntime.quantization.quantize_dynamic", "weight_type": "QInt8",
                          "op_types": ["MatMul"], "const_weights_only": True, "per_channel": False,
                          "weights": "linear layers and head (*.weight); LoRA matrices, embedding, norms fp32",
                          "activations": "dynamic uint8 per tensor (MatMulInteger)"}),
        "precision": {"weights": "int8" if quantize else dtype, "state": "float32", "wkv": "float32",
                      "decay": "float32", "norms": "float32", "logits": "float32",
                      "residual": "float32", "matmuls": "float16" if dtype == "fp16" else "float32"},
        "batch": "dynamic",
        "scan_mode": SCAN_MODE,
        "scan_mode_doc": SCAN_MODE_DOC,
        "chunk_size": chunk_size,
        "state": {
            "fields": list(STATE_FIELDS),
            "dtype": "float32",
            "shapes": state_shapes(cfg),
            "wkv_layout": "key-major: wkv[batch, head, key, value]",
            "order": "layer by layer, (shift_att, wkv, shift_ffn) within a layer (State.flat)",
            "inputs": state_input_names(cfg.n_layer),
            "outputs": state_output_names(cfg.n_layer),
        },
        "graphs": graph_entries,
        "tokenizer": tokenizer,
        "prompt_template": prompt_template,
        **({"visual": visual} if visual else {}),
    }


def config_from_metadata(meta: dict) -> RWKVConfig:
    m = meta["model"]
    return RWKVConfig(m["version"], m["n_layer"], m["n_embd"], m["head_size"], m["vocab_size"], m["dim_ffn"],
                      dict(m["lora"]))


def _require(meta: dict, path: str, types, where: str):
    cur = meta
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise ArtefactError(f"{where}: key {path!r} is missing")
        cur = cur[part]
    if types is not None and (not isinstance(cur, types) or (isinstance(cur, bool) and bool not in (
            types if isinstance(types, tuple) else (types,)))):
        raise ArtefactError(f"{where}: key {path!r} has {type(cur).__name__} {cur!r}, expected "
                            f"{getattr(types, '__name__', types)}")
    return cur


def check_metadata(meta: object, where: str = METADATA_FILE) -> dict:
    """Validates the structure and internal consistency of a metadata dict; raises :class:`ArtefactError`."""
    if not isinstance(meta, dict):
        raise ArtefactError(f"{where}: expected a JSON object, got {type(meta).__name__}")
    fmt = _require(meta, "format", str, where)
    if fmt != FORMAT:
        raise ArtefactError(f"{where}: format {fmt!r} is not {FORMAT!r} (not a vrwkv_edge ONNX export)")
    ver = _require(meta, "format_version", int, where)
    if ver > FORMAT_VERSION:
        raise ArtefactError(f"{where}: format_version {ver} is newer than this vrwkv_edge understands "
                            f"({FORMAT_VERSION}); upgrade vrwkv_edge")
    for key in ("n_layer", "n_embd", "n_head", "head_size", "vocab_size", "dim_ffn", "parameters"):
        val = _require(meta, f"model.{key}", int, where)
        if val <= 0:
            raise ArtefactError(f"{where}: model.{key} must be positive, got {val}")
    _require(meta, "model.version", str, where)
    _require(meta, "model.lora", dict, where)
    for key, types in (("dtype", str), ("opset", int), ("chunk_size", int), ("scan_mode", str),
                       ("tokenizer", str), ("prompt_template", str), ("exporter_version", str),
                       ("graphs", dict), ("state", dict)):
        _require(meta, key, types, where)
    if meta["dtype"] not in ("fp32", "fp16"):
        raise ArtefactError(f"{where}: dtype {meta['dtype']!r} is not fp32 or fp16")
    if meta.get("quantize") not in QUANTIZE_MODES:
        raise ArtefactError(f"{where}: quantize {meta.get('quantize')!r} is not one of {QUANTIZE_MODES}")
    if meta["scan_mode"] != SCAN_MODE:
        raise ArtefactError(f"{where}: scan_mode {meta['scan_mode']!r} is not supported (expected {SCAN_MODE!r})")
    if meta["opset"] not in SUPPORTED_OPSETS:
        raise ArtefactError(f"{where}: opset {meta['opset']} is not one of {SUPPORTED_OPSETS}")
    if meta.get("batch", "dynamic") not in ("dynamic", 1):
        raise ArtefactError(f"{where}: batch {meta.get('batch')!r} must be 'dynamic' or 1")
    try:
        cfg = config_from_metadata(meta)
    except (TypeError, ValueError) as e:
        raise ArtefactError(f"{where}: model sizes are inconsistent: {e}") from e
    if cfg.n_head != meta["model"]["n_head"]:
        raise ArtefactError(f"{where}: model.n_head {meta['model']['n_head']} != n_embd / head_size = {cfg.n_head}")
    st = meta["state"]
    if st.get("dtype") != "float32":
        raise ArtefactError(f"{where}: state.dtype {st.get('dtype')!r}: the state is always float32")
    if st.get("shapes") != state_shapes(cfg):
        raise ArtefactError(f"{where}: state.shapes {st.get('shapes')} do not match the model sizes "
                            f"(expected {state_shapes(cfg)})")
    if st.get("inputs") != state_input_names(cfg.n_layer) or st.get("outputs") != state_output_names(cfg.n_layer):
        raise ArtefactError(f"{where}: state.inputs/state.outputs are not the io names of {cfg.n_layer} layers")
    graphs = meta["graphs"]
    for kind in ("decode", "prefill"):
        if kind not in graphs:
            raise ArtefactError(f"{where}: graphs.{kind} is missing (every export has decode and prefill)")
    visual = meta.get("visual")
    if visual is not None or any(k in graphs for k in VISUAL_GRAPH_KINDS):
        _check_visual(meta, where)
    for kind, entry in graphs.items():
        if kind not in GRAPH_KINDS:
            raise ArtefactError(f"{where}: unknown graph {kind!r} (known: {GRAPH_KINDS})")
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            raise ArtefactError(f"{where}: graphs.{kind}.file is missing")
        if Path(entry["file"]).name != entry["file"] or not entry["file"]:
            raise ArtefactError(f"{where}: graphs.{kind}.file {entry['file']!r} must be a plain file name")
        io = graph_io(kind, cfg, visual)
        for side in ("inputs", "outputs"):
            if entry.get(side) != io[side]:
                raise ArtefactError(f"{where}: graphs.{kind}.{side} do not match the model sizes in metadata")
    return meta


def _check_visual(meta: dict, where: str) -> None:
    """The ``visual`` section of a VisualRWKV export: present with both visual graphs, and self-consistent."""
    from vrwkv_edge.visual.model import VisualConfig
    from vrwkv_edge.visual.scan import SCAN_MODES

    for kind in VISUAL_GRAPH_KINDS:
        if kind not in meta["graphs"]:
            raise ArtefactError(f"{where}: graphs.{kind} is missing (a VisualRWKV export has vision and "
                                f"image_prefill)")
    v = _require(meta, "visual", dict, where)
    n = _require(meta, "visual.tokens_per_image", int, where)
    lay = _require(meta, "visual.layout", dict, where)
    for key in ("num_patches", "grid_h", "grid_w", "num_extra"):
        if not isinstance(lay.get(key), int) or lay[key] < 0:
            raise ArtefactError(f"{where}: visual.layout.{key} must be a non-negative integer")
    if lay["grid_h"] * lay["grid_w"] != lay["num_patches"] or lay["num_patches"] + lay["num_extra"] != n:
        raise ArtefactError(f"{where}: visual.layout {lay} does not add up to tokens_per_image {n}")
    if v.get("scan") not in SCAN_MODES:
        raise ArtefactError(f"{where}: visual.scan {v.get('scan')!r} is not one of {SCAN_MODES}")
    pix = _require(meta, "visual.pixel_inputs", list, where)
    if not pix or not all(isinstance(p, dict) and isinstance(p.get("name"), str) and isinstance(p.get("size"), int)
                          and p.get("mode") in ("clip", "resize") and len(p.get("mean", [])) == 3
                          and len(p.get("std", [])) == 3 for p in pix):
        raise ArtefactError(f"{where}: visual.pixel_inputs must list name, mode, size, mean and std per input")
    try:
        VisualConfig(**_require(meta, "visual.config", dict, where))
    except (TypeError, ValueError) as e:
        raise ArtefactError(f"{where}: visual.config is not a valid VisualConfig: {e}") from e


def read_metadata(directory: PathLike) -> dict:
    """Reads and checks ``DIR/metadata.json`` and the presence and sizes of the files it lists."""
    d = Path(directory)
    if not d.exists():
        raise ArtefactError(f"{d}: no such directory (expected an export made by vrwkv-edge export)")
    if not d.is_dir():
        raise ArtefactError(f"{d}: not a directory (expected an export made by vrwkv-edge export)")
    mpath = d / METADATA_FILE
    if not mpath.is_file():
        raise ArtefactError(f"{d}: {METADATA_FILE} is missing: not a complete vrwkv_edge export")
    try:
        meta = json.loads(mpath.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ArtefactError(f"{mpath}: not UTF-8 text: {e}") from e
    except json.JSONDecodeError as e:
        raise ArtefactError(f"{mpath}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from e
    check_metadata(meta, str(mpath))
    files = meta.get("files")
    if not isinstance(files, dict):
        raise ArtefactError(f"{mpath}: key 'files' is missing")
    for kind, entry in meta["graphs"].items():
        if entry["file"] not in files:
            raise ArtefactError(f"{mpath}: graph file {entry['file']} is not listed under 'files'")
    for name, info in files.items():
        p = d / name
        if Path(name).name != name:
            raise ArtefactError(f"{mpath}: files.{name}: must be a plain file name")
        if not p.is_file():
            raise ArtefactError(f"{d}: {name} is missing (listed in {METADATA_FILE}); the export is incomplete")
        size = p.stat().st_size
        if not isinstance(info, dict) or size != info.get("bytes"):
            raise ArtefactError(f"{p}: {size} bytes, {METADATA_FILE} records "
                                f"{info.get('bytes') if isinstance(info, dict) else info} (truncated or replaced?)")
    return meta


def verify_hashes(directory: PathLike, meta: Optional[dict] = None) -> None:
    """Checks every file's SHA-256 against ``metadata.json`` (slow for big graphs; not done on every load)."""
    d = Path(directory)
    meta = meta or read_metadata(d)
    for name, info in meta["files"].items():
        got = _sha256(d / name)
        if got != info.get("sha256"):
            raise ArtefactError(f"{d / name}: SHA-256 {got} does not match {METADATA_FILE} ({info.get('sha256')})")


def embedded_metadata(meta: dict) -> dict:
    """The part of the metadata stored inside each graph (everything but the file table)."""
    return {k: v for k, v in meta.items() if k != "files"}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


# ---- writing graphs ---------------------------------------------------------------------------------------
def _save_graph(proto, inits: list, path: Path, meta_json: str, kind: str) -> list[str]:
    """Attaches the weights and the metadata to an assembled graph and saves it; the weights go to
    ``<file>.data`` (ONNX external data) when they exceed :data:`EXTERNAL_DATA_THRESHOLD`, written directly so
    that the protobuf never holds more than 2 GiB.  Returns the file names written."""
    import onnx
    from onnx import TensorProto

    del proto.metadata_props[:]
    for key, value in ((METADATA_PROP, meta_json), ("vrwkv_edge.graph", kind)):
        proto.metadata_props.add(key=key, value=value)
    written = [path.name]
    total = sum(len(t.raw_data) for t in inits) + sum(len(t.raw_data) for t in proto.graph.initializer)
    if total > EXTERNAL_DATA_THRESHOLD:
        data_name = path.name + ".data"
        with open(path.parent / data_name, "wb") as f:
            for t in list(proto.graph.initializer) + list(inits):
                if not t.raw_data or len(t.raw_data) < 1024:
                    continue
                f.seek((f.tell() + 4095) // 4096 * 4096)          # page-aligned, so runtimes can mmap
                offset = f.tell()
                f.write(t.raw_data)
                length = len(t.raw_data)
                t.ClearField("raw_data")
                t.data_location = TensorProto.EXTERNAL
                for k, v in (("location", data_name), ("offset", str(offset)), ("length", str(length))):
                    t.external_data.add(key=k, value=v)
        written.append(data_name)
    proto.graph.initializer.extend(inits)
    onnx.save_model(proto, str(path))
    return written


def _gemm_to_matmul(model) -> int:
    """Rewrites ``Gemm(A, W)`` nodes without bias (alpha = 1, transA = 0, W an initializer) as
    ``MatMul(A, W or W^T)``, the form ``quantize_dynamic`` quantizes (it has no dynamic Gemm).  Exact."""
    import numpy as np
    from onnx import helper, numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    uses: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    count = 0
    for idx, node in enumerate(list(model.graph.node)):
        if node.op_type != "Gemm" or len(node.input) > 2 and node.input[2]:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("alpha", 1.0) != 1.0 or attrs.get("transA", 0) or node.input[1] not in inits:
            continue
        w_name = node.input[1]
        if attrs.get("transB", 0):
            w = numpy_helper.to_array(inits[w_name])
            new_name = w_name + "_T" if uses.get(w_name, 0) > 1 else w_name
            new = numpy_helper.from_array(np.ascontiguousarray(w.T), new_name)
            if new_name == w_name:
                inits[w_name].CopyFrom(new)
            elif new_name not in inits:
                model.graph.initializer.append(new)
                inits[new_name] = new
            w_name = new_name
        mm = helper.make_node("MatMul", [node.input[0], w_name], list(node.output), name=node.name + "_matmul")
        model.graph.node.remove(node)
        model.graph.node.insert(idx, mm)
        count += 1
    return count


def _quantize_int8(src: Path, dst: Path, meta_json: str, kind: str) -> list[str]:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(src))
    _gemm_to_matmul(model)
    # Quantize the MatMuls of the linear layers and the head (initializers named *.weight); the small LoRA
    # matrices (decay, in-context rate, gate, value residual) stay fp32: they are a few percent of the bytes,
    # quantizing them would add a quantize/dequantize round per matmul, and the decay LoRA feeds exp().
    for i, n in enumerate(model.graph.node):
        if not n.name:
            n.name = f"{n.op_type}_{i}"
    weights = {t.name for t in model.graph.initializer}
    const_mm = [n for n in model.graph.node if n.op_type == "MatMul" and len(n.input) > 1 and n.input[1] in weights]
    targets = [n.name for n in const_mm if n.input[1].endswith(".weight")] or [n.name for n in const_mm]
    big = sum(len(t.raw_data) for t in model.graph.initializer) > EXTERNAL_DATA_THRESHOLD
    pre = src.with_name(src.stem + ".matmul.onnx")
    onnx.save_model(model, str(pre), save_as_external_data=big, all_tensors_to_one_file=True,
                    location=pre.name + ".data")
    del model
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)                 # quantize_dynamic logs a "consider pre-processing" warning
    try:
        quantize_dynamic(str(pre), str(dst), op_types_to_quantize=["MatMul"], nodes_to_quantize=targets,
                         per_channel=False, weight_type=QuantType.QInt8, use_external_data_format=big,
                         extra_options={"MatMulConstBOnly": True})
    finally:
        root.setLevel(level)
    q = onnx.load(str(dst))
    q.ir_version = min(q.ir_version, 10)
    del q.metadata_props[:]
    for key, value in ((METADATA_PROP, meta_json), ("vrwkv_edge.graph", kind)):
        q.metadata_props.add(key=key, value=value)
    data_name = dst.name + ".data"
    for f in dst.parent.glob(dst.name + "*.data"):
        f.unlink()
    onnx.save_model(q, str(dst), save_as_external_data=big, all_tensors_to_one_file=True, location=data_name)
    return [dst.name] + ([data_name] if big else [])


def _check_onnx(path: Path) -> None:
    import onnx

    onnx.checker.check_model(str(path), full_check=False)


# ---- the public entry point -------------------------------------------------------------------------------
def _resolve_model(model_or_ckpt) -> tuple:
    from vrwkv_edge.visual.model import VisualRWKV

    if isinstance(model_or_ckpt, (RWKVModel, VisualRWKV)):
        return model_or_ckpt, getattr(model_or_ckpt, "source", "in-memory model")
    if isinstance(model_or_ckpt, (str, os.PathLike)):
        from vrwkv_edge.checkpoint import load_model

        return load_model(model_or_ckpt), Path(model_or_ckpt).name
    raise TypeError(f"export_model: expected an RWKV model or a checkpoint path, got {type(model_or_ckpt).__name__}")


def export_model(model_or_ckpt, out_dir: PathLike, dtype: str = "fp32", quantize: Optional[str] = None, *,
                 embeds: bool = True, opset: int = DEFAULT_OPSET, chunk_size: int = DEFAULT_CHUNK,
                 tokenizer: Optional[PathLike] = None, prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
                 overwrite: bool = False, progress: bool = True, method: str = "blocks") -> Path:
    """Exports an RWKV-6/7 language model or a VisualRWKV (a model object or a checkpoint path) to the
    directory ``out_dir``.  A VisualRWKV adds the ``vision`` and ``image_prefill`` graphs (see :mod:`.visual`).

    dtype: ``"fp32"`` or ``"fp16"`` (fp16 weights and matmuls; state, decay, norms, WKV in fp32).
    quantize: ``None`` or ``"int8"`` (dynamic int8 MatMul weights for the CPU; needs ``dtype="fp32"``).
    embeds: also write ``decode_embeds.onnx`` / ``prefill_embeds.onnx`` (inputs_embeds entry points).
    overwrite: replace an existing ``out_dir`` (the old one is only removed once the new one is complete).
    method: ``"blocks"`` (default): each layer kind is traced once with its weights as inputs and the graph is
    assembled from those templates (export time independent of depth); ``"trace"``: the whole graph module
    is traced in one go (same graph semantics, slow for deep models; a cross-check).
    Returns the directory path.  See the module docstring for the layout and the metadata.
    """
    from tqdm.auto import tqdm

    if dtype not in ("fp32", "fp16"):
        raise ValueError(f"dtype must be 'fp32' or 'fp16', got {dtype!r}")
    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be None or 'int8', got {quantize!r}")
    if quantize == "int8" and dtype != "fp32":
        raise ValueError("quantize='int8' quantizes an fp32 graph: use dtype='fp32' with it")
    if opset not in SUPPORTED_OPSETS:
        raise ValueError(f"opset {opset} not supported; choose one of {SUPPORTED_OPSETS}")
    if method not in ("blocks", "trace"):
        raise ValueError(f"method must be 'blocks' or 'trace', got {method!r}")
    if not 1 <= chunk_size <= 32:
        raise ValueError(f"chunk_size must be in [1, 32] (exactness bound of the RWKV-7 chunked form), "
                         f"got {chunk_size}")
    out = Path(out_dir).absolute()
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    tok_src = Path(tokenizer) if tokenizer is not None else DEFAULT_TOKENIZER
    if not tok_src.is_file():
        raise FileNotFoundError(f"tokenizer vocabulary not found: {tok_src}")

    model, source = _resolve_model(model_or_ckpt)
    cfg = model.cfg
    visual_model = model if hasattr(model, "vcfg") else None
    visual = None
    graphs = ["decode", "prefill"] + (["decode_embeds", "prefill_embeds"] if embeds else [])
    if visual_model is not None:
        from .visual import visual_metadata
        visual = visual_metadata(visual_model)
        graphs += list(VISUAL_GRAPH_KINDS)
        if method == "trace":
            raise ValueError("method='trace' exports language models only; VisualRWKV uses the block assembly")
    meta = build_metadata(cfg, dtype=dtype, quantize=quantize, opset=opset, chunk_size=chunk_size, graphs=graphs,
                          tokenizer=tok_src.name, prompt_template=prompt_template,
                          source=str(source), parameters=model.num_parameters(), visual=visual)
    meta_json = json.dumps(embedded_metadata(meta), sort_keys=True)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    steps = len(graphs) * (2 if quantize else 1) + 2
    bar = tqdm(total=steps, desc=f"export {out.name}", unit="step", disable=not progress, leave=True)
    t0 = time.time()
    try:
        bar.set_postfix_str(f"prepare {dtype}")
        prepared = prepare_model(model.rwkv if visual_model is not None else model, dtype)
        files: list[str] = []
        for kind in graphs:
            bar.set_postfix_str(f"build {kind}")
            if kind == "vision":
                from .visual import export_vision_graph
                proto, inits = export_vision_graph(visual_model, opset, visual)
            elif kind == "image_prefill":
                proto, inits = assemble_graph(prepared, kind, chunk_size=chunk_size, opset=opset,
                                              scan=ImageScan.of(visual_model))
            elif method == "blocks":
                proto, inits = assemble_graph(prepared, kind, chunk_size=chunk_size, opset=opset)
            else:
                proto, inits = export_graph_traced(prepared, kind, opset=opset, chunk_size=chunk_size), []
            bar.update(1)
            path = tmp / f"{kind}.onnx"
            if quantize and kind != "vision":           # the tower stays fp32 (see .visual)
                bar.set_postfix_str(f"quantize {kind}")
                work = tmp / ".work"
                work.mkdir(exist_ok=True)
                _save_graph(proto, inits, work / path.name, meta_json, kind)
                del proto, inits
                files += _quantize_int8(work / path.name, path, meta_json, kind)
                shutil.rmtree(work)
                bar.update(1)
            else:
                files += _save_graph(proto, inits, path, meta_json, kind)
                del proto, inits
            _check_onnx(path)
        bar.set_postfix_str("tokenizer + metadata")
        shutil.copyfile(tok_src, tmp / tok_src.name)
        files.append(tok_src.name)
        meta = copy.deepcopy(meta)
        meta["files"] = {name: {"bytes": (tmp / name).stat().st_size, "sha256": _sha256(tmp / name)}
                         for name in sorted(files)}
        (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        bar.update(1)
        _publish(tmp, out)
        bar.update(1)
        bar.set_postfix_str(f"done in {time.time() - t0:.1f} s")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        bar.close()
    return out


def _publish(tmp: Path, out: Path) -> None:
    """Renames the finished ``tmp`` to ``out``; an existing ``out`` is moved aside first and removed after."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        if old is not None:
            os.rename(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
