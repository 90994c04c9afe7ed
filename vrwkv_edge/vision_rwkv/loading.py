"""Vision-RWKV checkpoints: official mmcls / InternImage layouts, the architecture read from the shapes."""
from __future__ import annotations

import math
from dataclasses import fields
from typing import Mapping, Optional, Union

import torch
from torch import Tensor

from ..checkpoint import (CheckpointError, cast_weights, check_finite, fit_shapes, layer_count, read_state_dict,
                          unwrap_state_dict, validate_tensors)
from ..dtypes import parse_dtype
from ..fileio import PathLike
from .backbone import VRWKV_PRESETS, VisionRWKV, VRWKVConfig, get_config

# The key every Vision-RWKV checkpoint has (classifier layout, and without ``backbone.`` for a bare backbone).
PATCH_EMBED_KEY = "backbone.patch_embed.projection.weight"


def is_vision_rwkv_state_dict(sd: Mapping[str, Tensor]) -> bool:
    """True for a Vision-RWKV classifier or backbone checkpoint (after :func:`unwrap_state_dict`)."""
    return any(k.endswith(PATCH_EMBED_KEY[len("backbone."):]) and not k.startswith("vit.") for k in sd)


def official_state_dict(sd: Mapping[str, Tensor], source: str = "state dict") -> dict[str, Tensor]:
    """Keys as the classifier names them (``backbone.*``, ``head.*``). Accepts an mmcv/InternImage container
    (``state_dict`` / ``model`` / ``module``), a ``module.`` (DDP) prefix, and a bare backbone (dense-task
    checkpoints loaded with ``revise_keys=[('^backbone.', '')]``)."""
    sd = unwrap_state_dict(sd, source, strip_ddp_prefix=True)
    validate_tensors(sd, source)
    if "backbone.patch_embed.projection.weight" in sd:
        return dict(sd)
    if "patch_embed.projection.weight" in sd:
        return {"backbone." + k: v for k, v in sd.items()}
    raise CheckpointError(f"{source}: not a Vision-RWKV checkpoint: no 'backbone.patch_embed.projection.weight' "
                          f"or 'patch_embed.projection.weight'; first keys {sorted(sd)[:8]}")


STRUCTURE = ("variant", "embed_dims", "depth", "patch_size", "in_channels", "key_norm", "hidden_rate",
             "head_size", "mix_lora", "decay_lora")


def config_from_state_dict(sd: Mapping[str, Tensor], arch: Union[str, VRWKVConfig, None] = None,
                           source: str = "state dict") -> VRWKVConfig:
    """Reads the architecture from the shapes of an official-layout state dict (see :func:`official_state_dict`).

    Without ``arch`` the preset with the same variant, width and depth supplies what shapes cannot tell
    (post_norm); with ``arch`` every structural field must agree.  The position grid, the head and the
    presence of layer scale always come from the checkpoint."""
    def shape(key, rank=None):
        if key not in sd:
            raise CheckpointError(f"{source}: missing key {key!r} needed to read the model size")
        s = tuple(sd[key].shape)
        if rank is not None and len(s) != rank:
            raise CheckpointError(f"{source}: {key} has shape {s}, expected {rank} dimensions")
        return s

    b = "backbone.layers.0."
    C, in_ch, p, _ = shape("backbone.patch_embed.projection.weight", 4)
    depth = layer_count(sd, r"backbone\.layers\.(\d+)\.", source)
    if not depth:
        raise CheckpointError(f"{source}: no 'backbone.layers.*' keys")
    n_pos = shape("backbone.pos_embed", 3)[1]
    grid = math.isqrt(n_pos)
    if grid * grid != n_pos:
        raise CheckpointError(f"{source}: backbone.pos_embed has {n_pos} positions, not a square grid")
    found = dict(variant="vrwkv6" if b + "att.time_maa_x" in sd else "vrwkv", embed_dims=C, depth=depth,
                 patch_size=p, in_channels=in_ch, img_size=grid * p, key_norm=b + "ffn.key_norm.weight" in sd,
                 hidden_rate=shape(b + "ffn.key.weight", 2)[0] // C)
    if found["variant"] == "vrwkv6":
        found.update(head_size=shape(b + "att.time_faaaa", 2)[1], mix_lora=shape(b + "att.time_maa_w2", 3)[1],
                     decay_lora=shape(b + "att.time_decay_w1", 2)[1])
    if "head.fc.weight" in sd:
        found.update(num_classes=shape("head.fc.weight", 2)[0], head_hidden=None)
    elif "head.0.weight" in sd:
        found.update(num_classes=shape("head.2.weight", 2)[0], head_hidden=shape("head.0.weight", 2)[0])
    else:
        found.update(num_classes=0, head_hidden=None)

    if arch is None:
        match = [n for n, c in VRWKV_PRESETS.items()
                 if (c.variant, c.embed_dims, c.depth) == (found["variant"], C, found["depth"])]
        if not match:
            raise CheckpointError(f"{source}: no preset has variant {found['variant']}, embed_dims {C}, depth "
                                  f"{found['depth']}; pass arch= (a preset name or a VRWKVConfig)")
        base = VRWKV_PRESETS[match[0]]
    else:
        base = get_config(arch)
        diffs = [f"{f} {found[f]!r} in the checkpoint vs {getattr(base, f)!r}" for f in STRUCTURE
                 if f in found and found[f] != getattr(base, f)]
        if diffs:
            raise CheckpointError(f"{source}: checkpoint does not match arch {arch if isinstance(arch, str) else 'config'}: "
                                  + "; ".join(diffs))
    has_gamma = b + "gamma1" in sd
    init_values = (base.init_values if base.init_values is not None else 1.0) if has_gamma else None
    defaults = {f.name: getattr(base, f.name) for f in fields(VRWKVConfig)}
    return VRWKVConfig(**{**defaults, **found, "init_values": init_values})


def load_vision_rwkv(src: Union[PathLike, Mapping[str, Tensor]], arch: Union[str, VRWKVConfig, None] = None, *,
                     dtype: Union[torch.dtype, str] = torch.float32, device: Union[str, torch.device] = "cpu",
                     source: Optional[str] = None) -> VisionRWKV:
    """Loads an official Vision-RWKV checkpoint (mmcls ``.pth`` with ``backbone.``/``head.`` keys, the
    InternImage VRWKV-L file, a bare backbone, or ``.safetensors``) into a :class:`VisionRWKV` in eval mode.

    ``.pth`` files load with ``weights_only=True``, memory-mapped when in the zip format, and the weights are
    assigned without a copy when dtype and device already match.  ``arch`` (preset name or config) is checked
    against the checkpoint; without it the architecture is inferred.  Errors name the file and the keys."""
    source = source or ("state dict" if isinstance(src, Mapping) else str(src))
    sd = official_state_dict(src if isinstance(src, Mapping) else read_state_dict(src), source)
    cfg = config_from_state_dict(sd, arch, source)
    with torch.device("meta"):
        model = VisionRWKV(cfg)
    sd = fit_shapes(sd, {k: v.shape for k, v in model.state_dict().items()}, source)
    check_finite(sd, source)
    dtype = parse_dtype(dtype)
    model.load_state_dict(cast_weights(sd, dtype, device, source), strict=True, assign=True)
    return model.eval()
