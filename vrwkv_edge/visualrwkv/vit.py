"""Plain-PyTorch ViTs with timm's module and parameter names, for the two timm towers of VisualRWKV v7.00.

VisualRWKV v7.00 builds ``timm.create_model("vit_large_patch14_reg4_dinov2.lvd142m", num_classes=0,
img_size=448)`` and ``timm.create_model("vit_so400m_patch14_siglip_384", num_classes=0, img_size=448)`` and
saves their state dicts under ``vit.dino_featurizer.*`` / ``vit.siglip_featurizer.*``.  timm cannot be
installed next to this torch (it needs torchvision), so :class:`TimmViT` re-implements exactly the parts of
``timm.models.vision_transformer.VisionTransformer`` those two models use, with the same names::

    cls_token [1,1,D]  reg_token [1,R,D]  pos_embed [1,L,D]  patch_embed.proj.{weight,bias}
    blocks.{i}.norm1  blocks.{i}.attn.qkv  blocks.{i}.attn.proj  blocks.{i}.ls1.gamma
    blocks.{i}.norm2  blocks.{i}.mlp.fc1  blocks.{i}.mlp.fc2     blocks.{i}.ls2.gamma
    norm  attn_pool.{latent, q, kv, proj, norm, mlp.fc1, mlp.fc2}   (SigLIP's MAP head)

Semantics reproduced (timm ``VisionTransformer``): LayerNorm eps 1e-6, exact (erf) GELU, qkv with bias,
softmax attention scaled by head_dim^-0.5, optional LayerScale; ``_pos_embed``: with ``no_embed_class`` (DINOv2)
the position embedding is added to the patch tokens and then ``[cls, reg..., patches]`` are concatenated,
otherwise (SigLIP, no class token) it is added to the patch tokens directly.

VisualRWKV monkey-patches ``forward`` to ``get_intermediate_layers(n={depth - 2})``: the output of block
``depth - 2`` (the second-to-last block), without the final norm, with the prefix (class/register) tokens
dropped.  :meth:`TimmViT.features` computes exactly that (and skips the unused last block).  The final
``norm`` and SigLIP's ``attn_pool`` are never used for the features; they exist so that the checkpoint keys
load one to one.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

TIMM_LN_EPS = 1e-6


@dataclass(frozen=True)
class ViTConfig:
    img_size: int
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_hidden: int
    class_token: bool = True
    reg_tokens: int = 0
    no_embed_class: bool = False
    layer_scale: bool = False
    global_pool: str = "token"          # "token" or "map" (attention-pool head, SigLIP)
    feature_block: int = -2             # which block's output is the feature (negative: from the end)

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.class_token) + self.reg_tokens

    @property
    def feature_index(self) -> int:
        return self.feature_block % self.depth

    def to_dict(self) -> dict:
        return asdict(self)


# timm vit_large_patch14_reg4_dinov2 at img_size=448 (VisualRWKV v7.00 default_image_size)
DINOV2_L14_REG4_448 = ViTConfig(img_size=448, patch_size=14, embed_dim=1024, depth=24, num_heads=16,
                                mlp_hidden=4096, class_token=True, reg_tokens=4, no_embed_class=True,
                                layer_scale=True, global_pool="token")
# timm vit_so400m_patch14_siglip_384 at img_size=448 (mlp_ratio 3.7362 -> int(1152 * 3.7362) = 4304)
SIGLIP_SO400M_14_448 = ViTConfig(img_size=448, patch_size=14, embed_dim=1152, depth=27, num_heads=16,
                                 mlp_hidden=4304, class_token=False, reg_tokens=0, no_embed_class=False,
                                 layer_scale=False, global_pool="map")


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)                    # [B, N, D] row-major


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"ViT width {dim} is not a multiple of {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)                       # scale = head_dim ** -0.5
        return self.proj(y.transpose(1, 2).reshape(B, N, C))


class LayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Block(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        d = cfg.embed_dim
        self.norm1 = nn.LayerNorm(d, eps=TIMM_LN_EPS)
        self.attn = Attention(d, cfg.num_heads)
        self.ls1 = LayerScale(d) if cfg.layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(d, eps=TIMM_LN_EPS)
        self.mlp = Mlp(d, cfg.mlp_hidden)
        self.ls2 = LayerScale(d) if cfg.layer_scale else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class AttentionPoolLatent(nn.Module):
    """timm's MAP head (one latent query); present in SigLIP checkpoints, unused for VisualRWKV features."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int):
        super().__init__()
        self.num_heads = num_heads
        self.latent = nn.Parameter(torch.zeros(1, 1, dim))
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim, eps=TIMM_LN_EPS)
        self.mlp = Mlp(dim, mlp_hidden)

    def forward(self, x: Tensor) -> Tensor:
        B, N, C = x.shape
        h = self.num_heads
        q = self.q(self.latent.expand(B, -1, -1)).reshape(B, 1, h, C // h).transpose(1, 2)
        k, v = self.kv(x).reshape(B, N, 2, h, C // h).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, 1, C)
        y = self.proj(y)
        y = y + self.mlp(self.norm(y))
        return y[:, 0]


class TimmViT(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.embed_dim
        self.patch_embed = PatchEmbed(cfg.patch_size, d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d)) if cfg.class_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, cfg.reg_tokens, d)) if cfg.reg_tokens else None
        n_pos = cfg.grid ** 2 + (0 if cfg.no_embed_class else cfg.num_prefix_tokens)
        self.pos_embed = nn.Parameter(torch.zeros(1, n_pos, d))
        self.blocks = nn.Sequential(*[Block(cfg) for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(d, eps=TIMM_LN_EPS)
        self.attn_pool = AttentionPoolLatent(d, cfg.num_heads, cfg.mlp_hidden) if cfg.global_pool == "map" else None

    @property
    def embed_dim(self) -> int:
        return self.cfg.embed_dim

    def _pos_embed(self, x: Tensor) -> Tensor:
        prefix = []
        if self.cls_token is not None:
            prefix.append(self.cls_token.expand(x.shape[0], -1, -1))
        if self.reg_token is not None:
            prefix.append(self.reg_token.expand(x.shape[0], -1, -1))
        if self.cfg.no_embed_class:
            x = x + self.pos_embed
            return torch.cat(prefix + [x], 1) if prefix else x
        if prefix:
            x = torch.cat(prefix + [x], 1)
        return x + self.pos_embed

    def features(self, pixels: Tensor) -> Tensor:
        """``get_intermediate_layers(n={feature_index})``: the patch tokens [B, grid*grid, D] after block
        ``feature_index`` (default the second-to-last), no final norm, prefix tokens dropped."""
        size = self.cfg.img_size
        if pixels.dim() != 4 or pixels.shape[1:] != (3, size, size):
            raise ValueError(f"ViT input must be [B, 3, {size}, {size}], got {tuple(pixels.shape)}")
        x = self._pos_embed(self.patch_embed(pixels.to(self.pos_embed.dtype)))
        for blk in self.blocks[: self.cfg.feature_index + 1]:
            x = blk(x)
        return x[:, self.cfg.num_prefix_tokens:]

    def forward(self, pixels: Tensor) -> Tensor:
        return self.features(pixels)
