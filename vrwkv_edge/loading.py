"""``load_model``: any checkpoint the package understands, dispatched by its key layout.

* an RWKV-6 / RWKV-7 language model (``blocks.0.att.time_maa_x`` / ``blocks.0.att.r_k``) -> :class:`RWKVModel`;
* a VisualRWKV (``vit.*`` tower keys, or either half of a ``*_rwkv`` / ``*_visual`` pair) -> :class:`VisualRWKV`;
* a Vision-RWKV classifier or backbone (``backbone.patch_embed.projection.weight``) -> :class:`VisionRWKV`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import torch

from .checkpoint import read_state_dict, unwrap_state_dict
from .dtypes import parse_dtype
from .fileio import PathLike
from .models import RWKVModel, model_from_state_dict
from .vision_rwkv import VisionRWKV, is_vision_rwkv_state_dict, load_vision_rwkv
from .visualrwkv import VisualRWKV, is_visual_state_dict, load_visual_model

AnyModel = Union[RWKVModel, VisualRWKV, VisionRWKV]


def load_model(path: PathLike, dtype: Union[torch.dtype, str] = torch.float32,
               device: Union[str, torch.device] = "cpu", *, wkv_impl: Optional[str] = None) -> AnyModel:
    """Loads a checkpoint (``.pth`` with ``weights_only=True``, or ``.safetensors``) as the model its keys
    describe (see the module docstring); the language model's version and every size are read from the weights.

    ``dtype``: float32 (default), bfloat16 or float16 for the weights; the WKV state and decays stay float32.
    ``wkv_impl``: the language model's WKV implementation (``"torch"`` by default, ``"native"`` once built;
    :mod:`vrwkv_edge.ops.dispatch`)."""
    dtype = parse_dtype(dtype)
    path = Path(path)
    sd = read_state_dict(path)
    if is_visual_state_dict(sd, path):
        model = load_visual_model(path, dtype=dtype, device=device, state_dict=sd)
    elif is_vision_rwkv_state_dict(unwrap_state_dict(sd, str(path), strip_ddp_prefix=True)):
        if wkv_impl is not None:
            raise ValueError(f"{path}: a Vision-RWKV checkpoint has no language model; wkv_impl does not apply "
                             f"(choose its Bi-WKV form with VisionRWKV.set_wkv_impl)")
        return load_vision_rwkv(sd, dtype=dtype, device=device, source=str(path))
    else:
        model = model_from_state_dict(sd, dtype=dtype, device=device, source=str(path))
    if wkv_impl is not None:
        model.set_wkv_impl(wkv_impl)
    return model
