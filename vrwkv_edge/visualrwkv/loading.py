"""VisualRWKV checkpoints: detection, loading (three layouts), random construction and saving.

Layouts (spec §7.6):

* **full v6**: ``rwkv.*`` (the LM), ``proj.weight`` [C, 1024], ``vit.vision_model.*`` (HF CLIP names);
* **full v7**: ``rwkv.*``, ``proj.gate.weight`` / ``proj.o_proj.weight`` / ``proj.ln_v.*`` (or a linear
  ``proj.weight`` [C, 3200]), ``vit.dino_featurizer.*``, ``vit.siglip_featurizer.*``, ``vit.sam_featurizer.*``;
* **Vision-RWKV tower** (vrwkv_edge): ``rwkv.*``, ``proj.*`` (linear or mlp), ``vit.backbone.*`` (an official
  Vision-RWKV backbone's keys under ``vit.``); the prompt/scan version follows the LM (RWKV-6 -> v6, RWKV-7 ->
  v7) unless the stored configuration says otherwise;
* **split pair** (``export.py``): ``{run}_rwkv.pth`` = the LM with the ``rwkv.`` prefix stripped (a plain BlinkDL
  file) + ``{run}_visual.pth`` = everything else (``proj.*``, ``vit.*``), both fp16.  Either file of the pair may
  be given; the other is found next to it (``X_rwkv.ext`` <-> ``X_visual.ext``, or ``rwkv.ext`` <-> ``visual.ext``).

Tower configurations are embedded in the package (:data:`~.towers.CLIP_CONFIGS`, :class:`~.towers.V7TowerConfig`);
the one whose shapes match the weights is used and every tensor is checked against it, so wrong or missing
tower weights fail with a :class:`~vrwkv_edge.checkpoint.CheckpointError` that names the keys.  Files written by
:func:`save_visual_checkpoint` also carry their :class:`VisualConfig` as JSON in a uint8 tensor under
:data:`VISUAL_CONFIG_KEY` (ignored by the original code, which loads non-strict), which is how the tiny random
test towers round-trip.  Runtime settings the weights cannot tell (scan mode, v6 grid_size and image_position,
v7 num_token_per_image) default to those of the released models and can be overridden.
"""
from __future__ import annotations

import math
from dataclasses import asdict, replace
from pathlib import Path
from typing import Mapping, Optional, Union

import torch
from torch import Tensor

from ..checkpoint import CheckpointError, cast_weights, check_finite, layer_count, read_state_dict, save_checkpoint
from ..config import RWKVConfig
from ..dtypes import parse_dtype
from ..fileio import PathLike
from ..models import RWKVModel, build_model, detect_version, model_from_state_dict
from ..vision_rwkv import VisionRWKV, build_vision_rwkv, load_vision_rwkv
from ..vision_rwkv.loading import config_from_state_dict
from .model import VisualConfig, VisualRWKV
from .towers import (CLIP_CONFIGS, SamDinoSigLIP, VRWKVTower, build_clip, build_projector, fix_meta_buffers,
                     init_tower_random_, vrwkv_tower_config)

VISUAL_CONFIG_KEY = "_vrwkv_edge.visual_config"
LM_PREFIX = "rwkv."
V6_TOWER_PREFIX = "vit.vision_model."
V7_TOWER_PREFIXES = ("vit.dino_featurizer.", "vit.siglip_featurizer.", "vit.sam_featurizer.")
VRWKV_TOWER_PREFIX = "vit.backbone."
# Keys that older transformers saved as persistent buffers; never needed.
IGNORED_KEYS = ("vit.vision_model.embeddings.position_ids",)
# Parameters that exist in the towers but never influence VisualRWKV's features (final norms, SigLIP's MAP
# head, CLIP's post_layernorm): accepted when absent (a stripped file), still shape-checked when present.
UNUSED_PREFIXES = ("vit.vision_model.post_layernorm.", "vit.dino_featurizer.norm.", "vit.siglip_featurizer.norm.",
                   "vit.siglip_featurizer.attn_pool.")
SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")


# ---- detection ---------------------------------------------------------------------------------------------
def split_partner(path: PathLike) -> Optional[tuple[Path, Path]]:
    """``(lm_path, visual_path)`` if ``path`` is one file of an existing split pair, else None."""
    path = Path(path)
    stem, ext = path.stem, path.suffix
    pairs = []
    if stem.endswith("_rwkv"):
        pairs.append((path, path.with_name(stem[: -len("_rwkv")] + "_visual" + ext)))
    elif stem.endswith("_visual"):
        pairs.append((path.with_name(stem[: -len("_visual")] + "_rwkv" + ext), path))
    elif stem == "rwkv":
        pairs.append((path, path.with_name("visual" + ext)))
    elif stem == "visual":
        pairs.append((path.with_name("rwkv" + ext), path))
    for lm, vis in pairs:
        if lm.is_file() and vis.is_file():
            return lm, vis
    return None


def _has_visual_keys(sd: Mapping[str, Tensor]) -> bool:
    return any(k.startswith("vit.") or k.startswith("proj.") for k in sd) or VISUAL_CONFIG_KEY in sd


def is_visual_state_dict(sd: Mapping[str, Tensor], path: Optional[PathLike] = None) -> bool:
    """True for a VisualRWKV checkpoint: a full file (``vit.*`` tower keys), the ``_visual`` half of a split
    pair (``proj.*`` / ``vit.*`` without an LM), or the ``_rwkv`` half when its ``_visual`` partner lies next to
    it.  A file with an ``rwkv.`` LM and a projector but NO tower weights is not one (it cannot make a
    VisualRWKV): ``load_model`` keeps returning its language model, and :func:`load_visual_model` explains what
    is missing."""
    if VISUAL_CONFIG_KEY in sd or any(k.startswith("vit.") for k in sd):
        return True
    if any(k.startswith("proj.") for k in sd) and not any(k.startswith(LM_PREFIX) for k in sd):
        return True
    return path is not None and split_partner(path) is not None


# ---- configuration from the weights -------------------------------------------------------------------------
def _tower_kind(sd: Mapping[str, Tensor], source: str) -> str:
    if any(k.startswith(V6_TOWER_PREFIX) for k in sd):
        return "clip"
    if any(k.startswith(p) for p in V7_TOWER_PREFIXES for k in sd):
        return "sam_dino_siglip"
    if any(k.startswith(VRWKV_TOWER_PREFIX) for k in sd):
        return "vrwkv"
    proj = sorted(k for k in sd if k.startswith("proj."))
    raise CheckpointError(
        f"{source}: no vision-tower weights: expected keys under {V6_TOWER_PREFIX}* (VisualRWKV v6, CLIP), "
        f"{', '.join(p + '*' for p in V7_TOWER_PREFIXES)} (v7) or {VRWKV_TOWER_PREFIX}* (Vision-RWKV); found "
        f"projector keys {proj or 'none'}. The tower weights are part of every VisualRWKV checkpoint (the "
        f"*_visual.pth half of a split pair).")


def _vrwkv_tower_config(sd: Mapping[str, Tensor], source: str) -> dict:
    """The Vision-RWKV tower's configuration read from the ``vit.backbone.*`` shapes."""
    backbone = {k[len("vit."):]: v for k, v in sd.items() if k.startswith(VRWKV_TOWER_PREFIX)}
    cfg = config_from_state_dict(backbone, None, source)
    return asdict(vrwkv_tower_config(cfg))


def _clip_config_from_weights(sd: Mapping[str, Tensor], source: str) -> dict:
    def shape(k):
        if k not in sd:
            raise CheckpointError(f"{source}: missing CLIP tower key {k!r}")
        return tuple(sd[k].shape)
    hidden, _, patch, _ = shape("vit.vision_model.embeddings.patch_embedding.weight")
    n_pos = shape("vit.vision_model.embeddings.position_embedding.weight")[0]
    layers = layer_count(sd, r"vit\.vision_model\.encoder\.layers\.(\d+)\.", source)
    inter = shape("vit.vision_model.encoder.layers.0.mlp.fc1.weight")[0]
    side = math.isqrt(n_pos - 1)
    found = dict(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                 image_size=side * patch, patch_size=patch)
    for name, cfg in CLIP_CONFIGS.items():
        if all(cfg[k] == v for k, v in found.items()):
            return dict(cfg)
    raise CheckpointError(
        f"{source}: the CLIP tower's shapes {found} match none of the embedded configurations "
        f"({', '.join(CLIP_CONFIGS)}); pass visual_config= to load it")


def _projector_type(sd: Mapping[str, Tensor], source: str) -> str:
    if "proj.o_proj.weight" in sd or "proj.gate.weight" in sd:
        return "mlp"
    if "proj.weight" in sd:
        return "linear"
    raise CheckpointError(f"{source}: no projector weights: expected proj.weight (linear) or "
                          f"proj.gate.weight / proj.o_proj.weight / proj.ln_v.* (v7 mlp)")


def _stored_config(sd: Mapping[str, Tensor], source: str) -> Optional[VisualConfig]:
    """The configuration a file written by :func:`save_visual_checkpoint` carries (JSON in a uint8 tensor)."""
    t = sd.get(VISUAL_CONFIG_KEY)
    if t is None:
        return None
    where = f"{source}: {VISUAL_CONFIG_KEY}"
    if t.dtype != torch.uint8 or t.dim() != 1:
        raise CheckpointError(f"{where}: expected a 1-D uint8 tensor of JSON text, got {t.dtype} {tuple(t.shape)}")
    try:
        return VisualConfig.from_json(bytes(t.tolist()).decode("utf-8"))
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{where}: not UTF-8 text: {e}") from e
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{where}: not a valid VisualRWKV configuration: {e}") from e


def visual_config_from_state_dict(sd: Mapping[str, Tensor], source: str = "checkpoint", **overrides) -> VisualConfig:
    """The :class:`VisualConfig` of a checkpoint: the stored one, else the embedded tower configuration that
    matches the weights plus the released models' runtime settings; ``overrides`` (non-None) win."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    cfg = _stored_config(sd, source)
    if cfg is None:
        tower = _tower_kind(sd, source)
        if tower == "clip":
            cfg = VisualConfig(version="v6", clip=_clip_config_from_weights(sd, source))
        elif tower == "sam_dino_siglip":
            cfg = VisualConfig(version="v7", proj_type=_projector_type(sd, source))
        else:
            lm = {k[len(LM_PREFIX):]: v for k, v in sd.items() if k.startswith(LM_PREFIX)}
            version = overrides.pop("version", None) or ("v7" if detect_version(lm, source) == "x070" else "v6")
            cfg = VisualConfig(version=version, tower="vrwkv", proj_type=_projector_type(sd, source),
                               vrwkv=_vrwkv_tower_config(sd, source))
    return with_overrides(cfg, **overrides)


# ---- building and loading -----------------------------------------------------------------------------------
def _build_tower(vcfg: VisualConfig, meta: bool):
    if vcfg.tower == "clip":
        return build_clip(vcfg.clip, meta=meta)
    with torch.device("meta" if meta else "cpu"):
        if vcfg.tower == "vrwkv":
            return VRWKVTower(vcfg.vrwkv_tower()).eval()
        return SamDinoSigLIP(vcfg.v7_towers()).eval()


def _tower_dim(vcfg: VisualConfig) -> int:
    if vcfg.tower == "clip":
        return int(vcfg.clip["hidden_size"])
    if vcfg.tower == "vrwkv":
        return int(vcfg.vrwkv["embed_dims"])
    return vcfg.v7_towers().feature_dim


def visual_key_problems(sd: Mapping[str, Tensor], expected: Mapping[str, torch.Size]) -> list[str]:
    """Missing / unexpected / misshapen non-LM keys of ``sd`` against the modules' ``expected`` shapes."""
    given = {k: v for k, v in sd.items() if not k.startswith(LM_PREFIX) and k != VISUAL_CONFIG_KEY
             and k not in IGNORED_KEYS}
    missing = sorted(k for k in expected if k not in given and not k.startswith(UNUSED_PREFIXES))
    unexpected = sorted(k for k in given if k not in expected)
    wrong = [f"{k} {tuple(given[k].shape)} (expected {tuple(expected[k])})" for k in sorted(given)
             if k in expected and tuple(given[k].shape) != tuple(expected[k])]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {missing[:16]}{' ...' if len(missing) > 16 else ''}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {unexpected[:16]}"
                        f"{' ...' if len(unexpected) > 16 else ''}")
    if wrong:
        problems.append(f"wrong shapes ({len(wrong)}): {wrong[:16]}{' ...' if len(wrong) > 16 else ''}")
    return problems


def expected_visual_shapes(vcfg: VisualConfig, n_embd: int) -> dict[str, torch.Size]:
    """Shapes of every ``vit.*`` / ``proj.*`` tensor for ``vcfg`` and an LM of width ``n_embd`` (built on meta)."""
    vit = _build_tower(vcfg, meta=True)
    with torch.device("meta"):
        proj = build_projector(vcfg.proj_type, _tower_dim(vcfg), n_embd)
    expected = {f"vit.{k}": v.shape for k, v in vit.state_dict().items()}
    expected.update({f"proj.{k}": v.shape for k, v in proj.state_dict().items()})
    return expected


def _check_visual_keys(sd: Mapping[str, Tensor], expected: Mapping[str, torch.Size], source: str) -> dict:
    """Matches the non-LM keys against the modules; raises naming every missing / unexpected / misshapen key."""
    problems = visual_key_problems(sd, expected)
    if problems:
        raise CheckpointError(f"{source}: vision tower / projector weights do not match the tower configuration: "
                              + "; ".join(problems))
    given = {k: v for k, v in sd.items() if k in expected}
    non_float = [k for k, v in given.items() if not v.is_floating_point()]
    if non_float:
        raise CheckpointError(f"{source}: non floating-point tensors in {non_float[:8]}")
    check_finite(given, source)
    return given


def visual_model_from_state_dict(sd: Mapping[str, Tensor], dtype: torch.dtype = torch.float32,
                                 device: Union[str, torch.device] = "cpu", source: str = "state dict",
                                 visual_config: Optional[VisualConfig] = None, **overrides) -> VisualRWKV:
    """A :class:`VisualRWKV` from a full VisualRWKV state dict (``rwkv.*`` + ``proj.*`` + ``vit.*``)."""
    dtype = parse_dtype(dtype)
    if not any(k.startswith(LM_PREFIX) for k in sd):
        raise CheckpointError(f"{source}: no language-model weights (rwkv.* keys); for a split pair give the "
                              f"*_rwkv file next to its *_visual file")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if visual_config is None:
        vcfg = visual_config_from_state_dict(sd, source, **overrides)
        if vcfg.tower != "clip" and "proj_type" not in overrides:
            vcfg = with_overrides(vcfg, proj_type=_projector_type(sd, source))
    else:
        vcfg = with_overrides(visual_config, **overrides)
    emb = sd.get(LM_PREFIX + "emb.weight")
    if emb is None or emb.dim() != 2:
        raise CheckpointError(f"{source}: missing or malformed language-model key {LM_PREFIX}emb.weight")
    n_embd = int(emb.shape[1])
    try:       # the configuration may come from the file: building its (meta-device) tower is where it can fail
        expected = expected_visual_shapes(vcfg, n_embd)
    except (TypeError, ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"{source}: the visual configuration does not describe a buildable tower: {e}") from e
    given = _check_visual_keys(sd, expected, source)          # the towers first: a cheap, clear failure
    lm = model_from_state_dict({k: v for k, v in sd.items() if k.startswith(LM_PREFIX)}, dtype=dtype,
                               device=device, source=source)
    vit = _build_tower(vcfg, meta=True)
    with torch.device("meta"):
        proj = build_projector(vcfg.proj_type, _tower_dim(vcfg), n_embd)
    for module, prefix in ((vit, "vit."), (proj, "proj.")):
        own = module.state_dict()
        # an unused parameter absent from a stripped file is zeros
        weights = {k: given.get(prefix + k, torch.zeros(t.shape)) for k, t in own.items()}
        module.load_state_dict(cast_weights(weights, dtype, device, f"{source} ({prefix}*)"), strict=True,
                               assign=True)
    if vcfg.tower == "clip":
        fix_meta_buffers(vit)
        vit.to(device)
    return VisualRWKV(lm, vit.eval(), proj.eval(), vcfg).eval()


def load_visual_model(path: PathLike, dtype: Union[torch.dtype, str] = torch.float32,
                      device: Union[str, torch.device] = "cpu", *, state_dict: Optional[Mapping] = None,
                      visual_path: Optional[PathLike] = None, visual_config: Optional[VisualConfig] = None,
                      **overrides) -> VisualRWKV:
    """Loads a VisualRWKV checkpoint: a full v6/v7 file, or either half of a split pair (``visual_path``
    names the ``*_visual`` file explicitly when it does not sit next to the LM under the usual name).

    ``overrides``: ``scan``, ``grid_size``, ``image_position``, ``num_token_per_image`` (None = keep)."""
    path = Path(path)
    sd = dict(state_dict) if state_dict is not None else read_state_dict(path)
    source = str(path)
    if visual_path is not None:
        vis = read_state_dict(visual_path)
        lm_sd = {k[len(LM_PREFIX):] if k.startswith(LM_PREFIX) else k: v for k, v in sd.items()}
        sd = {**{LM_PREFIX + k: v for k, v in lm_sd.items()}, **vis}
        source = f"{path} + {visual_path}"
    elif not any(k.startswith(LM_PREFIX) for k in sd):
        pair = split_partner(path)
        if pair is None:
            if _has_visual_keys(sd):
                raise CheckpointError(
                    f"{path}: holds only the visual half of a split VisualRWKV checkpoint and its language-model "
                    f"partner was not found (expected {_expected_partner(path)})")
            raise CheckpointError(f"{path}: not a VisualRWKV checkpoint (no vit.* / proj.* keys)")
        lm_path, vis_path = pair
        lm_sd = sd if path == lm_path else read_state_dict(lm_path)
        vis_sd = sd if path == vis_path else read_state_dict(vis_path)
        if any(k.startswith(LM_PREFIX) for k in lm_sd) or _has_visual_keys(lm_sd):
            raise CheckpointError(f"{lm_path}: expected a plain language model (the *_rwkv half of a split pair)")
        stray = [k for k in vis_sd if not (k.startswith("vit.") or k.startswith("proj.") or k == VISUAL_CONFIG_KEY
                                           or k in IGNORED_KEYS)]
        if stray:
            raise CheckpointError(f"{vis_path}: unexpected keys in the visual half of a split pair: {stray[:12]}")
        sd = {**{LM_PREFIX + k: v for k, v in lm_sd.items()}, **vis_sd}
        source = f"{lm_path} + {vis_path}"
    return visual_model_from_state_dict(sd, dtype=dtype, device=device, source=source,
                                        visual_config=visual_config, **overrides)


def _expected_partner(path: Path) -> str:
    stem, ext = path.stem, path.suffix
    if stem.endswith("_visual"):
        return str(path.with_name(stem[: -len("_visual")] + "_rwkv" + ext))
    if stem == "visual":
        return str(path.with_name("rwkv" + ext))
    return "a *_rwkv file next to it"


def build_random_visual_model(lm_cfg: RWKVConfig, vcfg: VisualConfig, seed: int = 0,
                              dtype: torch.dtype = torch.float32) -> VisualRWKV:
    """A VisualRWKV with seeded random weights (tests, benchmarks): same code as the real model, any size."""
    lm = build_model(lm_cfg).init_random_(seed)
    vit = _build_tower(vcfg, meta=False)
    init_tower_random_(vit, seed + 1)
    proj = build_projector(vcfg.proj_type, _tower_dim(vcfg), lm_cfg.n_embd)
    init_tower_random_(proj, seed + 2)
    if vcfg.proj_type == "linear":
        with torch.no_grad():      # the projector gives embedding-scale inputs, as a trained one does
            proj.weight.mul_(0.1)
    return VisualRWKV(lm, vit, proj, vcfg).to(dtype).eval()


def assemble_vrwkv_visual_model(lm, tower, *, version: Optional[str] = None, proj_type: str = "linear",
                                num_token_per_image: Optional[int] = None, image_size: Optional[int] = None,
                                seed: int = 0, **visual) -> VisualRWKV:
    """A VisualRWKV from a language model and a Vision-RWKV backbone, with a freshly initialised projector:
    the starting point of projector pretraining (stage 1) for an edge model with a Vision-RWKV tower.

    ``lm``: an RWKV model or an LM checkpoint path; ``tower``: a :class:`~vrwkv_edge.vision_rwkv.VisionRWKV`, an
    official Vision-RWKV checkpoint path (its classification head is dropped) or a preset name (random
    weights).  ``version`` ("v6"/"v7", prompts and scan) defaults to the LM's version.  The projector is
    PyTorch's default Linear initialisation from ``seed`` (LayerNorm of the mlp projector at 1/0)."""
    if not isinstance(lm, RWKVModel):
        lm_sd = read_state_dict(lm)
        if is_visual_state_dict(lm_sd, lm):
            raise CheckpointError(f"{lm}: assemble_vrwkv_visual_model needs a language-model checkpoint, this one "
                                  f"is already a VisualRWKV")
        lm = model_from_state_dict(lm_sd, source=str(lm))
    if isinstance(tower, str) and not Path(tower).exists():
        tower = build_vision_rwkv(tower, num_classes=0)
    elif not isinstance(tower, VisionRWKV):
        tower = load_vision_rwkv(tower)
    vcfg = VisualConfig(version=version or ("v7" if lm.version == "x070" else "v6"), tower="vrwkv",
                        proj_type=proj_type, num_token_per_image=num_token_per_image, image_size=image_size,
                        vrwkv=asdict(vrwkv_tower_config(tower.config)), **visual)
    vit = VRWKVTower(vcfg.vrwkv_tower())
    vit.backbone.load_state_dict(tower.backbone.state_dict())
    torch.manual_seed(seed)
    proj = build_projector(proj_type, _tower_dim(vcfg), lm.cfg.n_embd)
    return VisualRWKV(lm, vit.to(lm.dtype).eval(), proj.to(lm.dtype).eval(), vcfg).eval()


def save_visual_checkpoint(model: VisualRWKV, path: PathLike, split: bool = False,
                           dtype: Optional[torch.dtype] = None, include_config: bool = True) -> list[Path]:
    """Writes the model in the official layout: one full file, or (``split``) the ``{stem}_rwkv`` (LM, prefix
    stripped) + ``{stem}_visual`` (proj + vit) pair.  Atomic (temp file + rename).  Returns the paths."""
    path = Path(path)
    sd = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v)
          for k, v in model.state_dict().items()}
    meta = {}
    if include_config:
        meta[VISUAL_CONFIG_KEY] = torch.tensor(list(model.vcfg.to_json().encode("utf-8")), dtype=torch.uint8)
    if not split:
        return [save_checkpoint({**sd, **meta}, path)]
    stem = path.stem[: -len("_rwkv")] if path.stem.endswith("_rwkv") else path.stem
    lm_path = path.with_name(stem + "_rwkv" + path.suffix)
    vis_path = path.with_name(stem + "_visual" + path.suffix)
    lm_sd = {k[len(LM_PREFIX):]: v for k, v in sd.items() if k.startswith(LM_PREFIX)}
    vis_sd = {k: v for k, v in sd.items() if not k.startswith(LM_PREFIX)}
    return [save_checkpoint(lm_sd, lm_path), save_checkpoint({**vis_sd, **meta}, vis_path)]


def with_overrides(vcfg: VisualConfig, **overrides) -> VisualConfig:
    """A copy of ``vcfg`` with the non-None ``overrides`` applied (validated again)."""
    return replace(vcfg, **{k: v for k, v in overrides.items() if v is not None})
