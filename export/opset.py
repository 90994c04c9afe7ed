"""Opset 17 for TensorRT 8.6 (JetPack 6.0's parser stops at opset 17): a checked rewrite of opset-18 graphs.

torch's exporter writes opset 18 at least, and ``onnx.version_converter`` cannot take our graphs down (it
fails on reductions whose axes are inputs).  Between opset 17 and 18 only a few operators changed their
signature; of those our graphs use the reductions other than ReduceSum (``ReduceL2`` in RWKV-7's key
normalisation, ``ReduceMean`` in the vision towers), whose ``axes`` moved from an attribute (17) to an input
(18) along with a ``noop_with_empty_axes`` attribute, and ``Pad``, which gained an optional ``axes`` input.  :func:`to_opset17` moves constant ``axes`` inputs
back into attributes, checks that no other opset-18-only form is present (it raises, naming the node, rather
than writing a graph that claims an opset it does not follow) and sets the default-domain opset to 17, in the
main graph, in every subgraph (Scan bodies) and in local functions.
"""
from __future__ import annotations

# Reductions whose ``axes`` became an input in opset 18 (ReduceSum did so in 13 and is unchanged).
REDUCE_AXES_18 = ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
                  "ReduceMin", "ReduceProd", "ReduceSumSquare")
# Operators whose opset-18 form has no opset-17 equivalent we rewrite (new inputs/attributes or new ops).
NEW_IN_18 = ("BitwiseAnd", "BitwiseNot", "BitwiseOr", "BitwiseXor", "CenterCropPad", "Col2Im", "Mish",
             "GroupNormalization", "OptionalHasElement", "OptionalGetElement")
TARGET = 17


class OpsetConversionError(ValueError):
    pass


def set_lowest_ir_version(model) -> int:
    """Declares the lowest IR version the model's opsets allow (opset 17/18 -> IR 8, 19/20 -> IR 9): ONNX
    Runtime builds of older JetPack images refuse any file whose IR version is newer than they know, even
    when every operator in it is one they run.  Returns the version set."""
    from onnx import helper

    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    return model.ir_version


def _constants(model, extra_inits=()) -> dict:
    """name -> numpy array of every initializer and Constant node output, in every graph and function."""
    from onnx import AttributeProto, numpy_helper

    found = {}
    for t in list(model.graph.initializer) + list(extra_inits):
        if t.data_location == 0 and (t.raw_data or t.int64_data or t.int32_data):
            found[t.name] = numpy_helper.to_array(t)

    def walk(nodes):
        for n in nodes:
            if n.op_type == "Constant" and n.domain in ("", "ai.onnx"):
                for a in n.attribute:
                    if a.name == "value":
                        found[n.output[0]] = numpy_helper.to_array(a.t)
                    elif a.name == "value_ints":
                        found[n.output[0]] = list(a.ints)
            for a in n.attribute:
                if a.type == AttributeProto.GRAPH:
                    for t in a.g.initializer:
                        found[t.name] = numpy_helper.to_array(t)
                    walk(a.g.node)
                elif a.type == AttributeProto.GRAPHS:
                    for g in a.graphs:
                        walk(g.node)

    walk(model.graph.node)
    for f in model.functions:
        walk(f.node)
    return found


def _rewrite(nodes, consts: dict, where: str) -> int:
    from onnx import AttributeProto, helper

    changed = 0
    for n in nodes:
        if n.domain not in ("", "ai.onnx"):
            continue
        if n.op_type in NEW_IN_18:
            raise OpsetConversionError(f"{where}: node {n.name or n.op_type} ({n.op_type}) does not exist in "
                                       f"opset {TARGET}")
        if n.op_type in REDUCE_AXES_18 and len(n.input) >= 2 and n.input[1]:
            axes = consts.get(n.input[1])
            if axes is None:
                raise OpsetConversionError(f"{where}: {n.op_type} node {n.name!r} takes computed axes "
                                           f"({n.input[1]}); opset {TARGET} needs constant axes")
            del n.input[1]
            for a in list(n.attribute):           # opset-18 attribute; irrelevant once the axes are given
                if a.name == "noop_with_empty_axes":
                    n.attribute.remove(a)
            n.attribute.append(helper.make_attribute("axes", [int(a) for a in list(axes.reshape(-1)
                                                                             if hasattr(axes, "reshape") else axes)]))
            changed += 1
        elif n.op_type == "Pad" and len(n.input) >= 4 and n.input[3]:
            raise OpsetConversionError(f"{where}: Pad node {n.name!r} uses the opset-18 axes input")
        elif n.op_type in ("Split",) and any(a.name == "num_outputs" for a in n.attribute):
            raise OpsetConversionError(f"{where}: Split node {n.name!r} uses the opset-18 num_outputs attribute")
        elif n.op_type in ("Resize", "ScatterElements", "ScatterND") and any(
                a.name in ("antialias", "axes", "keep_aspect_ratio_policy") or
                (a.name == "reduction" and helper.get_attribute_value(a) in (b"min", b"max"))
                for a in n.attribute):
            raise OpsetConversionError(f"{where}: {n.op_type} node {n.name!r} uses an opset-18 attribute")
        for a in n.attribute:
            if a.type == AttributeProto.GRAPH:
                changed += _rewrite(a.g.node, consts, where)
            elif a.type == AttributeProto.GRAPHS:
                for g in a.graphs:
                    changed += _rewrite(g.node, consts, where)
    return changed


def to_opset17(model, extra_inits=(), where: str = "graph"):
    """Rewrites an opset-18..20 ``onnx.ModelProto`` in place to opset 17 (see the module docstring) and returns
    it.  ``extra_inits``: initializers held outside the proto (the block assembly attaches them later)."""
    from onnx import helper

    current = {o.domain: o.version for o in model.opset_import}.get("", TARGET)
    if current == TARGET:
        return model
    if current > 18:
        raise OpsetConversionError(f"{where}: opset {current} -> {TARGET} is not supported (export at 18)")
    consts = _constants(model, extra_inits)
    _rewrite(model.graph.node, consts, where)
    for f in model.functions:
        _rewrite(f.node, consts, f"{where}/{f.name}")
        kept = [o for o in f.opset_import if o.domain not in ("", "ai.onnx")]
        del f.opset_import[:]
        f.opset_import.extend(kept + [helper.make_opsetid("", TARGET)])
    kept = [o for o in model.opset_import if o.domain not in ("", "ai.onnx")]
    del model.opset_import[:]
    model.opset_import.extend(kept + [helper.make_opsetid("", TARGET)])
    return model
