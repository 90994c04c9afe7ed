"""SAM ViT-B image encoder with the official ``segment_anything`` parameter names, plus VisualRWKV's lossless
2x2 down-sampler (the third tower of VisualRWKV v7.00, saved under ``vit.sam_featurizer.*``).

Names (``image_encoder.`` prefix of the SAM checkpoint stripped, as VisualRWKV does)::

    patch_embed.proj.{weight,bias}  pos_embed [1, 64, 64, 768]
    blocks.{i}.norm1  blocks.{i}.attn.qkv  blocks.{i}.attn.proj  blocks.{i}.attn.rel_pos_h  blocks.{i}.attn.rel_pos_w
    blocks.{i}.norm2  blocks.{i}.mlp.lin1  blocks.{i}.mlp.lin2
    neck.0.weight (1x1 conv, no bias)  neck.1.{weight,bias} (LayerNorm2d)  neck.2.weight (3x3 conv)  neck.3.*

Computation (ViTDet-style): patch conv -> + absolute pos_embed (NHWC) -> blocks (LayerNorm eps 1e-6, exact
GELU); windowed blocks zero-pad the normed map to a multiple of the window (14: 64 -> 70), attend inside each
window and crop; global blocks attend over the whole map.  Attention adds SAM's decomposed relative position
terms ``q . Rh[qh - kh]`` and ``q . Rw[qw - kw]`` (unscaled q) to the scaled logits.  Neck: conv1x1 -> LayerNorm2d
-> conv3x3 -> LayerNorm2d (eps 1e-6), giving [B, 256, 64, 64].  Then the space-to-depth of VisualRWKV's
``LosslessDownSampler``: [B, C, H, W] -> [B, 4C, H/2, W/2] with output channel ``c*4 + dy*2 + dx``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SAM_LN_EPS = 1e-6


@dataclass(frozen=True)
class SamConfig:
    img_size: int = 1024
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_hidden: int = 3072
    window_size: int = 14
    global_attn_indexes: tuple = (2, 5, 8, 11)
    out_chans: int = 256
    downsample: int = 2

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    @property
    def out_grid(self) -> int:
        return self.grid // self.downsample

    @property
    def output_dim(self) -> int:
        return self.out_chans * self.downsample ** 2

    def to_dict(self) -> dict:
        d = asdict(self)
        d["global_attn_indexes"] = list(self.global_attn_indexes)
        return d


SAM_VIT_B_1024 = SamConfig()


class LayerNorm2d(nn.Module):
    def __init__(self, channels: int, eps: float = SAM_LN_EPS):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).permute(0, 2, 3, 1)                          # NHWC


class MLPBlock(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.lin2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.lin2(F.gelu(self.lin1(x)))


def _rel_table(size: int, rel_pos: Tensor) -> Tensor:
    """R[q, k] = rel_pos[q - k + size - 1] for equal query/key sizes (no interpolation needed: the table has
    exactly 2*size-1 rows, checked at load)."""
    idx = torch.arange(size)[:, None] - torch.arange(size)[None, :] + (size - 1)
    return rel_pos[idx.to(rel_pos.device)]


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, input_size: int):
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size - 1, head_dim))

    def forward(self, x: Tensor) -> Tensor:
        B, H, W, C = x.shape
        nh = self.num_heads
        qkv = self.qkv(x).reshape(B, H * W, 3, nh, C // nh).permute(2, 0, 3, 1, 4)   # [3, B, nh, HW, hd]
        q, k, v = qkv.unbind(0)
        Rh = _rel_table(H, self.rel_pos_h).to(q.dtype)                  # [H, H, hd]
        Rw = _rel_table(W, self.rel_pos_w).to(q.dtype)                  # [W, W, hd]
        out = []
        # One head at a time keeps the global blocks' [HW, HW] logits at one head's size (64 MiB at 64x64).
        for h in range(nh):
            qh, kh, vh = q[:, h], k[:, h], v[:, h]                     # [B, HW, hd]
            attn = (qh * self.scale) @ kh.transpose(-2, -1)
            r_q = qh.reshape(B, H, W, -1)
            rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, Rh)
            rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, Rw)
            attn = (attn.view(B, H, W, H, W) + rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :])
            attn = attn.view(B, H * W, H * W).softmax(-1)
            out.append(attn @ vh)
        y = torch.stack(out, 1).view(B, nh, H, W, -1).permute(0, 2, 3, 1, 4).reshape(B, H, W, C)
        return self.proj(y)


class Block(nn.Module):
    def __init__(self, cfg: SamConfig, window_size: int):
        super().__init__()
        d = cfg.embed_dim
        self.window_size = window_size
        self.norm1 = nn.LayerNorm(d, eps=SAM_LN_EPS)
        self.attn = Attention(d, cfg.num_heads, window_size if window_size else cfg.grid)
        self.norm2 = nn.LayerNorm(d, eps=SAM_LN_EPS)
        self.mlp = MLPBlock(d, cfg.mlp_hidden)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.norm1(x)
        ws = self.window_size
        if ws:
            B, H, W, C = x.shape
            ph, pw = (-H) % ws, (-W) % ws
            if ph or pw:
                x = F.pad(x, (0, 0, 0, pw, 0, ph))
            Hp, Wp = H + ph, W + pw
            x = x.view(B, Hp // ws, ws, Wp // ws, ws, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws, ws, C)
            x = self.attn(x)
            x = x.view(B, Hp // ws, Wp // ws, ws, ws, C).permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, C)
            x = x[:, :H, :W].contiguous()
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


def space_to_depth(x: Tensor, factor: int = 2) -> Tensor:
    """VisualRWKV ``LosslessDownSampler``: [B, C, H, W] -> [B, C*f*f, H/f, W/f], channel ``c*f*f + dy*f + dx``."""
    B, C, H, W = x.shape
    if H % factor or W % factor:
        raise ValueError(f"space_to_depth: {H}x{W} is not divisible by {factor}")
    x = x.view(B, C, H // factor, factor, W // factor, factor).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(B, H // factor, W // factor, C * factor * factor).permute(0, 3, 1, 2)


class SamImageEncoder(nn.Module):
    def __init__(self, cfg: SamConfig = SAM_VIT_B_1024):
        super().__init__()
        self.cfg = cfg
        d = cfg.embed_dim
        self.patch_embed = PatchEmbed(cfg.patch_size, d)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.grid, cfg.grid, d))
        self.blocks = nn.ModuleList(
            Block(cfg, 0 if i in cfg.global_attn_indexes else cfg.window_size) for i in range(cfg.depth))
        self.neck = nn.Sequential(
            nn.Conv2d(d, cfg.out_chans, kernel_size=1, bias=False),
            LayerNorm2d(cfg.out_chans),
            nn.Conv2d(cfg.out_chans, cfg.out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(cfg.out_chans),
        )

    @property
    def output_dim(self) -> int:
        return self.cfg.output_dim

    def features(self, pixels: Tensor) -> Tensor:
        """[B, 3, S, S] -> [B, out_grid*out_grid, 4*out_chans] (row-major tokens), as VisualRWKV uses them."""
        size = self.cfg.img_size
        if pixels.dim() != 4 or pixels.shape[1:] != (3, size, size):
            raise ValueError(f"SAM input must be [B, 3, {size}, {size}], got {tuple(pixels.shape)}")
        x = self.patch_embed(pixels.to(self.pos_embed.dtype)) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        x = space_to_depth(self.neck(x.permute(0, 3, 1, 2)), self.cfg.downsample)
        B, C, H, W = x.shape
        return x.reshape(B, C, H * W).permute(0, 2, 1)

    def forward(self, pixels: Tensor) -> Tensor:
        return self.features(pixels)
