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

``metadata.json`` (``format`` = ``vrwkv_edge.onnx``, ``format_version`` 2) holds the model version and sizes,
the state layout with the graph I/O names, the graphs with their inputs/outputs (dtype and shape, symbolic
dims as strings), the tokenizer file name, the prompt template name, the prefill scan mode and chunk size,
the export dtype/quantization (int8, or int4 with its block size), the WKV flavour (``wkv``: standard
operators or one ``vrwkv`` node per WKV, with the op version), opset and the exporter version, and for a
VisualRWKV a ``visual`` section (the visual configuration, tokens per image, patch grid, scan mode, prompt version, and per pixel input the resize
mode, size, mean and std); ``files`` adds each file's size and SHA-256.
Everything but ``files`` is also stored in every graph's ``metadata_props`` (key ``vrwkv_edge.metadata``), so
a runtime can detect a ``metadata.json`` that was edited or belongs to another export.

The directory appears whole or not at all: it is built in a hidden temporary directory beside ``DIR`` and
renamed into place at the end; on any error the temporary directory is removed.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

import vrwkv_edge
from vrwkv_edge.checkpoint import checkpoint_source
from vrwkv_edge.config import RWKVConfig
from vrwkv_edge.fileio import PathLike
from vrwkv_edge.loading import load_model
from vrwkv_edge.models.base import RWKVModel
from vrwkv_edge.ops.custom_op_contract import DEFAULT_WKV_FLAVOUR, WKV_FLAVOURS
from vrwkv_edge.ops.custom_ops import CUSTOM_WKV_IMPL
from vrwkv_edge.runtime.artefact import (DEFAULT_CHUNK, DEFAULT_OPSET, FORMAT, FORMAT_VERSION, METADATA_FILE,
                                         METADATA_PROP, QUANTIZE_MODES, SCAN_MODE, SCAN_MODE_DOC, SUPPORTED_OPSETS,
                                         VISUAL_GRAPH_KINDS, embedded_metadata, graph_io, sha256_file,
                                         state_input_names, state_output_names, state_shapes, wkv_metadata)
from vrwkv_edge.state import STATE_FIELDS
from vrwkv_edge.tokenizer import tokenizer_for_vocab
from vrwkv_edge.visualrwkv.model import VisualRWKV

from .custom_nodes import check_custom_graph, expected_custom_nodes
from .graphs import ImageScan, assemble_graph, prepare_model
from .opset import set_lowest_ir_version
from .visual import export_vision_graph, visual_metadata

# The prompt template a runtime should use, by tokenizer: the World chat format ("User: {prompt}\n\nAssistant:")
# for World-vocabulary models, plain text for byte-level ones (test and demo models, not chat-tuned).
PROMPT_TEMPLATES = {"world": "rwkv-world-chat", "bytes": "raw"}
# Above this many bytes of initializers a graph is saved with external data (protobuf's hard limit is 2 GiB).
EXTERNAL_DATA_THRESHOLD = int(1.8 * 2 ** 30)

# int4: ONNX Runtime's block-wise weight-only quantizer (MatMulNBits).  Block 32, asymmetric (a zero point per
# block), accuracy level 4 (int8 arithmetic inside MatMulNBits, the fastest decode: docs toolchain.md 10).
# Asymmetric measured better than symmetric on both trained tiny models (benchmarks/bench_int4.py, 1,024
# teacher-forced positions each): RWKV-6 1M 95.7% vs 93.75%, RWKV-7 834K 98.8% vs 98.7% top-1 agreement.
INT4_BITS = 4
INT4_BLOCK_SIZE = 32
INT4_SYMMETRIC = False
INT4_ACCURACY_LEVEL = 4
# What stays float32 in a quantized graph, and why: the LoRA matrices are a few percent of the bytes, the decay
# LoRA feeds exp(), and the state, norms and WKV are not matmuls with constant weights.
QUANTIZED_WEIGHTS = "linear layers and head (*.weight); LoRA matrices (decay included), embedding, norms fp32"


def quantization_metadata(quantize: Optional[str]) -> Optional[dict]:
    """The metadata's ``quantization`` record of a ``quantize`` mode (None: not quantized)."""
    if quantize is None:
        return None
    if quantize == "int8":
        return {"method": "onnxruntime.quantization.quantize_dynamic", "weight_type": "QInt8",
                "op_types": ["MatMul"], "const_weights_only": True, "per_channel": False,
                "weights": QUANTIZED_WEIGHTS, "activations": "dynamic uint8 per tensor (MatMulInteger)",
                "precision": "int8"}
    if quantize == "int4":
        return {"method": "onnxruntime.quantization.matmul_nbits_quantizer.MatMulNBitsQuantizer",
                "op_types": ["MatMul"], "node": "com.microsoft.MatMulNBits", "bits": INT4_BITS,
                "block_size": INT4_BLOCK_SIZE, "symmetric": INT4_SYMMETRIC, "accuracy_level": INT4_ACCURACY_LEVEL,
                "weights": QUANTIZED_WEIGHTS,
                "activations": "float32 in and out; int8 arithmetic inside MatMulNBits (accuracy_level 4)",
                "precision": "int4"}
    raise ValueError(f"quantize must be one of {QUANTIZE_MODES}, got {quantize!r}")


def build_metadata(cfg: RWKVConfig, *, dtype: str, quantize: Optional[str], opset: int, chunk_size: int,
                   graphs: Sequence[str], tokenizer: dict, prompt_template: str,
                   source: dict, parameters: int, visual: Optional[dict] = None,
                   wkv: str = DEFAULT_WKV_FLAVOUR) -> dict:
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
                  "dim_ffn": cfg.dim_ffn, "lora": dict(cfg.lora), "parameters": parameters,
                  "source": source.get("file") or "in-memory model", "source_sha256": source.get("sha256")},
        "dtype": dtype,
        "quantize": quantize,
        "quantization": quantization_metadata(quantize),
        "precision": {"weights": quantize or dtype, "state": "float32", "wkv": "float32",
                      "decay": "float32", "norms": "float32", "logits": "float32",
                      "residual": "float32", "matmuls": "float16" if dtype == "fp16" else "float32"},
        "batch": "dynamic",
        "wkv": wkv_metadata(wkv),
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


def _weight_matmuls(model) -> tuple[list[str], list[str]]:
    """Names every node and returns ``(quantized, kept)``: the MatMuls with a constant weight that are quantized
    (the linear layers and the head, initializers named ``*.weight``) and those that stay float32 (the small LoRA
    matrices: decay, in-context rate, gate, value residual; see :data:`QUANTIZED_WEIGHTS`)."""
    for i, n in enumerate(model.graph.node):
        if not n.name:
            n.name = f"{n.op_type}_{i}"
    weights = {t.name for t in model.graph.initializer}
    const_mm = [n for n in model.graph.node if n.op_type == "MatMul" and len(n.input) > 1 and n.input[1] in weights]
    targets = [n.name for n in const_mm if n.input[1].endswith(".weight")] or [n.name for n in const_mm]
    return targets, [n.name for n in const_mm if n.name not in set(targets)]


def _finish_quantized(q, dst: Path, meta_json: str, kind: str, big: bool) -> list[str]:
    """Writes a quantized graph with the lowest IR version its opsets allow and the export's metadata."""
    import onnx

    set_lowest_ir_version(q)
    del q.metadata_props[:]
    for key, value in ((METADATA_PROP, meta_json), ("vrwkv_edge.graph", kind)):
        q.metadata_props.add(key=key, value=value)
    data_name = dst.name + ".data"
    for f in dst.parent.glob(dst.name + "*.data"):
        f.unlink()
    onnx.save_model(q, str(dst), save_as_external_data=big, all_tensors_to_one_file=True, location=data_name)
    return [dst.name] + ([data_name] if big else [])


def _quantize_int4(src: Path, dst: Path, meta_json: str, kind: str) -> list[str]:
    """Block-wise 4-bit weight-only MatMuls (``MatMulNBits``) with ONNX Runtime's own quantizer, on the same
    weights as int8 (:func:`_weight_matmuls`); state, norms, decay LoRA and the WKV (standard ops or ``vrwkv``
    nodes alike) stay float32."""
    import onnx

    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        # Importing the quantizer calls logging.basicConfig(level=INFO), which would route every library's INFO
        # logs (the ONNX exporter's passes ...) to stderr for the rest of the process; and it logs each node it
        # skips.  The root logger is restored afterwards.
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        root.setLevel(logging.ERROR)
        model = onnx.load(str(src))
        _gemm_to_matmul(model)
        _, keep = _weight_matmuls(model)
        big = sum(len(t.raw_data) for t in model.graph.initializer) > EXTERNAL_DATA_THRESHOLD
        quantizer = MatMulNBitsQuantizer(model, bits=INT4_BITS, block_size=INT4_BLOCK_SIZE,
                                         is_symmetric=INT4_SYMMETRIC, accuracy_level=INT4_ACCURACY_LEVEL,
                                         nodes_to_exclude=keep, op_types_to_quantize=("MatMul",))
        quantizer.process()
    finally:
        for h in root.handlers[:]:
            if h not in handlers:
                root.removeHandler(h)
        root.setLevel(level)
    q = quantizer.model.model
    del model, quantizer
    return _finish_quantized(q, dst, meta_json, kind, big)


def _quantize_int8(src: Path, dst: Path, meta_json: str, kind: str) -> list[str]:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(src))
    _gemm_to_matmul(model)
    targets, _ = _weight_matmuls(model)
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
    return _finish_quantized(onnx.load(str(dst)), dst, meta_json, kind, big)


QUANTIZERS = {"int8": _quantize_int8, "int4": _quantize_int4}


def _check_onnx(path: Path) -> None:
    import onnx

    onnx.checker.check_model(str(path), full_check=False)


# ---- the public entry point -------------------------------------------------------------------------------
def _resolve_model(model_or_ckpt) -> tuple:
    """The model and its provenance: ``{"file", "bytes", "sha256"}`` of the checkpoint it was loaded from (a
    model object may carry it as ``model.source``, as ``vrwkv-edge export`` sets), else ``{"file": None}``."""
    if isinstance(model_or_ckpt, (RWKVModel, VisualRWKV)):
        return model_or_ckpt, getattr(model_or_ckpt, "source", None) or {"file": None}
    if isinstance(model_or_ckpt, (str, os.PathLike)):
        return load_model(model_or_ckpt), checkpoint_source(model_or_ckpt)
    raise TypeError(f"export_model: expected an RWKV model or a checkpoint path, got {type(model_or_ckpt).__name__}")



def export_model(model_or_ckpt, out_dir: PathLike, dtype: str = "fp32", quantize: Optional[str] = None, *,
                 embeds: bool = True, opset: int = DEFAULT_OPSET, chunk_size: int = DEFAULT_CHUNK,
                 tokenizer: Optional[PathLike] = None, prompt_template: Optional[str] = None,
                 overwrite: bool = False, progress: bool = True, method: str = "blocks",
                 wkv: str = DEFAULT_WKV_FLAVOUR) -> Path:
    """Exports an RWKV-6/7 language model or a VisualRWKV (a model object or a checkpoint path) to the
    directory ``out_dir``.  A VisualRWKV adds the ``vision`` and ``image_prefill`` graphs (see :mod:`.visual`).

    dtype: ``"fp32"`` or ``"fp16"`` (fp16 weights and matmuls; state, decay, norms, WKV in fp32).
    quantize: ``None``, ``"int8"`` (dynamic int8 MatMul weights for the CPU) or ``"int4"`` (block-wise 4-bit
    weight-only ``MatMulNBits``); both need ``dtype="fp32"`` and keep state, norms, decay LoRA and WKV in fp32.
    wkv: ``"standard"`` (standard ONNX operators) or ``"custom"`` (each layer's WKV, and the Bi-WKV of a
    Vision-RWKV tower, is one node of the ``vrwkv`` domain: see ``export/README.md`` and
    :mod:`vrwkv_edge.ops.custom_op_contract`; running it needs the op library).
    embeds: also write ``decode_embeds.onnx`` / ``prefill_embeds.onnx`` (inputs_embeds entry points).
    overwrite: replace an existing ``out_dir`` (the old one is only removed once the new one is complete).
    tokenizer: ``None``/``"auto"`` (bytes for a 256-row byte-level model, else World), ``"world"``, ``"bytes"``
    or a vocabulary file; recorded in the metadata as what the model really uses (the file is shipped).
    prompt_template: recorded for runtimes; default ``rwkv-world-chat`` (World) or ``raw`` (bytes).
    Returns the directory path.  See the module docstring for the layout and the metadata.
    """

    if dtype not in ("fp32", "fp16"):
        raise ValueError(f"dtype must be 'fp32' or 'fp16', got {dtype!r}")
    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be one of {QUANTIZE_MODES}, got {quantize!r}")
    if quantize is not None and dtype != "fp32":
        raise ValueError(f"quantize={quantize!r} quantizes an fp32 graph: use dtype='fp32' with it")
    if wkv not in WKV_FLAVOURS:
        raise ValueError(f"wkv must be one of {WKV_FLAVOURS}, got {wkv!r}")
    if opset not in SUPPORTED_OPSETS:
        raise ValueError(f"opset {opset} not supported; choose one of {SUPPORTED_OPSETS}")
    if not 1 <= chunk_size <= 32:
        raise ValueError(f"chunk_size must be in [1, 32] (exactness bound of the RWKV-7 chunked form), "
                         f"got {chunk_size}")
    out = Path(out_dir).absolute()
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    model, source = _resolve_model(model_or_ckpt)
    cfg = model.cfg
    _, tok_src = tokenizer_for_vocab(str(tokenizer or "auto"), cfg.vocab_size)
    tok_meta = {"kind": "bytes" if tok_src is None else "world", "file": None if tok_src is None else tok_src.name}
    visual_model = model if hasattr(model, "vcfg") else None
    visual = None
    graphs = ["decode", "prefill"] + (["decode_embeds", "prefill_embeds"] if embeds else [])
    if visual_model is not None:
        visual = visual_metadata(visual_model)
        graphs += list(VISUAL_GRAPH_KINDS)
    meta = build_metadata(cfg, dtype=dtype, quantize=quantize, opset=opset, chunk_size=chunk_size, graphs=graphs,
                          tokenizer=tok_meta, prompt_template=prompt_template or PROMPT_TEMPLATES[tok_meta["kind"]],
                          source=source, parameters=model.num_parameters(), visual=visual, wkv=wkv)
    meta_json = json.dumps(embedded_metadata(meta), sort_keys=True)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    steps = len(graphs) * (2 if quantize else 1) + 2
    bar = tqdm(total=steps, desc=f"export {out.name}", unit="step", disable=not progress, leave=True)
    t0 = time.time()
    try:
        bar.set_postfix_str(f"prepare {dtype}")
        prepared = prepare_model(model.rwkv if visual_model is not None else model, dtype)
        if wkv == "custom":
            prepared.set_wkv_impl(CUSTOM_WKV_IMPL)
        files: list[str] = []
        for kind in graphs:
            bar.set_postfix_str(f"build {kind}")
            if kind == "vision":
                proto, inits = export_vision_graph(visual_model, opset, visual, wkv=wkv)
            elif kind == "image_prefill":
                proto, inits = assemble_graph(prepared, kind, chunk_size=chunk_size, opset=opset,
                                              scan=ImageScan.of(visual_model))
            else:
                proto, inits = assemble_graph(prepared, kind, chunk_size=chunk_size, opset=opset)
            if wkv == "custom":
                check_custom_graph(proto, f"{kind}.onnx", expected_custom_nodes(model, kind))
            bar.update(1)
            path = tmp / f"{kind}.onnx"
            if quantize and kind != "vision":           # the tower stays fp32 (see .visual)
                bar.set_postfix_str(f"quantize {kind}")
                work = tmp / ".work"
                work.mkdir(exist_ok=True)
                _save_graph(proto, inits, work / path.name, meta_json, kind)
                del proto, inits
                files += QUANTIZERS[quantize](work / path.name, path, meta_json, kind)
                shutil.rmtree(work)
                bar.update(1)
            else:
                files += _save_graph(proto, inits, path, meta_json, kind)
                del proto, inits
            _check_onnx(path)
        bar.set_postfix_str("tokenizer + metadata")
        if tok_src is not None:
            shutil.copyfile(tok_src, tmp / tok_src.name)
            files.append(tok_src.name)
        meta = copy.deepcopy(meta)
        meta["files"] = {name: {"bytes": (tmp / name).stat().st_size, "sha256": sha256_file(tmp / name)}
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
