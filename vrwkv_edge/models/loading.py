"""RWKV-6 / RWKV-7 language models from official-layout state dicts (the version is read from the keys)."""
from __future__ import annotations

from typing import Mapping, Union

import torch
from torch import Tensor

from ..checkpoint import CheckpointError, cast_weights, check_finite, fit_shapes, validate_tensors
from ..config import RWKVConfig
from .base import RWKVModel
from .rwkv6 import RWKV6
from .rwkv7 import RWKV7

MODEL_CLASSES = {"x060": RWKV6, "x070": RWKV7}
# The language model of a VisualRWKV checkpoint is stored under this prefix.
VISUAL_LM_PREFIX = "rwkv."
# Keys some RWKV-LM x070 checkpoints carry although layer 0 never uses them (it defines v_first).
UNUSED_X070_KEYS = ("blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2")


def build_model(cfg: RWKVConfig) -> RWKVModel:
    """An uninitialised model of ``cfg`` (load weights into it, or call ``init_random_``)."""
    return MODEL_CLASSES[cfg.version](cfg)


def language_model_part(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The RWKV language-model keys: the ``rwkv.``-prefixed ones of a VisualRWKV file, else all keys."""
    if any(k.startswith(VISUAL_LM_PREFIX) for k in sd):
        return {k[len(VISUAL_LM_PREFIX):]: v for k, v in sd.items() if k.startswith(VISUAL_LM_PREFIX)}
    return dict(sd)


def detect_version(sd: Mapping[str, Tensor], source: str = "checkpoint") -> str:
    if "blocks.0.att.time_maa_x" in sd:
        return "x060"
    if "blocks.0.att.r_k" in sd:
        return "x070"
    hints = [k for k in sd if k.startswith("blocks.0.att.")][:8]
    raise CheckpointError(
        f"{source}: unknown key layout: neither RWKV-6 (blocks.0.att.time_maa_x) nor RWKV-7 (blocks.0.att.r_k); "
        f"found {hints or sorted(sd)[:8]}")


def model_from_state_dict(sd: Mapping[str, Tensor], dtype: torch.dtype = torch.float32,
                          device: Union[str, torch.device] = "cpu", source: str = "state dict") -> RWKVModel:
    """Builds the right model class for an official-layout state dict and loads it (strict).  Keys, sizes and
    layer indices are checked before the (meta-device) model is built, so nothing is allocated for a bad file."""
    validate_tensors(sd, source)
    sd = language_model_part(sd)
    version = detect_version(sd, source)
    if version == "x070":
        sd = {k: v for k, v in sd.items() if k not in UNUSED_X070_KEYS}
    try:
        cfg = RWKVConfig.from_state_dict(sd, version, source)
    except (KeyError, ValueError) as e:
        raise CheckpointError(str(e).strip('"')) from e
    with torch.device("meta"):
        model = MODEL_CLASSES[version](cfg)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    sd = fit_shapes(sd, expected, source)
    check_finite(sd, source)
    model.load_state_dict(cast_weights(sd, dtype, device, source), strict=True, assign=True)
    return model.eval()
