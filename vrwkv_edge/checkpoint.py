"""Loading and saving checkpoints safely, with errors that name the file and the key at fault.

Accepted files:
* official BlinkDL RWKV-LM ``.pth`` for x060 and x070 (loaded with ``weights_only=True``, memory-mapped when the
  file is in the zip format, so no pickled code ever runs);
* ``.safetensors`` with the same key names;
* a VisualRWKV checkpoint: its language model is the ``rwkv.``-prefixed part (the rest is for
  :mod:`vrwkv_edge.visual`).

The version is detected from the keys: ``att.time_maa_x`` means x060, ``att.r_k`` means x070.
"""
from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Mapping, Optional, Union

import torch
from torch import Tensor

from .config import RWKVConfig
from .models import MODEL_CLASSES, RWKVModel

PathLike = Union[str, os.PathLike]
VISUAL_LM_PREFIX = "rwkv."
# Keys some RWKV-LM x070 checkpoints carry although layer 0 never uses them (it defines v_first).
UNUSED_X070_KEYS = ("blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the key or reason."""


def read_state_dict(path: PathLike) -> dict[str, Tensor]:
    """Reads every tensor of a ``.pth``/``.pt``/``.bin`` (torch zip or legacy) or ``.safetensors`` file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, expected a checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: file is empty")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            sd = load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{path}: not a readable safetensors file (corrupt or truncated?): {e}") from e
    else:
        sd = _torch_load(path)
    if not isinstance(sd, Mapping):
        raise CheckpointError(f"{path}: holds a {type(sd).__name__}, expected a dict of tensors (a state dict)")
    for wrapper in ("state_dict", "model", "module"):   # trainer / DeepSpeed checkpoints wrap the weights
        if wrapper in sd and isinstance(sd[wrapper], Mapping):
            sd = sd[wrapper]
            break
    bad = [k for k, v in sd.items() if not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"{path}: entries that are not tensors: {bad[:5]}")
    return dict(sd)


def _torch_load(path: Path):
    is_zip = zipfile.is_zipfile(path)
    try:
        # mmap avoids a second copy of large weights; it needs the zip format.
        return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: refused to load: it needs pickled code or is not a checkpoint "
                              f"(only plain tensors are loaded, weights_only=True): {e}") from e
    except Exception as e:  # the unpickler raises many types (KeyError, RuntimeError, EOFError, ...) on bad bytes
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (corrupt or truncated?): {e}") from e


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


def fit_shapes(sd: dict[str, Tensor], expected: Mapping[str, torch.Size], source: str) -> dict[str, Tensor]:
    """Checks keys and shapes against the model; accepts squeezed (C,) forms of (1, 1, C) vectors."""
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{source}: key layout does not match the model: missing keys {missing[:12]}"
                              f"{' ...' if len(missing) > 12 else ''}; unexpected keys {unexpected[:12]}"
                              f"{' ...' if len(unexpected) > 12 else ''}")
    out = {}
    for k, want in expected.items():
        t = sd[k]
        if t.shape != want:
            if t.numel() == want.numel() and [d for d in t.shape if d != 1] == [d for d in want if d != 1]:
                t = t.reshape(want)
            else:
                raise CheckpointError(f"{source}: {k} has shape {tuple(t.shape)}, expected {tuple(want)} "
                                      f"(inconsistent with the sizes read from the other weights)")
        if not t.is_floating_point():
            raise CheckpointError(f"{source}: {k} has dtype {t.dtype}, expected a floating-point tensor")
        out[k] = t
    return out


def model_from_state_dict(sd: Mapping[str, Tensor], dtype: torch.dtype = torch.float32,
                          device: Union[str, torch.device] = "cpu", source: str = "state dict") -> RWKVModel:
    """Builds the right model class for an official-layout state dict and loads it (strict)."""
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
    bad = [k for k, v in sd.items() if v.dtype.is_floating_point and not torch.isfinite(v.float()).all()]
    if bad:
        raise CheckpointError(f"{source}: non-finite values (NaN or inf) in {bad[:8]}")
    model.load_state_dict({k: v.to(device=device, dtype=dtype) for k, v in sd.items()}, strict=True, assign=True)
    return model.eval()


def load_model(path: PathLike, dtype: Union[torch.dtype, str] = torch.float32,
               device: Union[str, torch.device] = "cpu"):
    """Loads an RWKV-6/7 language model (version auto-detected) from a checkpoint; for a VisualRWKV
    checkpoint (full file, or either half of a ``*_rwkv``/``*_visual`` pair) a
    :class:`vrwkv_edge.visual.VisualRWKV` (same LM API; its LM is ``.rwkv``).

    ``dtype``: float32 (default), bfloat16 or float16 for the weights; the WKV state and decays stay float32."""
    dtype = parse_dtype(dtype)
    path = Path(path)
    sd = read_state_dict(path)
    from .visual import is_visual_state_dict, load_visual_model   # VisualRWKV files (full or split pair)
    if is_visual_state_dict(sd, path):
        return load_visual_model(path, dtype=dtype, device=device, state_dict=sd)
    return model_from_state_dict(sd, dtype=dtype, device=device, source=str(path))


DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}


def parse_dtype(dtype: Union[torch.dtype, str]) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}") from None


def save_checkpoint(state_dict: Mapping[str, Tensor], path: PathLike) -> Path:
    """Writes a ``.pth`` (plain dict of tensors) or ``.safetensors`` atomically: temp file, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file
            save_file(sd, tmp)
        else:
            torch.save(sd, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
