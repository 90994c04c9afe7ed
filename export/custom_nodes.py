"""The custom-op flavour (``vrwkv-edge export --wkv custom``): each WKV is one node of the ONNX domain ``vrwkv``.

The torch custom ops of :mod:`vrwkv_edge.ops.custom_ops` (one per node of
:mod:`vrwkv_edge.ops.custom_op_contract`) are translated here into their nodes by onnxscript functions, passed
to ``torch.onnx.export(..., custom_translation_table=TRANSLATION_TABLE)``: the node's op type, domain, input and
output order and attributes come from the contract module, and the model's ``opset_import`` gains
``(DOMAIN, OP_VERSION)``.  :func:`custom_nodes` and :func:`check_custom_graph` read a graph back and check it
against the contract (the exporter runs the check on every graph it writes in this flavour).

Running a custom-op graph needs the op library (the ONNX Runtime custom-op library of ``csrc/ort_ops``, loaded by
:mod:`vrwkv_edge.runtime.custom_ops`; the TensorRT plugin of ``csrc/plugins``).  :func:`reference_ops` gives
``onnx.reference`` implementations of the nodes (the PyTorch forms), so a custom-op graph can also be evaluated
without any library, e.g. by the tests.
"""
from __future__ import annotations

from functools import cache
from typing import Optional

import torch

from vrwkv_edge.ops import custom_ops
from vrwkv_edge.ops.custom_op_contract import (BIWKV, BIWKV6, BIWKV_SEMANTICS, DEFAULT_BIWKV_SEMANTICS, DOMAIN, INPUTS,
                                               OP_VERSION, OUTPUTS, WKV6, WKV7)
from vrwkv_edge.vision_rwkv.backbone import CUSTOM_WKV_IMPLS, VRWKVBackbone

# Element types of the inputs (the contract module's docstring): E = the activation type, one per node.
_FLOAT32 = "tensor(float)"
_E_TYPES = ("tensor(float)", "tensor(float16)", "tensor(bfloat16)")
_FLOAT32_INPUTS = {WKV6: ("state_in",), WKV7: ("state_in",), BIWKV: ("w", "u"), BIWKV6: ()}


def op_schema(op_type: str):
    """The ``onnx.defs.OpSchema`` of a ``vrwkv`` node, built from the contract (names, order, types, the
    ``BiWKV`` attribute): what the exporter needs to emit the node with the right number of outputs."""
    from onnx import helper
    from onnx.defs import OpSchema

    inputs = [OpSchema.FormalParameter(n, _FLOAT32 if n in _FLOAT32_INPUTS[op_type] else "E")
              for n in INPUTS[op_type]]
    outputs = [OpSchema.FormalParameter(n, _FLOAT32) for n in OUTPUTS[op_type]]
    attributes = ([OpSchema.Attribute("semantics", helper.make_attribute("semantics", DEFAULT_BIWKV_SEMANTICS),
                                      f"one of {BIWKV_SEMANTICS}")] if op_type == BIWKV else [])
    return OpSchema(op_type, DOMAIN, OP_VERSION, f"vrwkv_edge.ops.custom_op_contract: {op_type}",
                    inputs=inputs, outputs=outputs, attributes=attributes,
                    type_constraints=[("E", list(_E_TYPES), "the activation element type")])


@cache
def _nodes() -> dict:
    """onnxscript's handle of each node (onnxscript is imported only when a graph is exported)."""
    from onnxscript import values

    opset = values.Opset(DOMAIN, OP_VERSION)
    return {name: values.Op(opset, name, op_schema(name)) for name in INPUTS}


# Translations (traced by the exporter, one node each); the torch op's arguments are the node's inputs in order.
def _wkv6(r, k, v, w_log, u, state_in):
    return _nodes()[WKV6](r, k, v, w_log, u, state_in)


def _wkv7(r, w_log, k, v, a, b, state_in):
    return _nodes()[WKV7](r, w_log, k, v, a, b, state_in)


def _biwkv(w, u, k, v, semantics: str = DEFAULT_BIWKV_SEMANTICS):
    if semantics not in BIWKV_SEMANTICS:
        raise ValueError(f"BiWKV semantics must be one of {BIWKV_SEMANTICS}, got {semantics!r}")
    return _nodes()[BIWKV](w, u, k, v, semantics=semantics)


def _biwkv6(r, k, v, w_log, u):
    return _nodes()[BIWKV6](r, k, v, w_log, u)


TRANSLATION_TABLE = {
    torch.ops.vrwkv_onnx.wkv6.default: _wkv6,
    torch.ops.vrwkv_onnx.wkv7.default: _wkv7,
    torch.ops.vrwkv_onnx.biwkv.default: _biwkv,
    torch.ops.vrwkv_onnx.biwkv6.default: _biwkv6,
}


# ---- selecting the custom ops on a model -------------------------------------------------------------------
def use_custom_wkv(module):
    """Switches every Vision-RWKV backbone inside ``module`` (a classifier, a VisualRWKV tower) to the custom-op
    Bi-WKV with the arithmetic it computes now (``official`` or ``formula`` semantics); returns ``module``.
    Language models select theirs with ``model.set_wkv_impl(CUSTOM_WKV_IMPL)``."""
    for m in module.modules():
        if isinstance(m, VRWKVBackbone) and len(m.layers):
            m.set_wkv_impl(CUSTOM_WKV_IMPLS[m.config.variant][m.layers[0].att.impl])
    return module


def expected_custom_nodes(model, kind: str) -> dict:
    """``{op_type: count}`` of the ``vrwkv`` nodes graph ``kind`` of ``model`` has in the custom flavour: one
    WKV per layer in the language-model graphs, one Bi-WKV per Vision-RWKV layer in a tower or classifier, none
    in other towers.  ``kind`` is an artefact graph kind or ``"classifier"`` (a Vision-RWKV model)."""
    def bi(m) -> dict:
        backbones = [b for b in m.modules() if isinstance(b, VRWKVBackbone)]
        counts: dict[str, int] = {}
        for b in backbones:
            name = BIWKV if b.config.variant == "vrwkv" else BIWKV6
            counts[name] = counts.get(name, 0) + len(b.layers)
        return counts

    if kind == "classifier":
        return bi(model)
    if kind == "vision":
        return bi(model.vit)
    cfg = model.cfg
    return {WKV6 if cfg.version == "x060" else WKV7: cfg.n_layer}


# ---- reading a graph back ------------------------------------------------------------------------------------
def custom_nodes(model) -> list:
    """Every node of domain ``vrwkv`` in an ``onnx.ModelProto`` (main graph, subgraphs and local functions)."""
    from onnx import AttributeProto

    found = []

    def walk(nodes):
        for n in nodes:
            if n.domain == DOMAIN:
                found.append(n)
            for a in n.attribute:
                if a.type == AttributeProto.GRAPH:
                    walk(a.g.node)
                elif a.type == AttributeProto.GRAPHS:
                    for g in a.graphs:
                        walk(g.node)

    walk(model.graph.node)
    for f in model.functions:
        walk(f.node)
    return found


def check_custom_graph(model, where: str, expected: Optional[dict] = None) -> dict:
    """Checks the ``vrwkv`` nodes of ``model`` against the contract: known op types, the contract's number of
    inputs and outputs, the ``BiWKV`` ``semantics`` attribute, no attribute elsewhere, and ``(DOMAIN,
    OP_VERSION)`` in the model's ``opset_import``.  ``expected``: ``{op_type: count}`` that must match exactly.
    Returns ``{op_type: count}``; raises ``ValueError`` naming ``where`` and the node."""
    from onnx import helper

    counts: dict[str, int] = {}
    for n in custom_nodes(model):
        if n.op_type not in INPUTS:
            raise ValueError(f"{where}: node {n.name!r} has op type {DOMAIN}.{n.op_type}, not one of {sorted(INPUTS)}")
        if len(n.input) != len(INPUTS[n.op_type]) or len(n.output) != len(OUTPUTS[n.op_type]):
            raise ValueError(f"{where}: {n.op_type} node {n.name!r} has {len(n.input)} inputs / {len(n.output)} "
                             f"outputs; the contract has {INPUTS[n.op_type]} -> {OUTPUTS[n.op_type]}")
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        want = {"semantics"} if n.op_type == BIWKV else set()
        if set(attrs) != want:
            raise ValueError(f"{where}: {n.op_type} node {n.name!r} has attributes {sorted(attrs)}, the contract "
                             f"has {sorted(want)}")
        if n.op_type == BIWKV and attrs["semantics"].decode() not in BIWKV_SEMANTICS:
            raise ValueError(f"{where}: BiWKV node {n.name!r} has semantics {attrs['semantics']!r}")
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    imports = {o.domain: o.version for o in model.opset_import}
    if counts and imports.get(DOMAIN) != OP_VERSION:
        raise ValueError(f"{where}: opset_import has {DOMAIN} version {imports.get(DOMAIN)}, the nodes are "
                         f"version {OP_VERSION}")
    if expected is not None and counts != expected:
        raise ValueError(f"{where}: {DOMAIN} nodes {counts}, expected {expected}")
    return counts


def reference_ops() -> list:
    """``onnx.reference.op_run.OpRun`` classes for the four nodes, computed by the PyTorch forms (float32), for
    ``onnx.reference.ReferenceEvaluator(model, new_ops=reference_ops())``."""
    import numpy as np
    from onnx.reference.op_run import OpRun

    def t(x):
        return torch.from_numpy(np.asarray(x, dtype=np.float32).copy())

    class WKV6Ref(OpRun):
        op_domain = DOMAIN

        def _run(self, r, k, v, w_log, u, state_in):
            y, s = custom_ops.wkv6_op(*(t(x) for x in (r, k, v, w_log, u, state_in)))
            return y.numpy(), s.numpy()

    class WKV7Ref(OpRun):
        op_domain = DOMAIN

        def _run(self, r, w_log, k, v, a, b, state_in):
            y, s = custom_ops.wkv7_op(*(t(x) for x in (r, w_log, k, v, a, b, state_in)))
            return y.numpy(), s.numpy()

    class BiWKVRef(OpRun):
        op_domain = DOMAIN

        def _run(self, w, u, k, v, semantics=DEFAULT_BIWKV_SEMANTICS):
            sem = semantics.decode() if isinstance(semantics, bytes) else semantics
            return (custom_ops.biwkv_op(*(t(x) for x in (w, u, k, v)), sem).numpy(),)

    class BiWKV6Ref(OpRun):
        op_domain = DOMAIN

        def _run(self, r, k, v, w_log, u):
            return (custom_ops.biwkv6_op(*(t(x) for x in (r, k, v, w_log, u))).numpy(),)

    for cls, name in ((WKV6Ref, WKV6), (WKV7Ref, WKV7), (BiWKVRef, BIWKV), (BiWKV6Ref, BIWKV6)):
        cls.__name__ = name                   # onnx.reference finds a new op by its class name
    return [WKV6Ref, WKV7Ref, BiWKVRef, BiWKV6Ref]
