"""VisualRWKV and Vision-RWKV export: the vision graph, the artefact's ``visual`` section, the classifier graph.

A VisualRWKV artefact holds the language-model graphs of :mod:`.graphs` plus two more:

    vision.onnx         pixel_values [batch, 3, S, S] (one input per tower image; v7.00's three towers take
                        pixel_values_dino / pixel_values_siglip / pixel_values_sam)
                        -> image_embeds [batch, T_img, C]: tower, pooling, projector (float32)
    image_prefill.onnx  image_embeds [batch, T_img, C] + state -> last logits + state: the image through the LM
                        layer by layer in each layer's patch order (v6.0's bidirectional scan, ...)

so a runtime answers an image question with: preprocess (described in the metadata: resize mode, size,
mean/std per input) -> vision -> image_prefill from the state after the text before the image -> prefill the
text after it -> decode.  The vision graph is traced from the model's own modules (HF CLIP, the DINOv2/SigLIP/
SAM ViTs, the Vision-RWKV backbone with its exact Bi-WKV in the scan form) with a dynamic batch; its float32
weights are kept in every export precision (fp16 / int8 apply to the language-model graphs).

:func:`export_vision_rwkv` writes a Vision-RWKV classifier (or backbone) as one ONNX file.
"""
from __future__ import annotations

import copy
import json
import os
import tempfile
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor, nn

from vrwkv_edge.fileio import PathLike
from vrwkv_edge.ops.custom_op_contract import DEFAULT_WKV_FLAVOUR, WKV_FLAVOURS
from vrwkv_edge.runtime.artefact import wkv_metadata
from vrwkv_edge.vision_rwkv import VisionRWKV, load_vision_rwkv
from vrwkv_edge.vision_rwkv.image import IMAGENET_MEAN_255, IMAGENET_STD_255, RESIZE_RATIO
from vrwkv_edge.visualrwkv.model import VisualRWKV, project, tower_features

from .custom_nodes import TRANSLATION_TABLE, check_custom_graph, expected_custom_nodes, use_custom_wkv
from .graphs import DEFAULT_OPSET, _set_io_shapes, _strip_trace_info, check_opset, graph_io, trace_opset
from .opset import set_lowest_ir_version, to_opset17

PIXEL_INPUT = "pixel_values"


def pixel_input_names(transform_keys) -> list[str]:
    keys = list(transform_keys)
    return [PIXEL_INPUT] if len(keys) == 1 else [f"{PIXEL_INPUT}_{k}" for k in keys]


def visual_metadata(model: VisualRWKV) -> dict:
    """The artefact's ``visual`` section: everything a runtime needs besides the graphs (JSON-able)."""
    lay = model.image_layout
    names = pixel_input_names(model.transforms)
    return {
        "config": asdict(model.vcfg),
        "version": model.vcfg.version,
        "tower": model.vcfg.tower,
        "scan": model.vcfg.scan,
        "image_position": model.vcfg.image_position,
        "tokens_per_image": lay.num_tokens,
        "layout": {"num_patches": lay.num_patches, "grid_h": lay.grid_h, "grid_w": lay.grid_w,
                   "num_extra": lay.num_extra},
        "pixel_inputs": [{"name": n, "transform": k, "mode": t.mode, "size": t.size, "crop": t.crop,
                          "mean": list(t.mean), "std": list(t.std)}
                         for n, (k, t) in zip(names, model.transforms.items())],
        "vision_dtype": "fp32",
    }


class VisionGraph(nn.Module):
    """The vision graph: ``(*pixels) -> image_embeds [B, T_img, C]`` float32 (a float32 copy of the tower and
    projector; the pixel tensors in the order of :func:`pixel_input_names`)."""

    def __init__(self, model: VisualRWKV):
        super().__init__()
        self.vit = copy.deepcopy(model.vit).float().eval()
        self.proj = copy.deepcopy(model.proj).float().eval()
        self.vcfg = model.vcfg
        self.keys = list(model.transforms)

    def forward(self, *pixels: Tensor) -> Tensor:
        p = pixels[0] if len(self.keys) == 1 else dict(zip(self.keys, pixels))
        return project(self.proj, tower_features(self.vit, self.vcfg, p)).float()


def _check_wkv_flavour(wkv: str) -> None:
    if wkv not in WKV_FLAVOURS:
        raise ValueError(f"wkv must be one of {WKV_FLAVOURS}, got {wkv!r}")


def _trace(module: nn.Module, args: tuple, io: dict, opset: int):
    """Traces ``module`` with a dynamic batch (dimension 0 of every input) and the ``vrwkv`` custom-op
    translations; the inputs and outputs are named, and their dimensions named, as ``io`` says."""
    D = torch.export.Dim.DYNAMIC
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(module, args, None, dynamo=True, opset_version=trace_opset(opset),
                                 input_names=[i["name"] for i in io["inputs"]],
                                 output_names=[o["name"] for o in io["outputs"]],
                                 dynamic_shapes=(tuple({0: D} for _ in args),),
                                 optimize=True, verbose=False, report=False,
                                 custom_translation_table=TRANSLATION_TABLE)
    proto = prog.model_proto
    _strip_trace_info(proto.graph)
    _set_io_shapes(proto.graph, io)
    got = {o.domain: o.version for o in proto.opset_import}.get("", opset)
    if got != trace_opset(opset):
        raise RuntimeError(f"the traced vision graph has opset {got}, {trace_opset(opset)} was requested")
    if opset == 17:
        to_opset17(proto, where="vision")
    set_lowest_ir_version(proto)
    return proto


def example_pixels(model: VisualRWKV, batch: int = 2) -> tuple[Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    return tuple(torch.randn(batch, 3, t.size, t.size, generator=gen) for t in model.transforms.values())


def export_vision_graph(model: VisualRWKV, opset: int = DEFAULT_OPSET, visual: Optional[dict] = None,
                        wkv: str = DEFAULT_WKV_FLAVOUR):
    """The ONNX ``vision`` graph of a VisualRWKV, dynamic batch: ``(onnx.ModelProto, initializers)``, the
    weights apart (as :func:`~.graphs.assemble_graph` returns them), so that the artefact writer can put a
    tower over 2 GiB (v7.00's three towers hold ~0.8B parameters) into external data.  ``wkv="custom"``: a
    Vision-RWKV tower's Bi-WKV is one ``vrwkv`` node per layer (other towers have no WKV)."""
    check_opset(opset)
    _check_wkv_flavour(wkv)
    visual = visual or visual_metadata(model)
    io = graph_io("vision", model.cfg, visual)
    graph = VisionGraph(model)
    if wkv == "custom":
        use_custom_wkv(graph)
    proto = _trace(graph, example_pixels(model), io, opset)
    inits = list(proto.graph.initializer)
    del proto.graph.initializer[:]
    return proto, inits


# ---- Vision-RWKV classifier ---------------------------------------------------------------------------------
class _VRWKVGraph(nn.Module):
    def __init__(self, model, output: str):
        super().__init__()
        self.model = model
        self.output = output

    def forward(self, *pixels: Tensor) -> Tensor:        # varargs like VisionGraph: one tracing helper
        if self.output == "logits":
            return self.model(pixels[0])
        return self.model.forward_tokens(pixels[0])


def classifier_io(model: VisionRWKV, image_size: int, output: str) -> dict:
    """Inputs and outputs of a Vision-RWKV classifier graph (as :func:`graph_io` describes an artefact's)."""
    cfg = model.config
    tokens = -(-image_size // cfg.patch_size) ** 2            # the patch embedding pads to a multiple of the patch
    shape = (["batch", cfg.num_classes] if output == "logits" else ["batch", tokens, cfg.embed_dims])
    return {"inputs": [{"name": PIXEL_INPUT, "dtype": "float32", "shape": ["batch", 3, image_size, image_size]}],
            "outputs": [{"name": output, "dtype": "float32", "shape": shape}]}


def export_vision_rwkv(model_or_ckpt, out_path: PathLike, *, image_size: Optional[int] = None,
                       output: str = "logits", opset: int = DEFAULT_OPSET, overwrite: bool = False,
                       wkv: str = DEFAULT_WKV_FLAVOUR) -> Path:
    """Writes a Vision-RWKV model (a :class:`~vrwkv_edge.vision_rwkv.VisionRWKV` or an official checkpoint path) as
    one ONNX file: ``pixel_values [batch, 3, S, S]`` -> ``logits [batch, classes]`` (``output="logits"``) or
    ``tokens [batch, T, C]`` (``output="tokens"``, the backbone after its final norm).  ``S`` = ``image_size``
    (default: the model's test size); the batch is dynamic.  The Bi-WKV is exported in its exact scan form.
    The file is written to a temporary name and renamed (never half-written); metadata in ``metadata_props``
    (with the ``wkv`` flavour).  ``wkv="custom"``: each layer's Bi-WKV is one ``vrwkv`` node (``BiWKV`` with the
    model's ``semantics``, or ``BiWKV6``), see ``export/README.md``."""
    import onnx

    check_opset(opset)
    _check_wkv_flavour(wkv)
    if output not in ("logits", "tokens"):
        raise ValueError(f"output must be 'logits' or 'tokens', got {output!r}")
    model = model_or_ckpt if isinstance(model_or_ckpt, VisionRWKV) else load_vision_rwkv(model_or_ckpt)
    if output == "logits" and model.head is None:
        raise ValueError("export_vision_rwkv: the model has no classification head; use output='tokens'")
    out = Path(out_path)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    size = int(image_size or model.config.test_size)
    model = copy.deepcopy(model).float().eval()
    if wkv == "custom":
        use_custom_wkv(model)
    gen = torch.Generator().manual_seed(0)
    proto = _trace(_VRWKVGraph(model, output), (torch.randn(2, 3, size, size, generator=gen),),
                   classifier_io(model, size, output), opset)
    if wkv == "custom":
        check_custom_graph(proto, str(out), expected_custom_nodes(model, "classifier"))
    meta = {"format": "vrwkv_edge.vision_rwkv.onnx", "config": asdict(model.config), "image_size": size,
            "output": output, "wkv": wkv_metadata(wkv), "preprocess": {"resize_short_side": int(round(size * RESIZE_RATIO)),
                                             "center_crop": size, "mean": list(IMAGENET_MEAN_255),
                                             "std": list(IMAGENET_STD_255), "scale": "0..255 pixel values"}}
    proto.metadata_props.add(key="vrwkv_edge.metadata", value=json.dumps(meta, sort_keys=True))
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    os.close(fd)
    try:
        onnx.save_model(proto, tmp)
        onnx.checker.check_model(tmp)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out
