"""The export artefact's schema, read side: what a directory written by ``vrwkv-edge export`` holds and how it
is checked before anything runs.  One module both sides share: :mod:`vrwkv_edge.export` writes exactly this,
the ONNX Runtime backend (and, next, the C++ and TensorRT runtimes) reads it.

* ``metadata.json`` (:data:`METADATA_FILE`, format :data:`FORMAT` version :data:`FORMAT_VERSION`): the model
  configuration, precision, opset, chunk size, the graphs and their I/O, the state layout, the tokenizer, the
  file table (bytes and SHA-256 of every file), and for a VisualRWKV the ``visual`` section;
* the WKV flavour (:func:`artefact_wkv`, key ``wkv``): standard ONNX operators, or one node per WKV in ONNX
  domain ``vrwkv`` at an op version (:mod:`vrwkv_edge.ops.custom_op_contract`); an export whose op version this
  package does not implement is refused naming both.  Optional: exports written before it are standard;
* graph I/O (:func:`graph_io`): ``input_ids`` / ``inputs_embeds`` / ``image_embeds`` / pixels, then the state
  ``past_key_values.{i}.shift_att|wkv|shift_ffn``; outputs ``logits`` and ``present.{i}.*``; ``batch`` and
  ``seq`` the only symbolic dimensions.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional

import vrwkv_edge
from vrwkv_edge.config import RWKVConfig
from vrwkv_edge.fileio import PathLike
from vrwkv_edge.ops.custom_op_contract import DEFAULT_WKV_FLAVOUR, DOMAIN, OP_VERSION
from vrwkv_edge.state import State
from vrwkv_edge.tokenizer import ByteTokenizer, load_tokenizer
from vrwkv_edge.visualrwkv.model import VisualConfig
from vrwkv_edge.visualrwkv.scan import SCAN_MODES

from .schema import SchemaError
from .schema import validate as validate_schema

FORMAT = "vrwkv_edge.onnx"
FORMAT_VERSION = 2
METADATA_FILE = "metadata.json"
METADATA_PROP = "vrwkv_edge.metadata"

SCAN_MODE = "chunked-scan"
SCAN_MODE_DOC = ("prefill: exact chunked WKV (chunk_size tokens per chunk; the sequence is zero-padded to a "
                 "multiple of chunk_size inside the graph) with one ONNX Scan per layer over the chunks, so any "
                 "seq >= 1 runs in one call; decode: the per-token step, no loop")

DEFAULT_OPSET = 18
# 17 (TensorRT 8.6, JetPack 6.0) is written by tracing at 18 and rewriting the few operators whose signature
# changed (:mod:`.opset`); the exporter's own down-conversion fails on these graphs.
SUPPORTED_OPSETS = (17, 18, 19, 20)



DEFAULT_CHUNK = 16
LM_GRAPH_KINDS = ("decode", "decode_embeds", "prefill", "prefill_embeds")
# VisualRWKV only: the tower (pixels -> projected embeddings) and one image through the LM with the per-layer
# patch order of the model's scan mode (:mod:`vrwkv_edge.visualrwkv.scan`), both with a static token count.
VISUAL_GRAPH_KINDS = ("image_prefill", "vision")
GRAPH_KINDS = LM_GRAPH_KINDS + VISUAL_GRAPH_KINDS

QUANTIZE_MODES = (None, "int8", "int4")


# ---- the WKV flavour -------------------------------------------------------------------------------------
def wkv_metadata(flavour: str) -> dict:
    """The metadata's ``wkv`` section: standard ONNX ops (no op library needed), or one node per WKV in the
    ``vrwkv`` domain at this package's op version (:mod:`vrwkv_edge.ops.custom_op_contract`)."""
    if flavour == "standard":
        return {"flavour": "standard", "domain": None, "op_version": None}
    if flavour == "custom":
        return {"flavour": "custom", "domain": DOMAIN, "op_version": OP_VERSION}
    raise ValueError(f"unknown WKV flavour {flavour!r}; choose 'standard' or 'custom'")


def artefact_wkv(meta: dict) -> dict:
    """The ``wkv`` section of (checked) metadata; exports written before it existed are the standard flavour."""
    return meta.get("wkv") or wkv_metadata(DEFAULT_WKV_FLAVOUR)


class ArtefactError(ValueError):
    """An exported directory that cannot be used; the message names the file, key or tensor at fault."""


# ---- metadata ---------------------------------------------------------------------------------------------

def state_input_names(n_layer: int) -> list[str]:
    return State.io_names(n_layer, "past_key_values")


def state_output_names(n_layer: int) -> list[str]:
    return State.io_names(n_layer, "present")


def graph_input_name(kind: str) -> str:
    if kind == "image_prefill":
        return "image_embeds"
    return "inputs_embeds" if kind.endswith("_embeds") else "input_ids"



def state_shapes(cfg) -> dict[str, list]:
    """Per-field shape with the symbolic ``"batch"`` first dimension."""
    return {"shift_att": ["batch", cfg.n_embd], "wkv": ["batch", cfg.n_head, cfg.head_size, cfg.head_size],
            "shift_ffn": ["batch", cfg.n_embd]}


def graph_io(kind: str, cfg, visual: Optional[dict] = None) -> dict:
    """Names, element types and shapes of one graph's inputs and outputs (symbolic dims as strings).
    ``visual`` (the metadata's ``visual`` section: ``tokens_per_image``, ``pixel_inputs``) is needed for the
    VisualRWKV graphs."""
    if kind not in GRAPH_KINDS:
        raise ValueError(f"unknown graph kind {kind!r}; choose one of {GRAPH_KINDS}")
    if kind in VISUAL_GRAPH_KINDS and not visual:
        raise ValueError(f"graph {kind!r} belongs to a VisualRWKV export and needs its visual description")
    image_embeds = {"name": "image_embeds", "dtype": "float32",
                    "shape": ["batch", visual["tokens_per_image"], cfg.n_embd]} if visual else None
    if kind == "vision":
        return {"inputs": [{"name": p["name"], "dtype": "float32", "shape": ["batch", 3, p["size"], p["size"]]}
                           for p in visual["pixel_inputs"]],
                "outputs": [image_embeds]}
    seq = kind.startswith("prefill")
    first = graph_input_name(kind)
    if kind == "image_prefill":
        first_io = image_embeds
    elif first == "input_ids":
        first_io = {"name": first, "dtype": "int64", "shape": ["batch", "seq"] if seq else ["batch"]}
    else:
        first_io = {"name": first, "dtype": "float32",
                    "shape": ["batch", "seq", cfg.n_embd] if seq else ["batch", cfg.n_embd]}
    shapes = state_shapes(cfg)
    st_in = [{"name": n, "dtype": "float32", "shape": shapes[n.rsplit(".", 1)[1]]}
             for n in state_input_names(cfg.n_layer)]
    st_out = [{"name": n, "dtype": "float32", "shape": shapes[n.rsplit(".", 1)[1]]}
              for n in state_output_names(cfg.n_layer)]
    return {"inputs": [first_io] + st_in,
            "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch", cfg.vocab_size]}] + st_out}


# metadata.json is a few tens of KB; a much larger one is not ours (and is not read into memory).
MAX_METADATA_BYTES = 16 * 2 ** 20


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


def upgrade_metadata(meta: dict) -> dict:
    """Format 1 (vrwkv_edge 0.1) to 2: the tokenizer was a bare file name (and named the World vocabulary even
    for byte-level models, which is what their 256 rows mean); the source checkpoint had no digest."""
    if meta.get("format_version") != 1:
        return meta
    meta = {**meta, "format_version": 2}
    byte_level = isinstance(meta.get("model"), dict) and meta["model"].get("vocab_size") == 256
    meta["tokenizer"] = ({"kind": "bytes", "file": None} if byte_level else
                         {"kind": "world", "file": meta.get("tokenizer")})
    if isinstance(meta.get("model"), dict):
        meta["model"] = {"source_sha256": None, **meta["model"]}
    return meta


def check_metadata(meta: object, where: str = METADATA_FILE) -> dict:
    """Validates a metadata dict against the schema (:mod:`.schema`, the file every runtime reads) and checks
    its internal consistency; raises :class:`ArtefactError` naming the key.  Returns the (upgraded) metadata."""
    if not isinstance(meta, dict):
        raise ArtefactError(f"{where}: expected a JSON object, got {type(meta).__name__}")
    fmt = _require(meta, "format", str, where)
    if fmt != FORMAT:
        raise ArtefactError(f"{where}: format {fmt!r} is not {FORMAT!r} (not a vrwkv_edge ONNX export)")
    ver = _require(meta, "format_version", int, where)
    if ver > FORMAT_VERSION:
        raise ArtefactError(f"{where}: format_version {ver} is newer than this vrwkv_edge understands "
                            f"({FORMAT_VERSION}); upgrade vrwkv_edge")
    meta = upgrade_metadata(meta)
    try:
        validate_schema(meta)
    except SchemaError as e:
        raise ArtefactError(f"{where}: {e}") from None
    # Types, enums and size bounds are the schema's (metadata.schema.json); what follows relates fields.
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
    if (not isinstance(st.get("inputs"), list) or not isinstance(st.get("outputs"), list)
            or len(st["inputs"]) != 3 * cfg.n_layer or st["inputs"] != state_input_names(cfg.n_layer)
            or st["outputs"] != state_output_names(cfg.n_layer)):
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
    _check_wkv(meta, where)
    _check_quantize(meta, where)
    tok = meta["tokenizer"]
    if tok["kind"] == "world" and tok["file"] is None:
        raise ArtefactError(f"{where}: tokenizer.file is missing: a World tokenizer reads its vocabulary file")
    if tok["kind"] == "bytes" and (tok["file"] is not None or cfg.vocab_size < 256):
        raise ArtefactError(f"{where}: a byte-level tokenizer has no file and needs at least 256 embedding rows "
                            f"(model.vocab_size {cfg.vocab_size})")
    return meta


def _check_wkv(meta: dict, where: str) -> None:
    """A custom-op export runs only where its ``vrwkv`` nodes are implemented at the version it was written
    with; this package (and the op library built from it) implements :data:`OP_VERSION`."""
    wkv = artefact_wkv(meta)
    if wkv != wkv_metadata(wkv["flavour"]) and wkv["flavour"] == "custom" and wkv["domain"] == DOMAIN:
        raise ArtefactError(f"{where}: wkv.op_version {wkv['op_version']}: this export's {DOMAIN} nodes are "
                            f"version {wkv['op_version']}, but vrwkv_edge {vrwkv_edge.__version__} implements "
                            f"{DOMAIN} version {OP_VERSION}; re-export the model with this vrwkv_edge, or use "
                            f"a vrwkv_edge release whose op version is {wkv['op_version']}")
    if wkv != wkv_metadata(wkv["flavour"]):
        raise ArtefactError(f"{where}: wkv {wkv} is not a WKV flavour this vrwkv_edge writes "
                            f"({wkv_metadata('standard')} or {wkv_metadata('custom')})")


def _check_quantize(meta: dict, where: str) -> None:
    quant = meta.get("quantization")
    if (meta["quantize"] is None) != (quant is None):
        raise ArtefactError(f"{where}: quantize {meta['quantize']!r} and quantization {quant!r} disagree")
    if meta["quantize"] is not None and (meta["dtype"] != "fp32" or quant.get("precision") not in (None, meta["quantize"])):
        raise ArtefactError(f"{where}: quantize {meta['quantize']!r} needs dtype fp32 and a matching "
                            f"quantization.precision (got dtype {meta['dtype']!r}, precision "
                            f"{quant.get('precision')!r})")


def artefact_tokenizer(directory: PathLike, meta: dict):
    """The tokenizer an export says its model uses: bytes, or the World trie over the shipped vocabulary."""
    tok = meta["tokenizer"]
    if tok["kind"] == "bytes":
        return ByteTokenizer()
    return load_tokenizer(Path(directory) / tok["file"])


def _check_visual(meta: dict, where: str) -> None:
    """The ``visual`` section of a VisualRWKV export: present with both visual graphs, and self-consistent."""

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
    if mpath.stat().st_size > MAX_METADATA_BYTES:
        raise ArtefactError(f"{mpath}: {mpath.stat().st_size:,} bytes, more than a metadata file can be "
                            f"({MAX_METADATA_BYTES:,})")
    try:
        meta = json.loads(mpath.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ArtefactError(f"{mpath}: not UTF-8 text: {e}") from e
    except json.JSONDecodeError as e:
        raise ArtefactError(f"{mpath}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from e
    except RecursionError:
        raise ArtefactError(f"{mpath}: JSON nested too deeply to be metadata") from None
    meta = check_metadata(meta, str(mpath))
    files = meta.get("files")
    if not isinstance(files, dict):
        raise ArtefactError(f"{mpath}: key 'files' is missing")
    for kind, entry in meta["graphs"].items():
        if entry["file"] not in files:
            raise ArtefactError(f"{mpath}: graph file {entry['file']} is not listed under 'files'")
    if meta["tokenizer"]["file"] is not None and meta["tokenizer"]["file"] not in files:
        raise ArtefactError(f"{mpath}: the tokenizer file {meta['tokenizer']['file']} is not listed under 'files'")
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
        got = sha256_file(d / name)
        if got != info.get("sha256"):
            raise ArtefactError(f"{d / name}: SHA-256 {got} does not match {METADATA_FILE} ({info.get('sha256')})")


def embedded_metadata(meta: dict) -> dict:
    """The part of the metadata stored inside each graph (everything but the file table)."""
    return {k: v for k, v in meta.items() if k != "files"}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()
