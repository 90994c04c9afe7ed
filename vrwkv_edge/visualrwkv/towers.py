"""Vision towers and projectors of VisualRWKV v6.0 and v7.00, built from configurations embedded here (no hub
download; the weights come from the VisualRWKV checkpoint).

* **v6.0**: HF ``CLIPVisionModel`` (``transformers`` is an optional dependency, extra ``vision``, imported only
  when a v6 tower is built) held as :class:`CLIPVisionTower` so its keys are ``vit.vision_model.*``; features =
  ``last_hidden_state`` (the last encoder layer, before ``post_layernorm``), [B, 577, 1024] with CLS first;
  :func:`grid_pool` reorders to ``[patches..., CLS]`` (CLS LAST) and pools; projector ``proj`` =
  Linear(1024, C, bias=False).
* **v7.00**: :class:`SamDinoSigLIP` = ``dino_featurizer`` (:class:`~.vit.TimmViT`, DINOv2 L/14 reg4 at 448) |
  ``siglip_featurizer`` (SigLIP SO400M/14 at 448) | ``sam_featurizer`` (:class:`~.sam.SamImageEncoder`, SAM ViT-B
  at 1024 + 2x2 space-to-depth), concatenated on channels in that order (1024 + 1152 + 1024 = 3200) over the
  32x32 row-major grid; :func:`adaptive_pool` to ``num_token_per_image``; projector
  :class:`MLPWithContextGating` (``proj.gate``, ``proj.o_proj``, ``proj.ln_v``) or a plain Linear.
* **Vision-RWKV** (vrwkv_edge's edge tower, with either LM version): :class:`VRWKVTower` = a Vision-RWKV
  backbone (``vit.backbone.*``, the official Vision-RWKV names under ``vit.``), features = its tokens after the
  final norm over the row-major ``Hp x Wp`` grid, no CLS; :func:`adaptive_pool` to ``num_token_per_image``;
  projector linear or mlp.  Its cost grows linearly with the number of patches, which is what makes higher
  input resolutions affordable on the edge.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..vision_rwkv.backbone import VRWKVBackbone, VRWKVConfig, get_config
from .sam import SAM_VIT_B_1024, SamConfig, SamImageEncoder
from .vit import DINOV2_L14_REG4_448, SIGLIP_SO400M_14_448, TimmViT, ViTConfig

# ---- CLIP (v6.0) -----------------------------------------------------------------------------------------
# CLIPVisionConfig fields of the OpenAI CLIP towers VisualRWKV v5/v6 name (scripts: L/14-336; train.py default
# B/32).  Only the vision half is needed; projection_dim is irrelevant for CLIPVisionModel.
CLIP_CONFIGS: dict[str, dict] = {
    "openai/clip-vit-large-patch14-336": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                              num_attention_heads=16, image_size=336, patch_size=14),
    "openai/clip-vit-large-patch14": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                          num_attention_heads=16, image_size=224, patch_size=14),
    "openai/clip-vit-base-patch16": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                         num_attention_heads=12, image_size=224, patch_size=16),
    "openai/clip-vit-base-patch32": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                         num_attention_heads=12, image_size=224, patch_size=32),
}
DEFAULT_CLIP = "openai/clip-vit-large-patch14-336"
CLIP_COMMON = dict(hidden_act="quick_gelu", layer_norm_eps=1e-5, num_channels=3)


def require_transformers():
    try:
        import transformers  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "VisualRWKV v6 uses the CLIP vision tower from Hugging Face transformers, which is not installed: "
            "pip install 'vrwkv_edge[vision]' (or: pip install transformers)") from e
    return transformers


class CLIPVisionTower(nn.Module):
    """VisualRWKV v6's ``vit``: the HF CLIP vision transformer held as ``vision_model``, so that the parameter
    names are ``vision_model.embeddings.*`` / ``vision_model.encoder.layers.*`` / ... whatever the transformers
    version (4.x nests a ``CLIPVisionTransformer`` under ``CLIPVisionModel.vision_model``; 5.x flattened
    ``CLIPVisionModel`` itself to ``embeddings`` / ``pre_layrnorm`` / ``encoder`` / ``post_layernorm``)."""

    def __init__(self, hf_model: nn.Module):
        super().__init__()
        inner = hf_model._modules.get("vision_model", hf_model)
        if not hasattr(inner, "embeddings") or not hasattr(inner, "encoder"):
            raise RuntimeError("unexpected transformers CLIP vision module layout")
        self.vision_model = inner

    def forward(self, pixel_values: Tensor) -> Tensor:
        """``last_hidden_state`` [B, 1 + grid^2, D]: the last encoder layer, before post_layernorm."""
        return self.vision_model(pixel_values=pixel_values).last_hidden_state


def build_clip(cfg: dict, meta: bool = False) -> CLIPVisionTower:
    """The CLIP tower of ``cfg`` (CLIPVisionConfig fields), uninitialised on the meta device if ``meta``."""
    transformers = require_transformers()
    config = transformers.CLIPVisionConfig(**{**CLIP_COMMON, **cfg})
    if meta:
        with torch.device("meta"):
            model = transformers.CLIPVisionModel(config)
    else:
        model = transformers.CLIPVisionModel(config)
    return CLIPVisionTower(model).eval()


def fix_meta_buffers(model: nn.Module) -> None:
    """Re-creates the non-persistent ``position_ids`` buffers of a CLIP tower built on the meta device."""
    for name, module in model.named_modules():
        for bname, buf in list(module.named_buffers(recurse=False)):
            if buf.is_meta:
                if bname != "position_ids":
                    raise RuntimeError(f"buffer {name}.{bname} was not loaded")
                module.register_buffer(bname, torch.arange(buf.shape[-1]).expand(1, -1), persistent=False)


def clip_features(vit: nn.Module, pixels: Tensor) -> Tensor:
    """``vit(images).last_hidden_state``: [B, 1 + grid^2, D], CLS first."""
    dtype = next(vit.parameters()).dtype
    return vit(pixels.to(dtype))


def grid_pool(features: Tensor, grid_size: int) -> Tensor:
    """v6.0 ``grid_pooling``: CLS split off and appended LAST.
    -1: all patches + CLS; 0: CLS only; 1: mean of patches + CLS; g >= 2: avg_pool2d with kernel = stride =
    side // g over the patch grid (row-major) + CLS."""
    cls = features[:, :1]
    patches = features[:, 1:]
    if grid_size == -1:
        return torch.cat([patches, cls], 1)
    if grid_size == 0:
        return cls
    if grid_size == 1:
        return torch.cat([patches.mean(1, keepdim=True), cls], 1)
    if grid_size < 0:
        raise ValueError(f"grid_size must be -1, 0, 1 or >= 2, got {grid_size}")
    B, L, D = patches.shape
    side = math.isqrt(L)
    stride = side // grid_size
    if stride < 1:
        raise ValueError(f"grid_size {grid_size} is larger than the {side}x{side} patch grid")
    x = F.avg_pool2d(patches.reshape(B, side, side, D).permute(0, 3, 1, 2), kernel_size=stride, stride=stride)
    return torch.cat([x.permute(0, 2, 3, 1).reshape(B, -1, D), cls], 1)


def grid_pool_layout(num_patches: int, grid_size: int) -> tuple[int, int]:
    """``(scanned patch count, side)`` of :func:`grid_pool`'s output (the CLS token follows the patches)."""
    side = math.isqrt(num_patches)
    if grid_size == -1:
        return side * side, side
    if grid_size == 0:
        return 0, 0
    if grid_size == 1:
        return 1, 1
    if grid_size < 0 or side // grid_size < 1:
        raise ValueError(f"grid_size must be -1, 0, 1 or 2..{side} for a {side}x{side} patch grid, got {grid_size}")
    out = side // (side // grid_size)
    return out * out, out


# ---- v7.00 -----------------------------------------------------------------------------------------------
@dataclass
class V7TowerConfig:
    dino: ViTConfig = DINOV2_L14_REG4_448
    siglip: ViTConfig = SIGLIP_SO400M_14_448
    sam: SamConfig = SAM_VIT_B_1024

    @property
    def grid(self) -> int:
        return self.dino.grid

    @property
    def feature_dim(self) -> int:
        return self.dino.embed_dim + self.siglip.embed_dim + self.sam.output_dim

    def check(self) -> None:
        grids = {"dino": self.dino.grid, "siglip": self.siglip.grid, "sam": self.sam.out_grid}
        if len(set(grids.values())) != 1:
            raise ValueError(f"the three v7 towers must give the same token grid, got {grids}")

    def to_dict(self) -> dict:
        return {"dino": self.dino.to_dict(), "siglip": self.siglip.to_dict(), "sam": self.sam.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "V7TowerConfig":
        sam = dict(d["sam"])
        sam["global_attn_indexes"] = tuple(sam["global_attn_indexes"])
        return cls(ViTConfig(**d["dino"]), ViTConfig(**d["siglip"]), SamConfig(**sam))


class SamDinoSigLIP(nn.Module):
    """VisualRWKV v7.00 ``SamDinoSigLIPViTBackbone`` (module names as saved: ``vit.{dino,siglip,sam}_featurizer``)."""

    def __init__(self, cfg: V7TowerConfig = None):
        super().__init__()
        cfg = cfg or V7TowerConfig()
        cfg.check()
        self.cfg = cfg
        self.dino_featurizer = TimmViT(cfg.dino)
        self.siglip_featurizer = TimmViT(cfg.siglip)
        self.sam_featurizer = SamImageEncoder(cfg.sam)

    @property
    def embed_dim(self) -> int:
        return self.cfg.feature_dim

    def forward(self, pixels: dict) -> Tensor:
        """``{"dino": [B,3,448,448], "siglip": [B,3,448,448], "sam": [B,3,1024,1024]}`` -> [B, 1024, 3200]."""
        missing = {"dino", "siglip", "sam"} - set(pixels)
        if missing:
            raise ValueError(f"v7 tower input is missing {sorted(missing)} pixel tensors")
        return torch.cat([self.dino_featurizer.features(pixels["dino"]),
                          self.siglip_featurizer.features(pixels["siglip"]),
                          self.sam_featurizer.features(pixels["sam"])], dim=2)


# ---- Vision-RWKV ------------------------------------------------------------------------------------------
# The default Vision-RWKV tower: VRWKV-T without its classification head (drop path is a training setting).
DEFAULT_VRWKV_TOWER = "vrwkv_t"


def vrwkv_tower_config(arch=DEFAULT_VRWKV_TOWER, **overrides) -> VRWKVConfig:
    """A Vision-RWKV preset (or config) as a tower: no head, no drop path."""
    return get_config(arch, **{"num_classes": 0, "head_hidden": None, "drop_path_rate": 0.0, **overrides})


class VRWKVTower(nn.Module):
    """A Vision-RWKV backbone as a VisualRWKV ``vit``: parameters ``vit.backbone.*`` (the official Vision-RWKV
    classifier's ``backbone.*`` names), so an official checkpoint's backbone drops in by adding ``vit.``.  Its
    Bi-WKV is the backbone's default, the official CUDA kernel's result, which those checkpoints were trained
    with; ``tower.backbone.set_wkv_impl("formula")`` selects the paper formula."""

    def __init__(self, cfg: VRWKVConfig):
        super().__init__()
        self.config = cfg
        self.backbone = VRWKVBackbone(cfg)

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dims

    def forward(self, pixels: Tensor) -> Tensor:
        """[B, 3, H, W] (any size; the position embedding is resized) -> tokens [B, Hp*Wp, C], row-major."""
        dtype = self.backbone.pos_embed.dtype
        return self.backbone.forward_tokens(pixels.to(dtype))[0]


def adaptive_pool(features: Tensor, num_tokens: int) -> Tensor:
    """v7.00 ``adaptive_pooling``: AdaptiveAvgPool2d(sqrt(num_tokens)) over the square row-major grid
    (identity when num_tokens equals the grid, as in the released models)."""
    B, L, D = features.shape
    side = math.isqrt(L)
    out = math.isqrt(num_tokens)
    if out * out != num_tokens:
        raise ValueError(f"num_token_per_image must be a square number, got {num_tokens}")
    if out == side:
        return features
    x = features.reshape(B, side, side, D).permute(0, 3, 1, 2)
    return F.adaptive_avg_pool2d(x, out).reshape(B, D, -1).permute(0, 2, 1)


class MLPWithContextGating(nn.Module):
    """v7.00 ``proj`` with ``--proj_type mlp``: ``LayerNorm(o_proj(x * sigmoid(gate(x))))``."""

    def __init__(self, in_dim: int, n_embd: int):
        super().__init__()
        self.gate = nn.Linear(in_dim, in_dim, bias=False)
        self.o_proj = nn.Linear(in_dim, n_embd, bias=False)
        self.ln_v = nn.LayerNorm(n_embd)

    def forward(self, x: Tensor) -> Tensor:
        return self.ln_v(self.o_proj(x * torch.sigmoid(self.gate(x))))


def build_projector(kind: str, in_dim: int, n_embd: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(in_dim, n_embd, bias=False)
    if kind == "mlp":
        return MLPWithContextGating(in_dim, n_embd)
    raise ValueError(f"unknown projector type {kind!r}; choose linear or mlp")


@dataclass
class TowerLayout:
    """How one image's embeddings are laid out: ``num_patches`` scanned tokens on a ``grid_h x grid_w`` grid,
    then ``num_extra`` tokens that are never permuted (v6's CLS)."""
    num_patches: int
    grid_h: int
    grid_w: int
    num_extra: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def num_tokens(self) -> int:
        return self.num_patches + self.num_extra


def init_tower_random_(module: nn.Module, seed: int = 0, std: Optional[float] = None) -> nn.Module:
    """Seeded random weights for tests/benchmarks: linears/convs ~ N(0, fan_in^-1/2), norms ~ 1 +- 0.1,
    embeddings/tokens ~ N(0, 0.02)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() >= 2 and not any(s in name for s in ("pos_embed", "position_embedding", "cls_token",
                                                             "reg_token", "rel_pos", "latent")):
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) * (std or fan_in ** -0.5))
            elif name.endswith("weight") or name.endswith("gamma"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen) if "gamma" not in name
                        else 0.1 + 0.01 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))
    return module
