"""RWKV-6 "Finch" (x060) language model, parameter names as in RWKV-LM (``RWKV-v5/src/model.py``) checkpoints.

Per token, layer l (xa = ln1(x), dx = previous xa - xa; see ``vrwkv_edge/ops/wkv6.py`` for the WKV)::

    m_w, m_k, m_v, m_r, m_g = tanh((xa + dx * time_maa_x) time_maa_w1) time_maa_w2     (5 LoRAs, that order)
    x_c   = xa + dx * (time_maa_c + m_c)                  data-dependent token shift ("ddlerp")
    r, k, v = receptance(x_r), key(x_k), value(x_v);   g = silu(gate(x_g))
    w_log = -exp(time_decay + tanh(x_w time_decay_w1) time_decay_w2)   log decay, fp32
    y     = ln_x(WKV6(r, k, v, w_log, u=time_faaaa))
    x    += output(y * g)
    FFN:    x += sigmoid(receptance(xf + dx * time_maa_r)) * value(relu(key(xf + dx * time_maa_k))^2)
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import LN_X_EPS, RWKVConfig
from ..ops.dispatch import WkvImpl
from ..ops.wkv6 import DEFAULT_CHUNK
from .base import RWKVModel, head_group_norm, init_common_, vec

MAA_NAMES = ("time_maa_w", "time_maa_k", "time_maa_v", "time_maa_r", "time_maa_g")   # LoRA output order


class TimeMix(nn.Module):
    def __init__(self, cfg: RWKVConfig, layer_id: int):
        super().__init__()
        C, H, N = cfg.n_embd, cfg.n_head, cfg.head_size
        d_mix, d_decay = cfg.lora["mix"], cfg.lora["decay"]
        self.layer_id, self.n_head, self.head_size = layer_id, H, N
        self.time_maa_x = nn.Parameter(torch.empty(1, 1, C))
        for name in MAA_NAMES:
            setattr(self, name, nn.Parameter(torch.empty(1, 1, C)))
        self.time_maa_w1 = nn.Parameter(torch.empty(C, 5 * d_mix))
        self.time_maa_w2 = nn.Parameter(torch.empty(5, d_mix, C))
        self.time_decay = nn.Parameter(torch.empty(1, 1, C))
        self.time_decay_w1 = nn.Parameter(torch.empty(C, d_decay))
        self.time_decay_w2 = nn.Parameter(torch.empty(d_decay, C))
        self.time_faaaa = nn.Parameter(torch.empty(H, N))
        self.receptance = nn.Linear(C, C, bias=False)
        self.key = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(C, C, bias=False)
        self.output = nn.Linear(C, C, bias=False)
        self.gate = nn.Linear(C, C, bias=False)
        self.ln_x = nn.GroupNorm(H, C, eps=LN_X_EPS)

    def forward(self, xa: Tensor, dx: Tensor, wkv: Tensor, v_first: Optional[Tensor], seq: bool,
                impl: WkvImpl, chunk_size: Optional[int] = None):
        """xa: ln1 output ([B, T, C] if seq else [B, C]); dx = previous - current. Shared by both paths;
        only the WKV call differs.  ``v_first`` is RWKV-7's and passes through.  Returns ``(out, wkv, v_first)``."""
        H, N = self.n_head, self.head_size
        lora = torch.tanh((xa + dx * vec(self.time_maa_x)) @ self.time_maa_w1)
        lora = lora.reshape(*lora.shape[:-1], 5, -1)                                     # [..., 5, D]
        # [..., 5, 1, D] @ [5, D, C]: a batched MatMul (no Einsum, which TensorRT 8.6 cannot parse)
        mixes = (lora.unsqueeze(-2) @ self.time_maa_w2).squeeze(-2).unbind(-2)          # 5 x [..., C]
        xw, xk, xv, xr, xg = (xa + dx * (vec(getattr(self, n)) + m) for n, m in zip(MAA_NAMES, mixes))
        r, k, v = self.receptance(xr), self.key(xk), self.value(xv)
        g = F.silu(self.gate(xg))
        w_hat = vec(self.time_decay).float() + (torch.tanh(xw @ self.time_decay_w1) @ self.time_decay_w2).float()
        w_log = -torch.exp(w_hat)

        heads = lambda t: t.reshape(*t.shape[:-1], H, N)          # noqa: E731  [..., C] -> [..., H, N]
        args = (heads(r), heads(k), heads(v), heads(w_log), self.time_faaaa, wkv)
        if seq:
            y, wkv = impl.wkv6_seq(*args, chunk_size=chunk_size or DEFAULT_CHUNK)
        else:
            y, wkv = impl.wkv6_step(*args)
        y = head_group_norm(y.reshape(*y.shape[:-2], H * N), self.ln_x, H).to(xa.dtype)
        return self.output(y * g), wkv, v_first


class ChannelMix(nn.Module):
    def __init__(self, cfg: RWKVConfig, layer_id: int):
        super().__init__()
        C = cfg.n_embd
        self.time_maa_k = nn.Parameter(torch.empty(1, 1, C))
        self.time_maa_r = nn.Parameter(torch.empty(1, 1, C))
        self.key = nn.Linear(C, cfg.dim_ffn, bias=False)
        self.receptance = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(cfg.dim_ffn, C, bias=False)

    def forward(self, xf: Tensor, dx: Tensor) -> Tensor:
        k = torch.relu(self.key(xf + dx * vec(self.time_maa_k))) ** 2
        return torch.sigmoid(self.receptance(xf + dx * vec(self.time_maa_r))) * self.value(k)


class RWKV6(RWKVModel):
    TimeMix = TimeMix
    ChannelMix = ChannelMix

    def init_random_(self, seed: int = 0) -> "RWKV6":
        """Seeded random weights in the ranges trained models have (for tests and benchmarks)."""
        rand, randn = init_common_(self, seed)
        with torch.no_grad():
            for block in self.blocks:
                att, C = block.att, self.cfg.n_embd
                for name in ("time_maa_x",) + MAA_NAMES:
                    getattr(att, name).copy_(rand(1, 1, C))
                # decay speeds from fast to slow across channels, as RWKV-LM initialises them
                att.time_decay.copy_(torch.linspace(-6, 1, C).view(1, 1, C) + 0.3 * randn(1, 1, C))
                att.time_faaaa.copy_(0.5 * randn(*att.time_faaaa.shape))
                for name in ("time_maa_w1", "time_decay_w1"):
                    getattr(att, name).copy_(randn(*getattr(att, name).shape) * C ** -0.5)
                att.time_maa_w2.copy_(0.1 * randn(*att.time_maa_w2.shape))
                att.time_decay_w2.copy_(0.1 * randn(*att.time_decay_w2.shape))
                block.ffn.time_maa_k.copy_(rand(1, 1, C))
                block.ffn.time_maa_r.copy_(rand(1, 1, C))
        return self
