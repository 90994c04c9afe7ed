"""Checkpoint files: safe reading, key/shape fitting and atomic saving.  The ground floor: no model is imported.

Accepted files: ``.pth`` / ``.pt`` / ``.bin`` (loaded with ``weights_only=True``, memory-mapped when the file is in
the zip format, so no pickled code ever runs) and ``.safetensors``.  Which model a state dict holds is decided one
floor up, in :mod:`vrwkv_edge.loading`.
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Mapping

import safetensors
import safetensors.torch
import torch
from torch import Tensor

from .fileio import PathLike, atomic_write

# Containers that trainers (Lightning, DeepSpeed, mmcv) wrap the weights in.
STATE_DICT_CONTAINERS = ("state_dict", "model", "module")


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
        try:
            sd = safetensors.torch.load_file(str(path))
        except (safetensors.SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{path}: not a readable safetensors file (corrupt or truncated?): {e}") from e
    else:
        sd = _torch_load(path)
    if not isinstance(sd, Mapping):
        raise CheckpointError(f"{path}: holds a {type(sd).__name__}, expected a dict of tensors (a state dict)")
    return unwrap_state_dict(sd, str(path))


def unwrap_state_dict(sd: Mapping, source: str, strip_ddp_prefix: bool = False) -> dict[str, Tensor]:
    """The weights inside a trainer's container (``state_dict`` / ``model`` / ``module``), optionally without
    a DDP ``module.`` prefix; every value must be a tensor."""
    for container in STATE_DICT_CONTAINERS:
        if isinstance(sd.get(container), Mapping):
            sd = sd[container]
            break
    bad = [k for k, v in sd.items() if not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"{source}: entries that are not tensors: {bad[:5]}")
    if strip_ddp_prefix and sd and all(k.startswith("module.") for k in sd):
        return {k[len("module."):]: v for k, v in sd.items()}
    return dict(sd)


def check_finite(sd: Mapping[str, Tensor], source: str) -> None:
    """Refuses NaN or inf weights, naming the keys."""
    bad = [k for k, v in sd.items() if v.dtype.is_floating_point and not torch.isfinite(v.float()).all()]
    if bad:
        raise CheckpointError(f"{source}: non-finite values (NaN or inf) in {bad[:8]}")


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


def save_checkpoint(state_dict: Mapping[str, Tensor], path: PathLike) -> Path:
    """Writes a ``.pth`` (plain dict of tensors) or ``.safetensors`` atomically: temp file, then rename."""
    path = Path(path)
    sd = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    with atomic_write(path, suffix=path.suffix) as tmp:
        if path.suffix == ".safetensors":
            safetensors.torch.save_file(sd, tmp)
        else:
            torch.save(sd, tmp)
    return path
