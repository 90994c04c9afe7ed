"""Hand-made single-node graphs of the vrwkv domain (ir_version 10, as ONNX Runtime 1.31 needs <= 13), run in
the ``onnxruntime`` package with the custom-op library registered.

Activation inputs are fed as float32 and cast inside the graph to the node's type E (float16 / bfloat16 /
float64), so that every type is reachable without numpy support for bfloat16; the references then take the same
rounded values."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper

from vrwkv_edge.ops.custom_op_contract import DOMAIN, INPUTS, OP_VERSION, OUTPUTS

ONNX_TYPES = {torch.float32: TensorProto.FLOAT, torch.float16: TensorProto.FLOAT16,
              torch.bfloat16: TensorProto.BFLOAT16, torch.float64: TensorProto.DOUBLE}
# Inputs that are float32 whatever E is (the contract).
FLOAT32_INPUTS = {"state_in", "w", "u"}


def node_model(op: str, dtype=torch.float32, node_name: Optional[str] = None, attrs: Optional[dict] = None,
               shapes: Optional[dict] = None, op_version: int = OP_VERSION) -> bytes:
    """A graph computing one ``op`` node; E inputs are float32 graph inputs cast to ``dtype`` first (BiWKV's w and
    u stay float32).  ``shapes``: per-input static / symbolic shapes (default: unknown)."""
    names = INPUTS[op]
    nodes, graph_inputs, node_inputs = [], [], []
    for name in names:
        graph_inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, (shapes or {}).get(name)))
        fp32 = name == "state_in" or (op == "BiWKV" and name in ("w", "u"))
        if fp32 or dtype == torch.float32:
            node_inputs.append(name)
        else:
            nodes.append(helper.make_node("Cast", [name], [f"{name}_e"], to=ONNX_TYPES[dtype]))
            node_inputs.append(f"{name}_e")
    outs = OUTPUTS[op]
    nodes.append(helper.make_node(op, node_inputs, list(outs), domain=DOMAIN, name=node_name or f"test_{op}",
                                  **(attrs or {})))
    graph = helper.make_graph(nodes, f"single_{op}", graph_inputs,
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, op_version)],
                              ir_version=10)
    return model.SerializeToString()


def session(model: bytes, library, threads: int = 1) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.register_custom_ops_library(str(library))
    so.intra_op_num_threads = threads
    so.log_severity_level = 4            # the tests read the errors from the exceptions
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def run(sess: ort.InferenceSession, op: str, xs: Sequence[torch.Tensor]) -> list[np.ndarray]:
    return sess.run(None, {n: x.float().contiguous().numpy() for n, x in zip(INPUTS[op], xs)})


def rounded(x: torch.Tensor, dtype) -> torch.Tensor:
    """x as the graph's Cast leaves it (round to nearest even, like torch)."""
    return x.to(dtype).to(torch.float64)


def load(model: bytes) -> onnx.ModelProto:
    return onnx.load_from_string(model)
