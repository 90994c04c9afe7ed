"""Checkpoint files: safe reading, key/shape fitting and atomic saving.  The ground floor: no model is imported.

Accepted files: ``.pth`` / ``.pt`` / ``.bin`` (loaded with ``weights_only=True``, memory-mapped when the file is in
the zip format, so no pickled code ever runs) and ``.safetensors``.  Which model a state dict holds is decided one
floor up, in :mod:`vrwkv_edge.loading`.
"""
from __future__ import annotations

import hashlib
import pickle
import re
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
    sd = unwrap_state_dict(sd, str(path))
    validate_tensors(sd, str(path))
    return sd


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


def validate_tensors(sd: Mapping, source: str) -> None:
    """Refuses, before anything is allocated from them, entries no model weight can be: a non-string key, a
    tensor without data (meta), a sparse or quantized one, an empty one, or a view that claims more elements
    than its storage holds (a stride-0 expanded tensor: a 3 MB file could otherwise ask for 16 GiB the first
    time it is made dense).  Every later allocation is then bounded by the bytes the file really holds."""
    for key, t in sd.items():
        if not isinstance(key, str):
            raise CheckpointError(f"{source}: key {key!r} is a {type(key).__name__}, expected a string")
        if not isinstance(t, Tensor):
            raise CheckpointError(f"{source}: {key} is a {type(t).__name__}, expected a tensor")
        if t.device.type == "meta":
            raise CheckpointError(f"{source}: {key} is a meta tensor (shape only, no data)")
        if t.layout != torch.strided or t.is_quantized:
            raise CheckpointError(f"{source}: {key} has layout {t.layout}{' (quantized)' if t.is_quantized else ''}; "
                                  f"only dense tensors are weights")
        if t.numel() == 0:
            raise CheckpointError(f"{source}: {key} is empty (shape {tuple(t.shape)})")
        dense = t.numel() * t.element_size()
        held = t.untyped_storage().nbytes()
        if dense > held:
            raise CheckpointError(f"{source}: {key} has shape {tuple(t.shape)} ({dense:,} bytes) over a storage of "
                                  f"{held:,} bytes (an expanded or overlapping view); refusing it")


def check_finite(sd: Mapping[str, Tensor], source: str) -> None:
    """Refuses NaN or inf weights, naming the keys (one element-wise pass, no copy larger than a tensor)."""
    bad = [k for k, v in sd.items() if v.dtype.is_floating_point and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{source}: non-finite values (NaN or inf) in {bad[:8]}")


def cast_weights(sd: Mapping[str, Tensor], dtype: torch.dtype, device, source: str) -> dict[str, Tensor]:
    """The weights in ``dtype`` on ``device``; refuses a weight whose values overflow ``dtype`` (fp32 weights
    beyond 65504 would become inf in fp16), naming the key."""
    limit = torch.finfo(dtype).max
    out = {}
    for k, v in sd.items():
        if v.is_floating_point() and torch.finfo(v.dtype).max > limit and bool(v.abs().amax() > limit):
            raise CheckpointError(f"{source}: {k} has values up to {float(v.abs().amax()):.4g}, beyond {dtype}'s "
                                  f"range ({limit:.4g}); load it in a wider dtype")
        out[k] = v.to(device=device, dtype=dtype)
    return out


def layer_count(keys, pattern: str, source: str) -> int:
    """The number of layers a state dict holds under ``pattern`` (a regex whose group 1 is the layer index);
    the indices must be exactly 0 .. n-1, so a stray ``blocks.100000.*`` key cannot make a 100,001-layer model."""
    found = {}
    for key in keys:
        m = re.match(pattern, key)
        if m:
            found.setdefault(int(m.group(1)), key)
    if not found:
        return 0
    n = max(found) + 1
    if len(found) != n:                  # the first missing index, without building range(n) (n may be 10**9)
        gap = next(i for i, layer in enumerate(sorted(found)) if i != layer)
        raise CheckpointError(f"{source}: layer indices are not contiguous: layer {gap} is missing but "
                              f"{found[max(found)]!r} exists")
    return n


def _verify_zip_crc(path: Path) -> None:
    """The memory-mapped load never reads the CRC-32 of a zip member, so a bit flip in the weights would load
    silently: check every member's CRC first (one sequential read of the file, a small cost next to loading)."""
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (corrupt or truncated?): {e}") from e
    if bad is not None:
        raise CheckpointError(f"{path}: member {bad!r} fails its CRC-32 check: the file is corrupt")


def _torch_load(path: Path):
    is_zip = zipfile.is_zipfile(path)
    if is_zip:
        _verify_zip_crc(path)
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


def checkpoint_source(path: PathLike) -> dict:
    """Provenance of a checkpoint for export metadata: file name, size and SHA-256 (one read of the file)."""
    path = Path(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": h.hexdigest()}


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
