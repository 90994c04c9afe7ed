"""The serving variant of the decode graph: what Triton's sequence batcher with implicit state drives.

The plain ``decode.onnx`` (one token from a state, state shapes static apart from ``batch``) already fits
Triton's implicit state, except for the sequence controls: Triton feeds every control a configuration lists
as a graph input of shape ``[batch, 1]``, and refuses to load a model whose graph lacks one.  This module
rewrites an exported decode graph (any precision, int8 included; no re-export from the checkpoint) into::

    inputs   input_ids int64 [batch]
             START int32 [batch, 1]   END int32 [batch, 1]   READY int32 [batch, 1]   (1 = true)
             CORRID uint64 [batch, 1]                                               (optional, unused)
             past_key_values.{i}.shift_att|wkv|shift_ffn   float32, as in decode.onnx
    outputs  logits float32 [batch, V],  present.{i}.*     float32, as in decode.onnx

With ``embeds=True`` (VisualRWKV exports) the graph also takes ``inputs_embeds float32 [batch, C]``: a row whose
``input_ids`` is negative enters its embedding row instead of a token (images and other precomputed
embeddings go through the same stateful model, one embedding per request; a text row sends zeros there).

and computes, per batch row ``b``::
    state_b   = START_b ? 0 : past_b          (a Where, not a multiply: fresh memory may hold NaN)
    logits_b, new_b = decode(READY_b ? input_ids_b : 0, state_b)
    present_b = READY_b ? new_b : state_b     (a slot without a request keeps its state)

Why reset in the graph when the configuration also declares a zero ``initial_state``: without an initial
state, Triton hands a new sequence uninitialised memory (see ``docs/user_guide/implicit_state_management.md``);
with the reset in the graph the model is correct under either configuration and under the ``direct``
strategy, and the reset costs one ``Where`` per state tensor.  ``READY`` guards the rows of a batch slot that
has no request in this call (``direct`` strategy; the ``oldest`` strategy only sends ready rows).  ``END``
needs nothing in the graph (the server drops the state); it is an input because Triton feeds every control the
configuration lists.  ``CORRID`` is left out with ``corrid=False``: TensorRT has no 64-bit unsigned tensors, so
an engine is built from a graph without it.

Rows are independent in fp32 and fp16 graphs, so the sequence batcher's batching changes nothing; an int8 graph
quantizes activations with one scale per batch (see :mod:`vrwkv_edge.serving.batcher`), so there a sequence's
logits depend on which other sequences share its batch.
"""
from __future__ import annotations

import json
from pathlib import Path

from vrwkv_edge.fileio import PathLike, atomic_write
from vrwkv_edge.runtime.artefact import (METADATA_PROP, ArtefactError, config_from_metadata, read_metadata,
                                         state_input_names, state_output_names)

SERVING_GRAPH = "serving_decode"
# Triton's control tensors: (graph input name, ONNX element type name, Triton kind)
CONTROLS = (("START", "INT32", "CONTROL_SEQUENCE_START"), ("END", "INT32", "CONTROL_SEQUENCE_END"),
            ("READY", "INT32", "CONTROL_SEQUENCE_READY"), ("CORRID", "UINT64", "CONTROL_SEQUENCE_CORRID"))


def control_names(corrid: bool = True) -> list[str]:
    return [name for name, _, _ in CONTROLS if corrid or name != "CORRID"]


def _rename_uses(graph, mapping: dict[str, str]) -> None:
    """Renames every read of the names in ``mapping``, in nested subgraphs too (they may read outer names)."""
    from onnx import AttributeProto

    pending = [graph]
    while pending:
        g = pending.pop()
        for n in g.node:
            n.input[:] = [mapping.get(name, name) for name in n.input]
            pending += [a.g for a in n.attribute if a.type == AttributeProto.GRAPH]
            pending += [sg for a in n.attribute if a.type == AttributeProto.GRAPHS for sg in a.graphs]


def serving_decode_graph(decode, n_layer: int, n_embd: int, *, corrid: bool = True, embeds: bool = False):
    """The serving variant (module docstring) of an exported decode ``onnx.ModelProto``; returns a new proto.
    External weights keep their references (the caller places the data file beside the result)."""
    import onnx
    from onnx import TensorProto, helper

    proto = onnx.ModelProto()
    proto.CopyFrom(decode)
    g = proto.graph
    names_in = [i.name for i in g.input]
    names_out = [o.name for o in g.output]
    st_in, st_out = state_input_names(n_layer), state_output_names(n_layer)
    if names_in != ["input_ids"] + st_in or names_out != ["logits"] + st_out:
        raise ArtefactError(f"the decode graph's inputs {names_in[:4]}... / outputs {names_out[:4]}... are not "
                            f"input_ids + {n_layer} layers of state (is it a decode graph of this export?)")
    producers = {o for n in g.node for o in n.output}
    missing = [o for o in names_out if o not in producers]
    if missing:
        raise ArtefactError(f"the decode graph's outputs {missing[:3]} are not computed by a node")

    # the decode graph now reads the reset state and the guarded ids
    mapping = {"input_ids": "serving.input_ids"}
    mapping.update({n: f"serving.state_in.{n}" for n in st_in})
    new_out = {o: f"serving.new.{o}" for o in st_out}
    _rename_uses(g, {**mapping, **new_out})            # the decode graph also reads its own state outputs
    for n in g.node:
        for k, name in enumerate(n.output):
            if name in new_out:
                n.output[k] = new_out[name]

    dtypes = {"INT32": TensorProto.INT32, "UINT64": TensorProto.UINT64}
    controls = [helper.make_tensor_value_info(name, dtypes[dt], ["batch", 1])
                for name, dt, _ in CONTROLS if corrid or name != "CORRID"]
    old_inputs = list(g.input)
    del g.input[:]
    extra = [helper.make_tensor_value_info("inputs_embeds", TensorProto.FLOAT, ["batch", n_embd])] if embeds else []
    g.input.extend([old_inputs[0]] + extra + controls + old_inputs[1:])
    if embeds:
        _add_embeds_entry(g)

    pre = [
        helper.make_node("Constant", [], ["serving.zero_f"], value=helper.make_tensor("z", TensorProto.FLOAT, [], [0.0])),
        helper.make_node("Constant", [], ["serving.zero_i"], value=helper.make_tensor("zi", TensorProto.INT64, [], [0])),
        helper.make_node("Constant", [], ["serving.shape_flat"], value_ints=[-1]),
        helper.make_node("Constant", [], ["serving.shape_4d"], value_ints=[-1, 1, 1, 1]),
        helper.make_node("Cast", ["START"], ["serving.start"], to=TensorProto.BOOL),
        helper.make_node("Cast", ["READY"], ["serving.ready"], to=TensorProto.BOOL),
        helper.make_node("Reshape", ["serving.start", "serving.shape_4d"], ["serving.start4"]),
        helper.make_node("Reshape", ["serving.ready", "serving.shape_4d"], ["serving.ready4"]),
        helper.make_node("Reshape", ["serving.ready", "serving.shape_flat"], ["serving.ready1"]),
        helper.make_node("Where", ["serving.ready1", "input_ids", "serving.zero_i"], ["serving.input_ids"]),
    ]
    post = []
    for name_in, name_out in zip(st_in, st_out):
        # [batch, 1] masks broadcast over [batch, C]; the WKV state [batch, H, N, N] takes them as [batch, 1, 1, 1]
        start, ready = (("serving.start4", "serving.ready4") if name_in.endswith(".wkv")
                        else ("serving.start", "serving.ready"))
        pre.append(helper.make_node("Where", [start, "serving.zero_f", name_in], [mapping[name_in]]))
        post.append(helper.make_node("Where", [ready, new_out[name_out], mapping[name_in]], [name_out]))
    decode_nodes = list(g.node)
    del g.node[:]
    g.node.extend(pre + decode_nodes + post)
    g.name = SERVING_GRAPH
    kept = [p for p in proto.metadata_props if p.key == METADATA_PROP]
    del proto.metadata_props[:]
    for p in kept:
        proto.metadata_props.add(key=p.key, value=p.value)
    proto.metadata_props.add(key="vrwkv_edge.graph", value=SERVING_GRAPH)
    proto.metadata_props.add(key="vrwkv_edge.serving.controls", value=json.dumps(control_names(corrid)))
    return proto


def _add_embeds_entry(g) -> None:
    """``stem.x = ids >= 0 ? emb[max(ids, 0)] : inputs_embeds`` in place of the stem's ``Gather``."""
    from onnx import TensorProto, helper

    gathers = [n for n in g.node if n.op_type == "Gather" and list(n.output) == ["stem.x"]]
    emb = {t.name: t for t in g.initializer}.get(gathers[0].input[0]) if len(gathers) == 1 else None
    if emb is None:
        raise ArtefactError("the decode graph has no embedding stem (a Gather of emb.weight into 'stem.x'): "
                            "cannot add the inputs_embeds entry")
    gather = gathers[0]
    gather.output[0] = "serving.stem.x_ids"
    pos = list(g.node).index(gather)
    nodes = [
        helper.make_node("Constant", [], ["serving.zero_i.stem"], value=helper.make_tensor("zs", TensorProto.INT64, [], [0])),
        helper.make_node("Max", ["serving.input_ids", "serving.zero_i.stem"], ["serving.ids_clamped"]),
        helper.make_node("GreaterOrEqual", ["serving.input_ids", "serving.zero_i.stem"], ["serving.is_token"]),
        helper.make_node("Unsqueeze", ["serving.is_token", "serving.axis1"], ["serving.is_token2"]),
        helper.make_node("Cast", ["inputs_embeds"], ["serving.stem.x_embeds"], to=emb.data_type),
    ]
    gather.input[1] = "serving.ids_clamped"
    select = helper.make_node("Where", ["serving.is_token2", "serving.stem.x_ids", "serving.stem.x_embeds"], ["stem.x"])
    axis = helper.make_node("Constant", [], ["serving.axis1"], value_ints=[1])
    rest = list(g.node)
    del g.node[:]
    g.node.extend(rest[:pos] + [axis] + nodes + [rest[pos], select] + rest[pos + 1:])


def write_serving_decode(export_dir: PathLike, out_file: PathLike, *, corrid: bool = True,
                         embeds: bool = False) -> list[Path]:
    """Writes the serving variant of ``export_dir``'s decode graph to ``out_file`` (atomically) and copies the
    decode graph's external weight files, if any, beside it.  Returns the files written."""
    import onnx

    export_dir = Path(export_dir)
    meta = read_metadata(export_dir)
    cfg = config_from_metadata(meta)
    src = export_dir / meta["graphs"]["decode"]["file"]
    try:
        decode = onnx.load(str(src), load_external_data=False)
    except Exception as e:                            # protobuf raises DecodeError and friends
        raise ArtefactError(f"{src}: cannot be read as an ONNX model (corrupt or truncated?): {e}") from e
    proto = serving_decode_graph(decode, cfg.n_layer, cfg.n_embd, corrid=corrid, embeds=embeds)
    out_file = Path(out_file)
    written = []
    data_files = sorted({e.value for t in proto.graph.initializer for e in t.external_data if e.key == "location"})
    for name in data_files:
        dst = out_file.parent / name
        with atomic_write(dst) as tmp:
            with open(export_dir / name, "rb") as fin, open(tmp, "wb") as fout:
                while block := fin.read(1 << 24):
                    fout.write(block)
        written.append(dst)
    with atomic_write(out_file, suffix=".onnx") as tmp:
        onnx.save_model(proto, tmp)
    onnx.checker.check_model(str(out_file), full_check=False)
    return [out_file] + written
