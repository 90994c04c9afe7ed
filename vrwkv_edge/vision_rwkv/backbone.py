"""Vision-RWKV backbones (VRWKV with Bi-WKV, VRWKV6 with bidirectional WKV-6), image classifier and tower.

Spec: ``../shared/docs/vision-rwkv.md``.  Module tree and parameter names follow OpenGVLab/Vision-RWKV's
``vrwkv.py`` / ``vrwkv6.py`` exactly, so official checkpoints load as they are::

    img [B, 3, H, W] -> patch_embed (16x16 conv; bottom/right zero padding to a multiple of 16) -> [B, T, C]
      -> + pos_embed (stored at the construction grid, bicubic-resized to the actual Hp x Wp on every call)
      -> layers[0..depth)     block 0 applies ln0 first;   pre-norm:  x += g1 * att(ln1(x)); x += g2 * ffn(ln2(x))
                                                            post-norm: x += g1 * ln1(att(x)); x += g2 * ln2(ffn(x))
      -> ln1 (final norm) -> tokens [B, T, C] (raster order) or map [B, C, Hp, Wp]
    classifier: mean over tokens -> head.fc (T/S/B)  or  head.0 -> tanh -> head.2 (VRWKV-L)

Spatial mix (VRWKV): q-shift (quarters of C from the left, right, upper, lower neighbour), mix
``x*mu + shifted*(1-mu)``, ``out = output(sigmoid(r) * BiWKV(decay/T, first/T, k, v))`` (key_norm LayerNorm on
the WKV output for L).  The Bi-WKV is by default the official CUDA kernel's result ("official", see
:data:`BI_WKV`), which the released checkpoints were trained with; the paper formula is an option.  VRWKV6:
q-shift per 64-channel head, RWKV-6 data-dependent mixing ``x + (shifted-x)*(maa+lora)``,
``w_log = -exp(time_decay + lora)`` (not divided by T), bidirectional WKV-6, optional key_norm LayerNorm on
its output, ``out = output(ln_x(y) * silu(gate))`` with GroupNorm eps 1e-5.  Channel mix (both): q-shift,
VRWKV mixing, ``sigmoid(receptance) * value(relu(key)^2)`` (key_norm on the hidden layer).  The WKVs are in
:mod:`vrwkv_edge.ops.biwkv`.

Not implemented: VRWKV6's optional class token (off in every released config; its weight is an unexpected key).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops.biwkv import bi_wkv, bi_wkv6, bi_wkv6_ref, bi_wkv_official, bi_wkv_official_ref, bi_wkv_ref
from ..ops.custom_ops import bi_wkv6_custom, bi_wkv_custom_formula, bi_wkv_custom_official

VARIANTS = ("vrwkv", "vrwkv6")
LN_EPS = 1e-5
DEFAULT_WKV_IMPL = "official"        # the official CUDA kernels' results (see BI_WKV below)


@dataclass(frozen=True)
class VRWKVConfig:
    variant: str = "vrwkv"               # "vrwkv" (Bi-WKV, RWKV-4 style) or "vrwkv6" (RWKV-6 style)
    embed_dims: int = 192
    depth: int = 12
    patch_size: int = 16
    img_size: int = 224                  # construction size: pos_embed holds (img_size // patch_size)^2 positions
    in_channels: int = 3
    post_norm: bool = False
    init_values: Optional[float] = None  # layer scale: gamma1/gamma2 exist iff not None
    key_norm: bool = False
    hidden_rate: int = 4                 # channel-mix width = hidden_rate * embed_dims
    channel_gamma: float = 0.25          # q-shift: fraction of channels per direction
    shift_pixel: int = 1
    head_size: int = 64                  # VRWKV6 only
    mix_lora: int = 32                   # VRWKV6 only: time_maa_w2 is (5, mix_lora, C)
    decay_lora: int = 64                 # VRWKV6 only: time_decay_w1 is (C, decay_lora)
    drop_path_rate: float = 0.0
    num_classes: int = 1000              # 0: backbone only, no head
    head_hidden: Optional[int] = None    # MLP head Linear(C, hidden)-Tanh-Linear(hidden, classes) (VRWKV-L)
    test_size: int = 224                 # crop that classify() feeds the model

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"VRWKVConfig.variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.variant == "vrwkv6":
            if self.embed_dims % self.head_size:
                raise ValueError(f"VRWKVConfig: embed_dims {self.embed_dims} is not a multiple of head_size "
                                 f"{self.head_size}")

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size


_V6 = dict(variant="vrwkv6")
VRWKV_PRESETS: dict[str, VRWKVConfig] = {
    "vrwkv_t": VRWKVConfig(embed_dims=192),
    "vrwkv_s": VRWKVConfig(embed_dims=384, post_norm=True, init_values=1.0, drop_path_rate=0.3),
    "vrwkv_b": VRWKVConfig(embed_dims=768, post_norm=True, init_values=1e-5, drop_path_rate=0.5),
    "vrwkv_l": VRWKVConfig(embed_dims=1024, depth=24, img_size=192, post_norm=True, init_values=1e-5,
                           key_norm=True, drop_path_rate=0.1, head_hidden=3072, test_size=384),
    "vrwkv6_t": VRWKVConfig(**_V6, embed_dims=192),
    "vrwkv6_s": VRWKVConfig(**_V6, embed_dims=384, post_norm=True, init_values=1e-5, drop_path_rate=0.3),
    "vrwkv6_b": VRWKVConfig(**_V6, embed_dims=768, post_norm=True, init_values=1e-5, drop_path_rate=0.5),
}


def get_config(arch: Union[str, VRWKVConfig], **overrides) -> VRWKVConfig:
    """A preset by name ("vrwkv_t", "VRWKV6-S", ...) or a config, with field overrides."""
    if isinstance(arch, VRWKVConfig):
        return replace(arch, **overrides)
    name = str(arch).lower().replace("-", "_")
    if name not in VRWKV_PRESETS:
        raise ValueError(f"unknown Vision-RWKV arch {arch!r}; choose one of {sorted(VRWKV_PRESETS)}")
    return replace(VRWKV_PRESETS[name], **overrides)


# ---- building blocks ------------------------------------------------------------------------------------------

def q_shift(x: Tensor, grid: tuple[int, int], shift: int = 1, gamma: float = 0.25,
            group_size: Optional[int] = None) -> Tensor:
    """Quad-directional token shift. x: [B, T, C] in raster order over ``grid`` = (Hp, Wp).

    Within each group of channels (all C, or each head of ``group_size`` for VRWKV6), with the official
    boundaries ``b_i = int(size*gamma*i)`` (not ``i*int(size*gamma)``: they differ when size*gamma is not an
    integer, e.g. C = 6 gives 1, 3, 4, 6): [0,b1) takes the left neighbour, [b1,b2) the right, [b2,b3) the one
    above, [b3,b4) the one below; the rest is unchanged; neighbours outside the grid are zero."""
    B, T, C = x.shape
    Hp, Wp = grid
    S, s = group_size or C, shift
    b1, b2, b3, b4 = (int(S * gamma * i) for i in range(1, 5))                  # as the official q_shift
    x = x.view(B, Hp, Wp, C // S, S)
    xp = F.pad(x, (0, 0, 0, 0, s, s, s, s))                                     # zero border of s on H and W
    parts = [xp[:, s:s + Hp, 0:Wp, :, :b1],                                      # x[h, w - s]
             xp[:, s:s + Hp, 2 * s:2 * s + Wp, :, b1:b2],                        # x[h, w + s]
             xp[:, 0:Hp, s:s + Wp, :, b2:b3],                                    # x[h - s, w]
             xp[:, 2 * s:2 * s + Hp, s:s + Wp, :, b3:b4],                        # x[h + s, w]
             x[..., b4:]]
    return torch.cat(parts, -1).view(B, T, C)


def _ratios(layer_id: int, depth: int) -> tuple[float, float]:
    return layer_id / max(depth - 1, 1), 1.0 - layer_id / depth      # 0 -> 1 and 1 -> ~0 over depth


def _channel_frac(C: int) -> Tensor:
    return torch.arange(C, dtype=torch.float32) / C


class PatchEmbed(nn.Module):
    """16x16 conv with stride 16 after zero padding of the bottom and right edges (mmcv ``padding='corner'``)."""

    def __init__(self, cfg: VRWKVConfig):
        super().__init__()
        self.patch_size = cfg.patch_size
        self.projection = nn.Conv2d(cfg.in_channels, cfg.embed_dims, cfg.patch_size, stride=cfg.patch_size)

    def forward(self, img: Tensor) -> tuple[Tensor, tuple[int, int]]:
        p = self.patch_size
        img = F.pad(img, (0, (-img.shape[-1]) % p, 0, (-img.shape[-2]) % p))
        x = self.projection(img)                                                  # [B, C, Hp, Wp]
        return x.flatten(2).transpose(1, 2), (x.shape[2], x.shape[3])


class SpatialMix(nn.Module):
    """VRWKV attention replacement: q-shift, RWKV-4 mixing, Bi-WKV over all tokens."""

    def __init__(self, cfg: VRWKVConfig, layer_id: int):
        super().__init__()
        C = cfg.embed_dims
        self.shift, self.gamma, self.impl = cfg.shift_pixel, cfg.channel_gamma, DEFAULT_WKV_IMPL
        r01, r10 = _ratios(layer_id, cfg.depth)
        c = torch.arange(C, dtype=torch.float32) / max(C - 1, 1)
        self.spatial_decay = nn.Parameter(-5 + 8 * c ** (0.7 + 1.3 * r01))       # doc 5.4 "fancy" init
        self.spatial_first = nn.Parameter(math.log(0.3) + 0.5 * (torch.arange(C) % 3 - 1).float())
        x = _channel_frac(C).view(1, 1, C)
        self.spatial_mix_k = nn.Parameter(x ** r10)
        self.spatial_mix_v = nn.Parameter(x ** r10 + 0.3 * r01)
        self.spatial_mix_r = nn.Parameter(x ** (0.5 * r10))
        self.key = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(C, C, bias=False)
        self.receptance = nn.Linear(C, C, bias=False)
        self.output = nn.Linear(C, C, bias=False)
        self.key_norm = nn.LayerNorm(C, eps=LN_EPS) if cfg.key_norm else None

    def forward(self, x: Tensor, grid: tuple[int, int]) -> Tensor:
        T = x.shape[1]
        xx = q_shift(x, grid, self.shift, self.gamma)
        dx = x - xx                                        # x*mu + xx*(1-mu) = xx + (x-xx)*mu
        xk = torch.addcmul(xx, dx, self.spatial_mix_k)
        xv = torch.addcmul(xx, dx, self.spatial_mix_v)
        xr = torch.addcmul(xx, dx, self.spatial_mix_r)
        k, v, sr = self.key(xk), self.value(xv), torch.sigmoid(self.receptance(xr))
        # w and u are divided by the current token count (doc 5.3), so decay is relative to the image size.
        y = BI_WKV[self.impl](self.spatial_decay / T, self.spatial_first / T, k, v).to(x.dtype)
        if self.key_norm is not None:
            y = self.key_norm(y)
        return self.output(sr * y)


class SpatialMixV6(nn.Module):
    """VRWKV6 attention replacement: per-head q-shift, RWKV-6 data-dependent mixing and decay, bidirectional WKV-6."""

    def __init__(self, cfg: VRWKVConfig, layer_id: int):
        super().__init__()
        C, N, D = cfg.embed_dims, cfg.head_size, cfg.mix_lora
        H = C // N
        self.shift, self.gamma, self.head_size, self.impl = cfg.shift_pixel, cfg.channel_gamma, N, DEFAULT_WKV_IMPL
        r01, r10 = _ratios(layer_id, cfg.depth)
        x = _channel_frac(C).view(1, 1, C)
        self.time_maa_x = nn.Parameter(1 - x ** r10)
        self.time_maa_w = nn.Parameter(1 - x ** r10)
        self.time_maa_k = nn.Parameter(1 - x ** r10)
        self.time_maa_v = nn.Parameter(1 - (x ** r10 + 0.3 * r01))
        self.time_maa_r = nn.Parameter(1 - x ** (0.5 * r10))
        self.time_maa_g = nn.Parameter(1 - x ** (0.5 * r10))
        self.time_maa_w1 = nn.Parameter(torch.zeros(C, 5 * D))
        self.time_maa_w2 = nn.Parameter(torch.empty(5, D, C).uniform_(-0.01, 0.01))
        c = torch.arange(C, dtype=torch.float32) / max(C - 1, 1)
        self.time_decay = nn.Parameter((-6 + 5 * c ** (0.7 + 1.3 * r01)).view(1, 1, C))
        self.time_decay_w1 = nn.Parameter(torch.zeros(C, cfg.decay_lora))
        self.time_decay_w2 = nn.Parameter(torch.empty(cfg.decay_lora, C).uniform_(-0.01, 0.01))
        self.time_faaaa = nn.Parameter((r01 * (1 - c) + 0.1 * (torch.arange(C) % 3 - 1)).view(H, N))
        self.receptance = nn.Linear(C, C, bias=False)
        self.key = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(C, C, bias=False)
        self.gate = nn.Linear(C, C, bias=False)
        self.output = nn.Linear(C, C, bias=False)
        self.key_norm = nn.LayerNorm(C, eps=LN_EPS) if cfg.key_norm else None   # official: on the WKV, before ln_x
        self.ln_x = nn.GroupNorm(H, C, eps=LN_EPS)        # eps 1e-5 here, not the language model's 64e-5

    def forward(self, x: Tensor, grid: tuple[int, int]) -> Tensor:
        B, T, C = x.shape
        N = self.head_size
        H = C // N
        dx = q_shift(x, grid, self.shift, self.gamma, group_size=N) - x
        lora = torch.tanh(torch.addcmul(x, dx, self.time_maa_x) @ self.time_maa_w1)
        lora = lora.view(B, T, 5, -1)
        mw, mk, mv, mr, mg = torch.einsum("btfd,fdc->fbtc", lora, self.time_maa_w2).unbind(0)   # order w,k,v,r,g
        xw = torch.addcmul(x, dx, self.time_maa_w + mw)
        xk = torch.addcmul(x, dx, self.time_maa_k + mk)
        xv = torch.addcmul(x, dx, self.time_maa_v + mv)
        xr = torch.addcmul(x, dx, self.time_maa_r + mr)
        xg = torch.addcmul(x, dx, self.time_maa_g + mg)
        r, k, v, g = self.receptance(xr), self.key(xk), self.value(xv), F.silu(self.gate(xg))
        w = self.time_decay + torch.tanh(xw @ self.time_decay_w1) @ self.time_decay_w2
        w_log = -torch.exp(w.float())                                            # log decay, in [-inf, 0)
        heads = [t.reshape(B, T, H, N) for t in (r, k, v, w_log)]
        y = BI_WKV6[self.impl](*heads, self.time_faaaa).reshape(B, T, C).to(x.dtype)
        if self.key_norm is not None:
            y = self.key_norm(y)
        y = self.ln_x(y.view(B * T, C)).view(B, T, C)
        return self.output(y * g)


class ChannelMix(nn.Module):
    """FFN replacement (both variants): q-shift, RWKV-4 mixing, ``sigmoid(r) * value(relu(key)^2)``."""

    def __init__(self, cfg: VRWKVConfig, layer_id: int):
        super().__init__()
        C, hidden = cfg.embed_dims, cfg.hidden_rate * cfg.embed_dims
        self.shift, self.gamma = cfg.shift_pixel, cfg.channel_gamma
        self.group_size = cfg.head_size if cfg.variant == "vrwkv6" else None
        _, r10 = _ratios(layer_id, cfg.depth)
        x = _channel_frac(C).view(1, 1, C)
        self.spatial_mix_k = nn.Parameter(x ** r10)
        self.spatial_mix_r = nn.Parameter(x ** r10)
        self.key = nn.Linear(C, hidden, bias=False)
        self.receptance = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(hidden, C, bias=False)
        self.key_norm = nn.LayerNorm(hidden, eps=LN_EPS) if cfg.key_norm else None

    def forward(self, x: Tensor, grid: tuple[int, int]) -> Tensor:
        xx = q_shift(x, grid, self.shift, self.gamma, self.group_size)
        dx = x - xx
        xk = torch.addcmul(xx, dx, self.spatial_mix_k)
        xr = torch.addcmul(xx, dx, self.spatial_mix_r)
        k = torch.square(torch.relu(self.key(xk)))
        if self.key_norm is not None:
            k = self.key_norm(k)
        return torch.sigmoid(self.receptance(xr)) * self.value(k)


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per sample while training."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.rand(x.shape[0], *(1,) * (x.dim() - 1), device=x.device) >= self.p
        return x * keep.to(x.dtype) / (1 - self.p)


class Block(nn.Module):
    def __init__(self, cfg: VRWKVConfig, layer_id: int, drop_path: float):
        super().__init__()
        C = cfg.embed_dims
        self.layer_id, self.post_norm = layer_id, cfg.post_norm
        self.ln0 = nn.LayerNorm(C, eps=LN_EPS) if layer_id == 0 else None
        self.ln1 = nn.LayerNorm(C, eps=LN_EPS)
        self.ln2 = nn.LayerNorm(C, eps=LN_EPS)
        self.att = (SpatialMix if cfg.variant == "vrwkv" else SpatialMixV6)(cfg, layer_id)
        self.ffn = ChannelMix(cfg, layer_id)
        self.drop_path = DropPath(drop_path)
        if cfg.init_values is not None:
            self.gamma1 = nn.Parameter(torch.full((C,), float(cfg.init_values)))
            self.gamma2 = nn.Parameter(torch.full((C,), float(cfg.init_values)))
        else:
            self.gamma1 = self.gamma2 = None

    def forward(self, x: Tensor, grid: tuple[int, int]) -> Tensor:
        if self.ln0 is not None:
            x = self.ln0(x)
        if self.post_norm:          # att/ffn see the raw residual stream; ln1/ln2 normalise their outputs
            a = self.ln1(self.att(x, grid))
            x = x + self.drop_path(a if self.gamma1 is None else self.gamma1 * a)
            f = self.ln2(self.ffn(x, grid))
        else:
            a = self.att(self.ln1(x), grid)
            x = x + self.drop_path(a if self.gamma1 is None else self.gamma1 * a)
            f = self.ffn(self.ln2(x), grid)
        return x + self.drop_path(f if self.gamma2 is None else self.gamma2 * f)


def resize_pos_embed(pos: Tensor, src: tuple[int, int], dst: tuple[int, int]) -> Tensor:
    """[1, Hs*Ws, C] -> [1, Hd*Wd, C], bicubic (align_corners=False); unchanged when the grids agree."""
    if src == dst:
        return pos
    C = pos.shape[-1]
    grid = pos.reshape(1, src[0], src[1], C).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=dst, mode="bicubic", align_corners=False)
    return grid.flatten(2).transpose(1, 2).to(pos.dtype)


class VRWKVBackbone(nn.Module):
    """Patch embedding, position embedding, blocks and the final norm. Parameter names as ``backbone.*``."""

    def __init__(self, cfg: VRWKVConfig):
        super().__init__()
        self.config = cfg
        self.patch_embed = PatchEmbed(cfg)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.grid * cfg.grid, cfg.embed_dims))
        rates = [cfg.drop_path_rate * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]   # linear over depth
        self.layers = nn.ModuleList(Block(cfg, i, rates[i]) for i in range(cfg.depth))
        self.ln1 = nn.LayerNorm(cfg.embed_dims, eps=LN_EPS)              # final norm (same short name as blocks')

    def forward_tokens(self, img: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """img [B, 3, H, W] -> (tokens [B, Hp*Wp, C] after the final norm, (Hp, Wp)); any H, W."""
        x, grid = self.patch_embed(img)
        g = self.config.grid
        x = x + resize_pos_embed(self.pos_embed, (g, g), grid)
        for layer in self.layers:
            x = layer(x, grid)
        return self.ln1(x), grid

    def set_wkv_impl(self, impl: str) -> "VRWKVBackbone":
        """Which WKV the spatial mixes use (see :data:`BI_WKV`): "official" (the default: what the released
        checkpoints were trained and evaluated with), "official_ref", "formula" or "ref"; the old names "fast"
        (= "formula") and "kernel" (= "official") still work."""
        table = BI_WKV if self.config.variant == "vrwkv" else BI_WKV6
        impl = WKV_IMPL_ALIASES.get(impl, impl)
        if impl not in table:
            raise ValueError(f"wkv impl must be one of {sorted(table)} for {self.config.variant}, got {impl!r}")
        for layer in self.layers:
            layer.att.impl = impl
        return self

    def forward(self, img: Tensor) -> Tensor:
        """img [B, 3, H, W] -> feature map [B, C, Hp, Wp]."""
        x, (Hp, Wp) = self.forward_tokens(img)
        return x.transpose(1, 2).reshape(x.shape[0], -1, Hp, Wp)


class _LinearHead(nn.Module):                  # mmcls LinearClsHead: parameters ``head.fc.*``
    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x)


class VisionRWKV(nn.Module):
    """Image classifier (``backbone`` + global average pooling + ``head``), also usable as a vision tower.

    ``forward(img)`` -> logits [B, classes]; ``forward_features(img)`` -> [B, C, Hp, Wp];
    ``forward_tokens(img)`` -> [B, Hp*Wp, C] after the final norm (what a VisualRWKV projector consumes)."""

    def __init__(self, cfg: VRWKVConfig):
        super().__init__()
        self.config = cfg
        self.backbone = VRWKVBackbone(cfg)
        C, n = cfg.embed_dims, cfg.num_classes
        if n == 0:
            self.head = None
        elif cfg.head_hidden:
            self.head = nn.Sequential(nn.Linear(C, cfg.head_hidden), nn.Tanh(), nn.Linear(cfg.head_hidden, n))
        else:
            self.head = _LinearHead(C, n)

    def forward_tokens(self, img: Tensor) -> Tensor:
        return self.backbone.forward_tokens(img)[0]

    def forward_features(self, img: Tensor) -> Tensor:
        return self.backbone(img)

    def forward(self, img: Tensor) -> Tensor:
        if self.head is None:
            raise RuntimeError("this Vision-RWKV model has no classification head (num_classes=0); "
                               "use forward_tokens() or forward_features()")
        return self.head(self.forward_tokens(img).mean(1))

    def set_wkv_impl(self, impl: str) -> "VisionRWKV":
        """See :meth:`VRWKVBackbone.set_wkv_impl`."""
        self.backbone.set_wkv_impl(impl)
        return self


# The WKV implementations by name.  VRWKV: the official CUDA kernel departs from the paper formula at every
# T >= 2 (doc 5.4: distance |t-i| at its 32 chunk starts, a "ghost" term inside them, eps 1e-6 after rescaling),
# and the released checkpoints were trained and evaluated with it, so "official" (its exact O(T) form) is the
# default; "official_ref" is the operation-by-operation port of the kernel; "formula" is the paper formula in
# O(T), "ref" the same in O(T^2).  VRWKV6: the official kernel computes the formula (no split, no eps), so
# "official" and "formula" are the same exact chunked form and "official_ref" and "ref" the O(T^2) formula.
# "custom_*" / "custom": the same arithmetic as one torch custom op each (:mod:`vrwkv_edge.ops.custom_ops`), which
# the exporter writes as one node of the ``vrwkv`` ONNX domain (``BiWKV`` with its ``semantics``, ``BiWKV6``).
BI_WKV = {"official": bi_wkv_official, "official_ref": bi_wkv_official_ref, "formula": bi_wkv, "ref": bi_wkv_ref,
          "custom_official": bi_wkv_custom_official, "custom_formula": bi_wkv_custom_formula}
BI_WKV6 = {"official": bi_wkv6, "official_ref": bi_wkv6_ref, "formula": bi_wkv6, "ref": bi_wkv6_ref,
           "custom": bi_wkv6_custom}
# The custom-op implementation that computes what each implementation computes (VRWKV: the node's semantics).
CUSTOM_WKV_IMPLS = {"vrwkv": {"official": "custom_official", "official_ref": "custom_official",
                              "formula": "custom_formula", "ref": "custom_formula",
                              "custom_official": "custom_official", "custom_formula": "custom_formula"},
                    "vrwkv6": {name: "custom" for name in BI_WKV6}}
WKV_IMPL_ALIASES = {"fast": "formula", "kernel": "official"}


def build_vision_rwkv(arch: Union[str, VRWKVConfig] = "vrwkv_t", device=None, **overrides) -> VisionRWKV:
    """A randomly initialised model; ``device="meta"`` builds it without memory (e.g. to count parameters)."""
    cfg = get_config(arch, **overrides)
    with torch.device(device or "cpu"):
        return VisionRWKV(cfg)
