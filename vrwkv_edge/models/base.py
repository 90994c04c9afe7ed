"""The skeleton RWKV-6 and RWKV-7 share: embedding, blocks, output head, and the two execution paths.

    x = ln0(emb[token])                      # ln0 lives in block 0, applied to ids and input embeddings alike
    for each block:  x = x + TimeMix(ln1(x));  x = x + ChannelMix(ln2(x))
    logits = head(ln_out(x))

``forward`` runs a [B, T] sequence with the chunked WKV; ``step`` runs one token [B] with the per-token WKV.
Both go through the same per-block code (``Block.run``), differing only in how the token shift is formed and
which WKV function is called.  ``step`` is a pure tensor function (no ``.item()``, no data-dependent branches,
no in-place writes), the function export traces.  The version modules (``rwkv6.py``, ``rwkv7.py``) supply
``TimeMix`` and ``ChannelMix`` with the official parameter names, so checkpoints load with ``strict=True``.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import LN_EPS, LN_X_EPS, RWKVConfig
from ..ops.dispatch import DEFAULT_WKV_IMPL, WkvImpl, get_wkv_impl
from ..state import State


def vec(p: Tensor) -> Tensor:
    """A (1, 1, C) checkpoint vector as (C,), so it broadcasts over both [B, T, C] and [B, C]."""
    return p.reshape(p.shape[-1])


def token_shift(x: Tensor, shift: Tensor, seq: bool) -> tuple[Tensor, Tensor]:
    """Returns ``(dx, new_shift)`` with ``dx = previous - current`` (the convention of the official code).
    seq: x [B, T, C], shift [B, C]; step: x [B, C]."""
    if seq:
        prev = torch.cat([shift.unsqueeze(1).to(x.dtype), x[:, :-1]], 1)
        return prev - x, x[:, -1]
    return shift.to(x.dtype) - x, x


def head_group_norm(y: Tensor, ln_x: nn.GroupNorm, n_head: int) -> Tensor:
    """``ln_x`` (GroupNorm with one group per head) on y [..., C], in fp32.  Written as a per-head layer norm
    plus a per-channel affine: the same arithmetic, and it exports as LayerNormalization (ONNX's
    GroupNormalization changed meaning between opsets 18 and 21)."""
    shape = y.shape
    y = y.float().reshape(*shape[:-1], n_head, shape[-1] // n_head)
    y = F.layer_norm(y, y.shape[-1:], eps=LN_X_EPS).reshape(shape)
    return y * ln_x.weight.float() + ln_x.bias.float()


class Block(nn.Module):
    def __init__(self, cfg: RWKVConfig, layer_id: int, time_mix: type, channel_mix: type):
        super().__init__()
        self.layer_id = layer_id
        if layer_id == 0:
            self.ln0 = nn.LayerNorm(cfg.n_embd, eps=LN_EPS)
        self.ln1 = nn.LayerNorm(cfg.n_embd, eps=LN_EPS)
        self.ln2 = nn.LayerNorm(cfg.n_embd, eps=LN_EPS)
        self.att = time_mix(cfg, layer_id)
        self.ffn = channel_mix(cfg, layer_id)

    def run(self, x: Tensor, layer_state: tuple[Tensor, Tensor, Tensor], v_first: Optional[Tensor],
            seq: bool, impl: WkvImpl, chunk_size: Optional[int] = None):
        """One block on x ([B, T, C] if seq else [B, C]) from this layer's ``(shift_att, wkv, shift_ffn)``.
        ``impl`` computes the WKV (the model's :attr:`RWKVModel.wkv`).  Returns ``(x, new_layer_state, v_first)``."""
        shift_att, wkv, shift_ffn = layer_state
        if self.layer_id == 0:
            x = self.ln0(x)
        xa = self.ln1(x)
        dx, new_shift_att = token_shift(xa, shift_att, seq)
        att_out, new_wkv, v_first = self.att(xa, dx, wkv, v_first, seq, impl, chunk_size)
        x = x + att_out
        xf = self.ln2(x)
        dx, new_shift_ffn = token_shift(xf, shift_ffn, seq)
        x = x + self.ffn(xf, dx)
        return x, (new_shift_att, new_wkv, new_shift_ffn), v_first


class RWKVModel(nn.Module):
    """Base class of :class:`~vrwkv_edge.models.rwkv6.RWKV6` and :class:`~vrwkv_edge.models.rwkv7.RWKV7`."""

    TimeMix: type
    ChannelMix: type

    def __init__(self, cfg: RWKVConfig):
        super().__init__()
        self.cfg = cfg
        self.emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg, i, self.TimeMix, self.ChannelMix) for i in range(cfg.n_layer))
        self.ln_out = nn.LayerNorm(cfg.n_embd, eps=LN_EPS)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.wkv_impl = DEFAULT_WKV_IMPL

    def set_wkv_impl(self, name: str) -> "RWKVModel":
        """Which WKV implementation both paths use (see :mod:`vrwkv_edge.ops.dispatch`): ``"torch"`` (default)
        or a registered one such as ``"native"``.  Checked now, so a missing build fails here, not mid-run."""
        get_wkv_impl(name)
        self.wkv_impl = name
        return self

    @property
    def wkv(self) -> WkvImpl:
        return get_wkv_impl(self.wkv_impl)

    # ---- sizes and state ----------------------------------------------------------------------------
    @property
    def version(self) -> str:
        return self.cfg.version

    @property
    def dtype(self) -> torch.dtype:
        return self.emb.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.emb.weight.device

    def new_state(self, batch_size: int = 1) -> State:
        c = self.cfg
        return State.zeros(c.n_layer, batch_size, c.n_embd, c.n_head, c.head_size, self.dtype, self.device)

    def state_or_new(self, state: Optional[State], batch_size: int) -> State:
        if state is None:
            return self.new_state(batch_size)
        if state.batch_size != batch_size:
            raise ValueError(f"state has batch size {state.batch_size} but the input has {batch_size}")
        return state

    def check_state(self, state: State, name: str = "state") -> None:
        c = self.cfg
        state.check(c.n_layer, c.n_embd, c.n_head, c.head_size, name)

    # ---- the two paths ------------------------------------------------------------------------------
    def _inputs(self, ids: Optional[Tensor], inputs_embeds: Optional[Tensor]) -> Tensor:
        if (ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of ids and inputs_embeds")
        if inputs_embeds is not None:
            if inputs_embeds.shape[-1:] != (self.cfg.n_embd,) or not inputs_embeds.is_floating_point():
                raise ValueError(f"inputs_embeds must be float [..., {self.cfg.n_embd}], got "
                                 f"{inputs_embeds.dtype} {tuple(inputs_embeds.shape)}")
            return inputs_embeds.to(self.dtype)
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise ValueError(f"token ids must be an integer tensor, got {ids.dtype}")
        # A data-dependent check: skipped while torch.compile traces the step (its graph would break here).
        if not torch.compiler.is_compiling() and ids.numel() and (ids.min() < 0 or ids.max() >= self.cfg.vocab_size):
            bad = ids[(ids < 0) | (ids >= self.cfg.vocab_size)][0].item()
            raise ValueError(f"token id {bad} is outside the vocabulary [0, {self.cfg.vocab_size})")
        return self.emb(ids)

    def run_blocks(self, x: Tensor, state: State, seq: bool, chunk_size: Optional[int] = None):
        """All blocks on embeddings x; returns (hidden before ln_out, new State)."""
        v_first = None
        new_layers = []
        impl = self.wkv
        for i, block in enumerate(self.blocks):
            x, layer_state, v_first = block.run(x, state.layer(i), v_first, seq, impl, chunk_size)
            new_layers.append(layer_state)
        return x, State(*(tuple(t) for t in zip(*new_layers)))

    def logits(self, hidden: Tensor) -> Tensor:
        return self.head(self.ln_out(hidden)).float()

    def forward(self, ids: Optional[Tensor] = None, state: Optional[State] = None, *,
                inputs_embeds: Optional[Tensor] = None, last_only: bool = False,
                chunk_size: Optional[int] = None) -> tuple[Tensor, State]:
        """A sequence: ids [B, T] (or inputs_embeds [B, T, C]) from ``state`` (zeros if None).
        Returns ``(logits [B, T, V] float32, new_state)``; with ``last_only`` the logits are [B, V]."""
        x = self._inputs(ids, inputs_embeds)
        if x.dim() != 3:
            raise ValueError(f"forward expects ids [B, T] or inputs_embeds [B, T, C], got {tuple(x.shape)}")
        state = self.state_or_new(state, x.shape[0])
        hidden, state = self.run_blocks(x, state, seq=True, chunk_size=chunk_size)
        return self.logits(hidden[:, -1] if last_only else hidden), state

    def step(self, ids: Optional[Tensor] = None, state: Optional[State] = None, *,
             inputs_embeds: Optional[Tensor] = None) -> tuple[Tensor, State]:
        """One token: ids [B] (or inputs_embeds [B, C]). Returns ``(logits [B, V] float32, new_state)``."""
        x = self._inputs(ids, inputs_embeds)
        if x.dim() != 2:
            raise ValueError(f"step expects ids [B] or inputs_embeds [B, C], got {tuple(x.shape)}")
        state = self.state_or_new(state, x.shape[0])
        hidden, state = self.run_blocks(x, state, seq=False)
        return self.logits(hidden), state

    # ---- information --------------------------------------------------------------------------------
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def info(self) -> dict:
        c = self.cfg
        return {"version": c.version, "n_layer": c.n_layer, "n_embd": c.n_embd, "n_head": c.n_head,
                "head_size": c.head_size, "vocab_size": c.vocab_size, "dim_ffn": c.dim_ffn, "lora": dict(c.lora),
                "parameters": self.num_parameters(), "dtype": str(self.dtype).replace("torch.", "")}


def init_common_(model: RWKVModel, seed: int):
    """Random weights of realistic scale for the parts both versions share (tests and benchmarks).
    Returns seeded ``rand(*shape)`` and ``randn(*shape)`` for the version-specific parameters."""
    gen = torch.Generator().manual_seed(seed)
    c = model.cfg
    with torch.no_grad():
        model.emb.weight.uniform_(-1e-1, 1e-1, generator=gen)
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.copy_(1 + 0.1 * torch.randn(m.weight.shape, generator=gen))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
            elif isinstance(m, nn.Linear):
                fan_in = m.weight.shape[1]
                m.weight.normal_(0, fan_in ** -0.5, generator=gen)
        model.head.weight.normal_(0, 0.5 * c.n_embd ** -0.5, generator=gen)
    return (lambda *s: torch.rand(s, generator=gen)), (lambda *s: torch.randn(s, generator=gen))
