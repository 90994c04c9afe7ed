"""RWKV-7 "Goose" (x070) language model, parameter names as in RWKV-LM (``RWKV-v7``) checkpoints.

Per token, layer l (xa = ln1(x), dx = previous xa - xa; see ``vrwkv_edge/ops/wkv7.py`` for the WKV)::

    x_c   = xa + dx * x_c                              c in r, w, k, v, a, g
    r, k, v = receptance(x_r), key(x_k), value(x_v)
    w_log = -exp(-0.5) * sigmoid(w0 + tanh(x_w w1) w2)  log decay, fp32, in (-0.6066, 0)
    a     = sigmoid(a0 + (x_a a1) a2)                   in-context learning rate
    g     = sigmoid(x_g g1) g2
    kk    = normalize_per_head(k * k_k);   k = k * (1 + (a - 1) * k_a)
    v     = v (layer 0, kept as v_first)   or   v + (v_first - v) * sigmoid(v0 + (x_v v1) v2)
    y     = WKV7(r, w_log, k, v, a=-kk, b=kk*a);   y = ln_x(y) + (sum_head r*k*r_k) v
    x    += output(y * g)
    FFN:    x += value(relu(key(xf + dx * x_k))^2)

Layer 0 has no ``v0/v1/v2`` (RWKV-LM checkpoints may still carry unused ones; the loader drops them).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import LN_X_EPS, RWKVConfig
from ..ops.dispatch import WkvImpl
from ..ops.wkv7 import DEFAULT_CHUNK
from .base import RWKVModel, head_group_norm, init_common_, vec

# exp(-0.5): the largest per-token log decay magnitude of x070 (decay = exp(-exp(-0.5) * sigmoid(w_hat))).
DECAY_SCALE = math.exp(-0.5)
MIX_NAMES = ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g")


class TimeMix(nn.Module):
    def __init__(self, cfg: RWKVConfig, layer_id: int):
        super().__init__()
        C, H, N = cfg.n_embd, cfg.n_head, cfg.head_size
        self.layer_id, self.n_head, self.head_size = layer_id, H, N
        for name in MIX_NAMES:
            setattr(self, name, nn.Parameter(torch.empty(1, 1, C)))
        lora = cfg.lora
        self.w0 = nn.Parameter(torch.empty(1, 1, C))
        self.w1 = nn.Parameter(torch.empty(C, lora["w"]))
        self.w2 = nn.Parameter(torch.empty(lora["w"], C))
        self.a0 = nn.Parameter(torch.empty(1, 1, C))
        self.a1 = nn.Parameter(torch.empty(C, lora["a"]))
        self.a2 = nn.Parameter(torch.empty(lora["a"], C))
        if layer_id > 0:
            self.v0 = nn.Parameter(torch.empty(1, 1, C))
            self.v1 = nn.Parameter(torch.empty(C, lora["v"]))
            self.v2 = nn.Parameter(torch.empty(lora["v"], C))
        self.g1 = nn.Parameter(torch.empty(C, lora["g"]))
        self.g2 = nn.Parameter(torch.empty(lora["g"], C))
        self.k_k = nn.Parameter(torch.empty(1, 1, C))
        self.k_a = nn.Parameter(torch.empty(1, 1, C))
        self.r_k = nn.Parameter(torch.empty(H, N))
        self.receptance = nn.Linear(C, C, bias=False)
        self.key = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(C, C, bias=False)
        self.output = nn.Linear(C, C, bias=False)
        self.ln_x = nn.GroupNorm(H, C, eps=LN_X_EPS)

    def forward(self, xa: Tensor, dx: Tensor, wkv: Tensor, v_first: Optional[Tensor], seq: bool,
                impl: WkvImpl, chunk_size: Optional[int] = None):
        """xa: ln1 output ([B, T, C] if seq else [B, C]); dx = previous - current. Shared by both paths;
        only the WKV call differs.  Returns ``(out, new_wkv, v_first)``."""
        H, N = self.n_head, self.head_size
        xr, xw, xk, xv, xa_, xg = (xa + dx * vec(getattr(self, n)) for n in MIX_NAMES)
        r, k, v = self.receptance(xr), self.key(xk), self.value(xv)
        w_hat = vec(self.w0) + torch.tanh(xw @ self.w1) @ self.w2
        w_log = -DECAY_SCALE * torch.sigmoid(w_hat.float())
        a = torch.sigmoid(vec(self.a0) + (xa_ @ self.a1) @ self.a2)
        g = torch.sigmoid(xg @ self.g1) @ self.g2

        heads = lambda t: t.reshape(*t.shape[:-1], H, N)          # noqa: E731  [..., C] -> [..., H, N]
        kk = F.normalize(heads(k * vec(self.k_k)).float(), dim=-1, p=2.0)
        k = k * (1 + (a - 1) * vec(self.k_a))
        if self.layer_id == 0:
            v_first = v
        else:
            v = v + (v_first - v) * torch.sigmoid(vec(self.v0) + (xv @ self.v1) @ self.v2)
        a_h = heads(a).float()
        args = (heads(r), heads(w_log), heads(k), heads(v), -kk, kk * a_h, wkv)
        if seq:
            y, wkv = impl.wkv7_seq(*args, chunk_size=chunk_size or DEFAULT_CHUNK)
        else:
            y, wkv = impl.wkv7_step(*args)
        y = head_group_norm(y.reshape(*y.shape[:-2], H * N), self.ln_x, H)
        bonus = (heads(r).float() * heads(k).float() * self.r_k.float()).sum(-1, keepdim=True) * heads(v).float()
        y = (y + bonus.reshape(y.shape)).to(xa.dtype)
        return self.output(y * g), wkv, v_first


class ChannelMix(nn.Module):
    def __init__(self, cfg: RWKVConfig, layer_id: int):
        super().__init__()
        self.x_k = nn.Parameter(torch.empty(1, 1, cfg.n_embd))
        self.key = nn.Linear(cfg.n_embd, cfg.dim_ffn, bias=False)
        self.value = nn.Linear(cfg.dim_ffn, cfg.n_embd, bias=False)

    def forward(self, xf: Tensor, dx: Tensor) -> Tensor:
        return self.value(torch.relu(self.key(xf + dx * vec(self.x_k))) ** 2)


class RWKV7(RWKVModel):
    TimeMix = TimeMix
    ChannelMix = ChannelMix

    def init_random_(self, seed: int = 0) -> "RWKV7":
        """Seeded random weights in the ranges trained models have (for tests and benchmarks)."""
        rand, randn = init_common_(self, seed)
        with torch.no_grad():
            for block in self.blocks:
                att, C = block.att, self.cfg.n_embd
                for name in MIX_NAMES:
                    getattr(att, name).copy_(rand(1, 1, C))
                att.w0.copy_(randn(1, 1, C) - 0.5)
                att.a0.copy_(0.5 * randn(1, 1, C))
                att.k_k.copy_(0.85 + 0.1 * randn(1, 1, C))
                att.k_a.copy_(rand(1, 1, C))
                att.r_k.copy_(0.3 * randn(*att.r_k.shape))
                for name in ("w1", "a1", "v1", "g1", "w2", "a2", "v2", "g2", "v0"):
                    if hasattr(att, name):
                        p = getattr(att, name)
                        p.copy_(randn(*p.shape) * (0.3 if name.endswith("0") else p.shape[0] ** -0.5))
                block.ffn.x_k.copy_(rand(1, 1, C))
        return self
