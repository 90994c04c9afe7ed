"""The exported graphs: what they compute (explicit ``nn.Module`` s), how they are traced, their I/O.

Graphs (``G`` = one of these; ``L`` layers, ``C`` = n_embd, ``H`` heads of size ``N``, ``V`` = vocab)::

    decode           input_ids     int64 [batch]            -> logits [batch, V]  (one token)
    decode_embeds    inputs_embeds fp32  [batch, C]         -> logits [batch, V]
    prefill          input_ids     int64 [batch, seq]       -> logits [batch, V]  (LAST token only)
    prefill_embeds   inputs_embeds fp32  [batch, seq, C]    -> logits [batch, V]

and every graph also takes and returns the recurrent state, three tensors per layer, always float32::

    inputs   past_key_values.{i}.shift_att [batch, C]   .wkv [batch, H, N, N]   .shift_ffn [batch, C]
    outputs  present.{i}.shift_att         [batch, C]   .wkv [batch, H, N, N]   .shift_ffn [batch, C]

in the flat order of :meth:`vrwkv_edge.state.State.flat` (layer by layer; ``wkv`` key-major).  ``batch`` and
``seq`` are dynamic dimensions; every other dimension is static.  ``logits`` is always float32.

Prefill uses the exact chunked WKV (chunk ``L``, 16 by default): inside the graph the sequence is zero-padded
to a multiple of ``L`` (``Pad`` by ``(-seq) mod L``; padding tokens leave the state unchanged), the
intra-chunk matrices are computed for all chunks at once, and the chunk-to-chunk state recurrence is one ONNX
``Scan`` per layer over ``ceil(seq / L)`` chunks (see :mod:`vrwkv_edge.ops.chunk_scan`).  So one prefill graph
takes any ``seq >= 1``; its memory grows linearly with ``seq``, so the ORT backend feeds long prompts in
blocks (``max_prefill_tokens``), which is exact because the state carries over.  Decode is the per-token step
function, loop-free and static apart from ``batch``.

How a graph is made.  A graph computes ``model.step`` (decode) or ``model.forward(last_only=True)`` (prefill).
Tracing the whole model costs time proportional to the depth (torch.export runs every layer's ops
symbolically: ~45 s per graph for 12 tiny layers here), so the exporter traces a small explicit module
instead, :class:`BlockGraph`: ONE block with its weights
as graph inputs, running the model's own ``Block.run``.  One trace serves every layer of the same kind (one
kind for RWKV-6; two for RWKV-7, whose layer 0 defines ``v_first``), per mode (step / chunked sequence) and
precision, and is cached.  :func:`assemble_graph` then writes the graph: the embedding stem (``Gather`` +
``ln0``), the block template called once per layer as an ONNX local function with that layer's weights as
initializers, and the head (last position, ``ln_out``, ``MatMul``); the ONNX inliner flattens the calls, so the
file holds one plain graph of standard operators.  The tests compare every assembled graph with the PyTorch model.  Weights
that the traced block multiplies transposed are stored transposed, so every weight matmul is a plain
``MatMul(x, W)`` with an initializer (no runtime transposes; what ``quantize_dynamic`` quantizes).

The WKV sits inside the block template and is the model's WKV implementation (:mod:`vrwkv_edge.ops.dispatch`):
a fused custom-op WKV is another registered implementation, selected on the model, and nothing else changes.

Precision (:func:`prepare_model`): ``fp32`` is the model as is.  ``fp16`` keeps the weights and every matmul
in float16, but computes every LayerNorm and the per-head ``ln_x`` in float32, keeps the residual stream in
float32 (fp16 LayerNorm outputs feed the matmuls; the fp16 block outputs are added to an fp32 residual), keeps
the decay parameters (``time_decay``/``time_faaaa`` of RWKV-6, ``w0``/``r_k`` of RWKV-7) in float32 so the
decay ``exp`` runs in fp32 on fp32 inputs, and runs the WKV in float32 with a float32 state.  State and
logits at the graph boundary are float32 in every precision.
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vrwkv_edge.models.base import RWKVModel
from vrwkv_edge.ops.dispatch import WkvImpl
from vrwkv_edge.runtime.artefact import DEFAULT_CHUNK, DEFAULT_OPSET, LM_GRAPH_KINDS, SUPPORTED_OPSETS, graph_io
from vrwkv_edge.state import STATE_FIELDS, State
from vrwkv_edge.visualrwkv.scan import ImageSpan, chunk_order

from .custom_nodes import TRANSLATION_TABLE
from .opset import set_lowest_ir_version, to_opset17


def trace_opset(opset: int) -> int:
    """The opset the tracer writes for a requested one (torch exports opset 18 at least)."""
    return max(opset, 18)


EXPORT_DTYPES = ("fp32", "fp16")

# Parameters that feed the decay (or are used in fp32 by the model anyway): kept fp32 in the fp16 graphs.
FP32_PARAMS = {"x060": ("att.time_decay", "att.time_faaaa"), "x070": ("att.w0", "att.r_k")}


@dataclass(frozen=True)
class ImageScan:
    """What the image-prefill graph needs to know about an image: ``tokens`` embeddings, the first
    ``grid_h * grid_w`` of them scanned in the per-layer order of ``mode`` (the rest, v6's CLS, never move)."""
    tokens: int
    grid_h: int
    grid_w: int
    mode: str

    def layer_order(self, layer: int) -> Optional[list[int]]:
        """Token order layer ``layer`` sees (``order[j]`` = canonical index at position j); None = identity."""
        order = chunk_order(self.mode, layer, self.tokens, [ImageSpan(0, self.grid_h, self.grid_w)])
        return None if order is None else order.tolist()

    @classmethod
    def of(cls, visual_model) -> "ImageScan":
        lay = visual_model.image_layout
        return cls(lay.num_tokens, lay.grid_h, lay.grid_w, visual_model.vcfg.scan)


# ---- precision --------------------------------------------------------------------------------------------
class Fp32LayerNorm(nn.Module):
    """A LayerNorm computed in float32 (fp32 weights), output cast to ``out_dtype``."""

    def __init__(self, ln: nn.LayerNorm, out_dtype: torch.dtype):
        super().__init__()
        self.normalized_shape = tuple(ln.normalized_shape)
        self.eps = ln.eps
        self.out_dtype = out_dtype
        self.weight = nn.Parameter(ln.weight.detach().float().clone(), requires_grad=False)
        self.bias = nn.Parameter(ln.bias.detach().float().clone(), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x.float(), self.normalized_shape, self.weight, self.bias, self.eps).to(self.out_dtype)


def prepare_model(model: RWKVModel, dtype: str = "fp32") -> RWKVModel:
    """A copy of ``model`` (eval mode, CPU) in the export precision ``dtype`` (see the module docstring)."""
    if dtype not in EXPORT_DTYPES:
        raise ValueError(f"unknown export dtype {dtype!r}; choose one of {EXPORT_DTYPES}")
    m = copy.deepcopy(model).cpu().eval().float()
    for p in m.parameters():
        p.requires_grad_(False)
    if dtype == "fp32":
        return m
    keep = {}
    for i, block in enumerate(m.blocks):
        for rel in FP32_PARAMS[m.cfg.version]:
            name = f"blocks.{i}.{rel}"
            keep[name] = m.get_parameter(name).detach().clone()
    lnx = {n: (mod.weight.detach().clone(), mod.bias.detach().clone())
           for n, mod in m.named_modules() if isinstance(mod, nn.GroupNorm)}
    m.half()
    for name, value in keep.items():
        owner, attr = name.rsplit(".", 1)
        getattr(m.get_submodule(owner), attr).data = value
    for n, (w, b) in lnx.items():
        mod = m.get_submodule(n)
        mod.weight.data, mod.bias.data = w, b
    # LayerNorms in fp32; ln0 starts the residual stream, which stays fp32; the others feed fp16 matmuls.
    for i, block in enumerate(m.blocks):
        if i == 0:
            block.ln0 = Fp32LayerNorm(block.ln0, torch.float32)
        block.ln1 = Fp32LayerNorm(block.ln1, torch.float16)
        block.ln2 = Fp32LayerNorm(block.ln2, torch.float16)
    m.ln_out = Fp32LayerNorm(m.ln_out, torch.float16)
    return m


class _BlockCall(nn.Module):
    def __init__(self, block: nn.Module, seq: bool, impl: WkvImpl, chunk_size: int):
        super().__init__()
        self.block = block
        self.seq = seq
        self.impl = impl
        self.chunk_size = chunk_size

    def forward(self, x, shift_att, wkv, shift_ffn, v_first):
        return self.block.run(x, (shift_att, wkv, shift_ffn), v_first, self.seq, self.impl, self.chunk_size)


class BlockGraph(nn.Module):
    """One block with its weights as graph INPUTS, the unit that is traced.

    ``forward(x, shift_att, wkv, shift_ffn, [v_first], *weights) -> (x, shift_att, wkv, shift_ffn, [v_first])``
    runs ``Block.run`` of the model (the model's own code, through ``torch.func.functional_call``), without
    ``ln0`` (the graph applies ``ln0`` before the first block).  Because the weights are inputs, one trace
    serves every layer of the same kind: RWKV-6 has one kind, RWKV-7 two (layer 0 defines ``v_first``, the
    others take it).  The state tensors come in and go out as float32."""

    def __init__(self, block: nn.Module, version: str, seq: bool, impl: WkvImpl, chunk_size: int = DEFAULT_CHUNK):
        super().__init__()
        blk = copy.deepcopy(block)
        if hasattr(blk, "ln0"):
            del blk.ln0
        blk.layer_id = -1                                   # Block.run: no ln0 (TimeMix keeps its layer_id)
        self.call = _BlockCall(blk, seq, impl, chunk_size)
        self.param_names = [n for n, _ in self.call.named_parameters()]
        first = version == "x070" and blk.att.layer_id == 0
        self.v_in = version == "x070" and not first
        self.v_out = first

    @property
    def weight_names(self) -> list[str]:
        """Parameter names relative to the block (``att.key.weight`` ...), the template's weight inputs."""
        return [n[len("block."):] for n in self.param_names]

    def forward(self, x: Tensor, shift_att: Tensor, wkv: Tensor, shift_ffn: Tensor, *rest: Tensor):
        v_first, params = (rest[0], rest[1:]) if self.v_in else (None, rest)
        x, (sa, wkv, sf), v_first = torch.func.functional_call(
            self.call, dict(zip(self.param_names, params)), (x, shift_att, wkv, shift_ffn, v_first))
        out = (x, sa.float(), wkv.float(), sf.float())
        return out + ((v_first,) if self.v_out else ())


def _dynamo_export(module: nn.Module, args: tuple, input_names: list[str], output_names: list[str],
                   dynamic_shapes, opset: int):
    """``torch.onnx.export`` (dynamo) with the translations of the ``vrwkv`` custom ops (:mod:`.custom_nodes`):
    a module running the ``custom`` WKV implementation gets one ``vrwkv`` node per WKV, any other is unaffected."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return torch.onnx.export(module, args, None, dynamo=True, opset_version=trace_opset(opset),
                                 input_names=input_names,
                                 output_names=output_names, dynamic_shapes=dynamic_shapes, optimize=True,
                                 verbose=False, report=False, custom_translation_table=TRANSLATION_TABLE)


def check_opset(opset: int) -> None:
    if opset not in SUPPORTED_OPSETS:
        raise ValueError(f"opset {opset} not supported; choose one of {SUPPORTED_OPSETS}")


# ---- block templates --------------------------------------------------------------------------------------
class BlockTemplate:
    """A traced :class:`BlockGraph` as an ONNX graph, plus how its weight inputs are to be fed."""

    def __init__(self, proto, weight_names: list[str], transposed: set[str], v_in: bool, v_out: bool):
        self.proto = proto                      # onnx.ModelProto (inputs: state + weights, no initializers)
        self.weight_names = weight_names
        self.transposed = transposed            # weights the graph takes transposed ([in, out] for MatMul)
        self.v_in = v_in
        self.v_out = v_out


_TEMPLATE_CACHE: dict[tuple, BlockTemplate] = {}
_CACHE_MAX = 16


def _template_key(model: RWKVModel, layer: int, seq: bool, chunk_size: int, opset: int) -> tuple:
    c = model.cfg
    first = c.version == "x070" and layer == 0
    dtypes = tuple((n, str(p.dtype)) for n, p in model.blocks[layer].named_parameters() if not n.startswith("ln0"))
    ln_types = tuple(type(m).__name__ for n, m in model.blocks[layer].named_modules() if not n.startswith("ln0"))
    return (c.version, c.n_embd, c.head_size, c.dim_ffn, tuple(sorted(c.lora.items())), first, seq, chunk_size,
            opset, dtypes, ln_types, model.wkv_impl, torch.__version__)


def block_template(model: RWKVModel, layer: int, seq: bool, chunk_size: int = DEFAULT_CHUNK,
                   opset: int = DEFAULT_OPSET) -> BlockTemplate:
    """The traced template of ``model.blocks[layer]`` (cached per architecture, precision and mode: the
    weights are inputs, so a template serves any model of the same shapes)."""
    key = _template_key(model, layer, seq, chunk_size, opset)
    hit = _TEMPLATE_CACHE.get(key)
    if hit is not None:
        return hit
    import onnx.inliner

    cfg = model.cfg
    bg = BlockGraph(model.blocks[layer], cfg.version, seq, model.wkv, chunk_size).eval()
    B, T, C = 2, 37, cfg.n_embd
    gen = torch.Generator().manual_seed(0)
    xshape = (B, T, C) if seq else (B, C)
    x = 0.1 * torch.randn(xshape, generator=gen)
    st = State.zeros(1, B, C, cfg.n_head, cfg.head_size, torch.float32).layer(0)
    act = next(p.dtype for n, p in bg.call.named_parameters() if n.endswith("att.receptance.weight"))
    rest = []
    in_names = ["x", "shift_att", "wkv", "shift_ffn"]
    D = torch.export.Dim.DYNAMIC
    xdyn = {0: D, 1: D} if seq else {0: D}
    rest_dyn = []
    if bg.v_in:
        rest.append((0.1 * torch.randn(xshape, generator=gen)).to(act))
        in_names.append("v_first")
        rest_dyn.append(xdyn)
    params = [p.detach() for _, p in bg.call.named_parameters()]
    rest += params
    rest_dyn += [None] * len(params)
    in_names += bg.weight_names
    out_names = ["x_out", "shift_att_out", "wkv_out", "shift_ffn_out"] + (["v_first_out"] if bg.v_out else [])
    dynamic_shapes = (xdyn, {0: D}, {0: D}, {0: D}, tuple(rest_dyn))
    prog = _dynamo_export(bg, (x, *st, *rest), in_names, out_names, dynamic_shapes, opset)
    proto = prog.model_proto
    if len(proto.functions):
        proto = onnx.inliner.inline_local_functions(proto)
    _strip_trace_info(proto.graph)
    transposed = _feed_weights_transposed(proto.graph, set(bg.weight_names))
    tpl = BlockTemplate(proto, bg.weight_names, transposed, bg.v_in, bg.v_out)
    if len(_TEMPLATE_CACHE) >= _CACHE_MAX:
        _TEMPLATE_CACHE.pop(next(iter(_TEMPLATE_CACHE)))
    _TEMPLATE_CACHE[key] = tpl
    return tpl


def _strip_trace_info(graph) -> None:
    """Drops the exporter's per-node debug metadata (FX node text, stack traces with local file paths, name
    scopes): ~80 kB per layer that would be copied into every layer of every graph."""
    from onnx import AttributeProto

    for n in graph.node:
        del n.metadata_props[:]
        n.doc_string = ""
        for a in n.attribute:
            if a.type == AttributeProto.GRAPH:
                _strip_trace_info(a.g)
            elif a.type == AttributeProto.GRAPHS:
                for g in a.graphs:
                    _strip_trace_info(g)


def _subgraph_refs(graph) -> set[str]:
    """Every value name read by a node of a subgraph (Scan bodies) anywhere under ``graph``."""
    from onnx import AttributeProto

    refs: set[str] = set()

    def walk(g, nested: bool):
        for n in g.node:
            if nested:
                refs.update(n.input)
            for a in n.attribute:
                if a.type == AttributeProto.GRAPH:
                    walk(a.g, True)
                elif a.type == AttributeProto.GRAPHS:
                    for sg in a.graphs:
                        walk(sg, True)
    walk(graph, False)
    return refs


def _feed_weights_transposed(graph, weights: set[str]) -> set[str]:
    """Rewrites ``Transpose(W)`` / ``Gemm(x, W, transB=1)`` on 2-D weight inputs so that the weight is fed
    already transposed, and every bias-free ``Gemm`` as ``MatMul``: every weight matmul is then
    ``MatMul(x, W_input)``, so the assembled graph has its weights as direct MatMul initializers (what
    ``quantize_dynamic`` quantizes and what needs no runtime transpose).  Returns the transposed names."""
    from onnx import helper

    nested = _subgraph_refs(graph)
    uses: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            uses.setdefault(i, []).append(n)

    def attrs(n):
        return {a.name: helper.get_attribute_value(a) for a in n.attribute}

    def transposed_use(n, w) -> bool:
        a = attrs(n)
        if n.op_type == "Transpose":
            return list(a.get("perm", [1, 0])) == [1, 0]
        if n.op_type == "Gemm":
            return (list(n.input[1:2]) == [w] and n.input[0] != w and a.get("transB", 0) == 1
                    and a.get("transA", 0) == 0 and a.get("alpha", 1.0) == 1.0 and (len(n.input) < 3 or not n.input[2]))
        return False

    transposed: set[str] = set()
    for w in sorted(weights):
        us = uses.get(w, [])
        if w in nested or not us or not all(transposed_use(n, w) for n in us):
            continue
        transposed.add(w)
        for n in us:
            if n.op_type == "Transpose":
                out = n.output[0]
                for m in graph.node:
                    for k, name in enumerate(m.input):
                        if name == out:
                            m.input[k] = w
                for o in graph.output:
                    if o.name == out:
                        raise RuntimeError(f"template output {out} is a transposed weight")
                graph.node.remove(n)
            else:
                for a in list(n.attribute):
                    if a.name == "transB":
                        n.attribute.remove(a)
    # Bias-free Gemm (alpha = beta = 1, no transposes) is MatMul.
    for idx, n in enumerate(list(graph.node)):
        if n.op_type != "Gemm" or (len(n.input) > 2 and n.input[2]):
            continue
        a = attrs(n)
        if a.get("transA", 0) or a.get("transB", 0) or a.get("alpha", 1.0) != 1.0:
            continue
        pos = list(graph.node).index(n)
        graph.node.remove(n)
        graph.node.insert(pos, helper.make_node("MatMul", list(n.input[:2]), list(n.output), name=n.name))
    return transposed


def _template_function(tpl: BlockTemplate, name: str, domain: str):
    """The template as a model-local function (initializers become Constant nodes)."""
    from onnx import helper

    g = tpl.proto.graph
    nodes = [helper.make_node("Constant", [], [t.name], value=t) for t in g.initializer] + list(g.node)
    opsets = [helper.make_opsetid(o.domain, o.version) for o in tpl.proto.opset_import]
    return helper.make_function(domain, name, [i.name for i in g.input], [o.name for o in g.output], nodes,
                                opsets)


# ---- assembly ---------------------------------------------------------------------------------------------
_ONNX_DTYPES = {"int64": 7, "float32": 1, "float16": 10}


def _value_info(spec: dict):
    from onnx import helper

    return helper.make_tensor_value_info(spec["name"], _ONNX_DTYPES[spec["dtype"]], spec["shape"])


def _set_io_shapes(graph, io: dict) -> None:
    """Names the dynamic dimensions of a traced graph as ``io`` (:func:`graph_io`) does: ``batch`` / ``seq`` on
    the inputs and outputs, and every intermediate shape that uses the tracer's symbol for the same dimension
    (``s81`` ...) under the same name, so no tool shows a tracer's symbol.  A graph input or output that ``io``
    does not list, or a dynamic dimension it gives no name, is an error: a runtime would not know what it is."""
    from onnx import AttributeProto

    specs = {s["name"]: s for s in io["inputs"] + io["outputs"]}
    renamed: dict[str, str] = {}
    for v in list(graph.input) + list(graph.output):
        spec = specs.get(v.name)
        if spec is None:
            raise ValueError(f"graph {graph.name!r}: {v.name} is not among the expected inputs/outputs "
                             f"{sorted(specs)}")
        dims = v.type.tensor_type.shape.dim
        if len(dims) != len(spec["shape"]):
            raise ValueError(f"graph {graph.name!r}: {v.name} has rank {len(dims)}, expected shape {spec['shape']}")
        for d, want in zip(dims, spec["shape"]):
            if isinstance(want, str):
                if d.HasField("dim_param") and d.dim_param != want:
                    renamed[d.dim_param] = want
                d.Clear()
                d.dim_param = want
            elif not d.HasField("dim_value"):
                raise ValueError(f"graph {graph.name!r}: {v.name} has a dynamic dimension where {spec['shape']} "
                                 f"is static (the tracer did not specialise it)")

    def rename(g):
        for v in list(g.input) + list(g.output) + list(g.value_info):
            for d in v.type.tensor_type.shape.dim:
                if d.HasField("dim_param") and d.dim_param in renamed:
                    d.dim_param = renamed[d.dim_param]
        for n in g.node:
            for a in n.attribute:
                if a.type == AttributeProto.GRAPH:
                    rename(a.g)
                elif a.type == AttributeProto.GRAPHS:
                    for sg in a.graphs:
                        rename(sg)
    rename(graph)


def _np(t: Tensor):
    return t.detach().cpu().contiguous().numpy()


def assemble_graph(model: RWKVModel, kind: str, *, chunk_size: int = DEFAULT_CHUNK, opset: int = DEFAULT_OPSET,
                   progress=None, scan: Optional[ImageScan] = None):
    """Builds the ONNX graph ``kind`` of a :func:`prepared <prepare_model>` model: the traced block templates
    (one per layer kind) called once per layer with that layer's weights, between the embedding stem
    (``Gather`` + ``ln0``) and the head (``ln_out`` + ``MatMul``), then inlined into one flat graph of
    standard operators.  Computes exactly what the model computes for ``kind`` (``step`` for decode,
    ``forward(last_only=True)`` for prefill, :func:`~vrwkv_edge.visualrwkv.scan.scan_prefill` for one image).
    ``image_prefill`` (with ``scan``) adds, around each layer whose patch order is not the identity, a
    ``Gather`` of the hidden states (and of RWKV-7's ``v_first``) into that order and one back: the same
    templates, the layer-by-layer image scan of :func:`~vrwkv_edge.visualrwkv.scan.scan_prefill`.
    Returns ``(onnx.ModelProto, initializers)``: the graph without weights and the list of weight
    ``TensorProto`` s (attached by the caller, so that graphs over 2 GiB never pass through protobuf)."""
    import onnx.inliner
    from onnx import TensorProto, helper, numpy_helper

    check_opset(opset)
    if kind not in LM_GRAPH_KINDS and kind != "image_prefill":
        raise ValueError(f"assemble_graph builds {LM_GRAPH_KINDS + ('image_prefill',)}, not {kind!r}")
    if (kind == "image_prefill") != (scan is not None):
        raise ValueError("pass scan= for the image_prefill graph, and only for it")
    cfg = model.cfg
    io = graph_io(kind, cfg, {"tokens_per_image": scan.tokens, "pixel_inputs": []} if scan else None)
    seq = kind.startswith("prefill") or kind == "image_prefill"
    fp16 = model.emb.weight.dtype == torch.float16
    domain = "vrwkv_edge.block"
    nodes, inits, functions = [], [], {}

    def init(name: str, t: Tensor, transpose: bool = False):
        a = _np(t.t() if transpose else t)
        inits.append(numpy_helper.from_array(a, name))
        return name

    # stem: x0 = ln0(emb[ids]) or ln0(inputs_embeds)
    first = io["inputs"][0]["name"]
    if first == "input_ids":
        nodes.append(helper.make_node("Gather", [init("emb.weight", model.emb.weight), first], ["stem.x"], axis=0))
    else:
        nodes.append(helper.make_node("Cast", [first], ["stem.x"],
                                      to=TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT))
    ln0 = model.blocks[0].ln0
    if fp16:
        nodes.append(helper.make_node("Cast", ["stem.x"], ["stem.x32"], to=TensorProto.FLOAT))
    nodes.append(helper.make_node("LayerNormalization", ["stem.x32" if fp16 else "stem.x",
                                                         init("blocks.0.ln0.weight", ln0.weight.float()),
                                                         init("blocks.0.ln0.bias", ln0.bias.float())],
                                  ["x.0"], axis=-1, epsilon=float(ln0.eps)))
    # blocks
    x = "x.0"
    v_first = None
    for i in range(cfg.n_layer):
        tpl = block_template(model, i, seq, chunk_size, opset)
        fname = f"Block{'Seq' if seq else 'Step'}{'First' if tpl.v_out else ''}"
        if fname not in functions:
            functions[fname] = _template_function(tpl, fname, domain)
        params = dict(model.blocks[i].named_parameters())
        w_inputs = [init(f"blocks.{i}.{w}", params[w], transpose=w in tpl.transposed) for w in tpl.weight_names]
        order = scan.layer_order(i) if scan is not None else None
        x_in, v_in = x, v_first
        if order is not None:                 # this layer scans the patches in its own order
            perm = init(f"scan.order.{i}", torch.tensor(order, dtype=torch.int64))
            x_in = f"x.{i}.layer_order"
            nodes.append(helper.make_node("Gather", [x, perm], [x_in], axis=1))
            if tpl.v_in:
                v_in = f"v_first.scanned.{i}"
                nodes.append(helper.make_node("Gather", [v_first, perm], [v_in], axis=1))
        ins = [x_in] + [f"past_key_values.{i}.{f}" for f in STATE_FIELDS] + ([v_in] if tpl.v_in else []) + w_inputs
        x = f"x.{i + 1}"
        x_out = x if order is None else f"x.{i + 1}.layer_order_out"
        outs = [x_out] + [f"present.{i}.{f}" for f in STATE_FIELDS]
        if tpl.v_out:
            v_first = f"v_first.{i}"
            outs.append(v_first if order is None else f"v_first.{i}.scanned")
        nodes.append(helper.make_node(fname, ins, outs, domain=domain, name=f"blocks.{i}"))
        if order is not None:                 # back to the canonical order for the next layer
            inverse = [0] * len(order)
            for j, o in enumerate(order):
                inverse[o] = j
            inv = init(f"scan.inverse.{i}", torch.tensor(inverse))
            nodes.append(helper.make_node("Gather", [x_out, inv], [x], axis=1))
            if tpl.v_out:
                nodes.append(helper.make_node("Gather", [f"v_first.{i}.scanned", inv], [v_first], axis=1))
        if progress is not None:
            progress()
    # head: logits = head(ln_out(x_last))
    if seq:
        nodes += [helper.make_node("Constant", [], ["head.last_start"], value_ints=[-1]),
                  helper.make_node("Constant", [], ["head.last_end"], value_ints=[2 ** 62]),
                  helper.make_node("Constant", [], ["head.axis1"], value_ints=[1]),
                  helper.make_node("Slice", [x, "head.last_start", "head.last_end", "head.axis1"], ["head.x_last3"]),
                  helper.make_node("Squeeze", ["head.x_last3", "head.axis1"], ["head.x_last"])]
        x = "head.x_last"
    ln = model.ln_out
    nodes.append(helper.make_node("LayerNormalization", [x, init("ln_out.weight", ln.weight.float()),
                                                         init("ln_out.bias", ln.bias.float())],
                                  ["head.xn"], axis=-1, epsilon=float(ln.eps)))
    head_w = init("head.weight", model.head.weight, transpose=True)          # [C, V]
    if fp16:
        nodes += [helper.make_node("Cast", ["head.xn"], ["head.xn16"], to=TensorProto.FLOAT16),
                  helper.make_node("MatMul", ["head.xn16", head_w], ["head.logits16"]),
                  helper.make_node("Cast", ["head.logits16"], ["logits"], to=TensorProto.FLOAT)]
    else:
        nodes.append(helper.make_node("MatMul", ["head.xn", head_w], ["logits"]))

    graph = helper.make_graph(nodes, kind, [_value_info(s) for s in io["inputs"]],
                              [_value_info(s) for s in io["outputs"]])
    traced = trace_opset(opset)
    opsets = {o.domain: o.version for f in functions.values() for o in f.opset_import}
    opsets[""] = max(opsets.get("", traced), traced)
    opsets[domain] = 1
    model_proto = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
                                    functions=list(functions.values()), ir_version=10,
                                    producer_name="vrwkv_edge")
    got = opsets[""]
    if got != traced:
        raise RuntimeError(f"the traced block has opset {got}, {traced} was requested (exporter down-conversion?)")
    model_proto = onnx.inliner.inline_local_functions(model_proto)
    # the block domain is gone after inlining
    keep = [o for o in model_proto.opset_import if o.domain != domain]
    del model_proto.opset_import[:]
    model_proto.opset_import.extend(keep)
    if opset == 17:
        to_opset17(model_proto, inits, where=kind)
    set_lowest_ir_version(model_proto)
    return model_proto, inits
