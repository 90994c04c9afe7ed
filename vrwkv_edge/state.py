"""The one recurrent-state structure shared by RWKV-6 and RWKV-7 (and by every export of them).

Per layer ``i`` the state holds three tensors::

    shift_att[i]  [B, C]        the last ln1 output TimeMix saw (token shift), activation dtype
    wkv[i]        [B, H, N, N]  the WKV matrix, **always float32**, KEY-MAJOR: wkv[b, h, k, v]
    shift_ffn[i]  [B, C]        the last ln2 output ChannelMix saw (token shift), activation dtype

WKV orientation (the ONNX and C++ contract): ``wkv[b, h, i, j]`` pairs key channel ``i`` with value channel
``j`` for both versions, the layout of flash-linear-attention and of ONNX ``LinearAttention``.  In that
orientation the per-token updates are

    RWKV-6:  y = r^T (S + diag(u) k v^T);   S <- diag(w) S + k v^T
    RWKV-7:  S <- diag(w) S + b (a^T S) + k v^T;   y = S^T r

The official ``rwkv`` package stores RWKV-6 in this orientation and RWKV-7 transposed ([h, value, key]);
:meth:`State.to_official` / :meth:`State.from_official` convert.

Graph I/O names (ONNX Runtime GenAI convention): inputs ``past_key_values.{i}.shift_att``,
``past_key_values.{i}.wkv``, ``past_key_values.{i}.shift_ffn``; outputs ``present.{i}.*``; the flat order is
layer by layer, ``(shift_att, wkv, shift_ffn)`` within a layer, exactly :meth:`State.flat`.

The state is immutable from the models' point of view: ``forward``/``step`` return a new :class:`State` and
never write into the one they were given, so a state can be kept (a prompt prefix, an image) and reused.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from torch import Tensor

STATE_FIELDS = ("shift_att", "wkv", "shift_ffn")


@dataclass(frozen=True)
class State:
    shift_att: tuple[Tensor, ...]
    wkv: tuple[Tensor, ...]
    shift_ffn: tuple[Tensor, ...]

    def __post_init__(self):
        if not (len(self.shift_att) == len(self.wkv) == len(self.shift_ffn)):
            raise ValueError(
                f"State: layer counts differ (shift_att {len(self.shift_att)}, wkv {len(self.wkv)}, "
                f"shift_ffn {len(self.shift_ffn)})")

    # ---- construction -------------------------------------------------------------------------------
    @classmethod
    def zeros(cls, n_layer: int, batch_size: int, n_embd: int, n_head: int, head_size: int,
              dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> "State":
        shift = tuple(torch.zeros(batch_size, n_embd, dtype=dtype, device=device) for _ in range(n_layer))
        shift2 = tuple(torch.zeros(batch_size, n_embd, dtype=dtype, device=device) for _ in range(n_layer))
        wkv = tuple(torch.zeros(batch_size, n_head, head_size, head_size, dtype=torch.float32, device=device)
                    for _ in range(n_layer))
        return cls(shift, wkv, shift2)

    @classmethod
    def from_flat(cls, tensors: Sequence[Tensor]) -> "State":
        """Inverse of :meth:`flat`: ``[l0.shift_att, l0.wkv, l0.shift_ffn, l1.shift_att, ...]``."""
        if len(tensors) % 3:
            raise ValueError(f"State.from_flat: expected 3 tensors per layer, got {len(tensors)} tensors")
        return cls(tuple(tensors[0::3]), tuple(tensors[1::3]), tuple(tensors[2::3]))

    # ---- views --------------------------------------------------------------------------------------
    @property
    def n_layer(self) -> int:
        return len(self.wkv)

    @property
    def batch_size(self) -> int:
        return self.wkv[0].shape[0]

    def flat(self) -> list[Tensor]:
        out: list[Tensor] = []
        for i in range(self.n_layer):
            out += [self.shift_att[i], self.wkv[i], self.shift_ffn[i]]
        return out

    @staticmethod
    def io_names(n_layer: int, prefix: str = "past_key_values") -> list[str]:
        return [f"{prefix}.{i}.{f}" for i in range(n_layer) for f in STATE_FIELDS]

    def layer(self, i: int) -> tuple[Tensor, Tensor, Tensor]:
        return self.shift_att[i], self.wkv[i], self.shift_ffn[i]

    # ---- copies and batch manipulation --------------------------------------------------------------
    def _map(self, fn) -> "State":
        return State(tuple(fn(t) for t in self.shift_att), tuple(fn(t) for t in self.wkv),
                     tuple(fn(t) for t in self.shift_ffn))

    def clone(self) -> "State":
        return self._map(lambda t: t.clone())

    def to(self, device=None, dtype: torch.dtype | None = None) -> "State":
        """Moves to ``device``; ``dtype`` changes only the token-shift tensors (the WKV stays float32)."""
        return State(tuple(t.to(device=device, dtype=dtype) for t in self.shift_att),
                     tuple(t.to(device=device) for t in self.wkv),
                     tuple(t.to(device=device, dtype=dtype) for t in self.shift_ffn))

    def select(self, index: int | Sequence[int] | Tensor) -> "State":
        """Rows of the batch (keeps the batch dimension)."""
        if isinstance(index, int):
            index = [index]
        idx = torch.as_tensor(index, dtype=torch.long, device=self.wkv[0].device)
        return self._map(lambda t: t.index_select(0, idx))

    def expand(self, batch_size: int) -> "State":
        """Repeats a batch-1 state ``batch_size`` times (e.g. one cached prompt prefix for a batch)."""
        if self.batch_size != 1:
            raise ValueError(f"State.expand needs a batch-1 state, this one has batch {self.batch_size}")
        return self._map(lambda t: t.expand(batch_size, *t.shape[1:]).contiguous())

    @staticmethod
    def cat(states: Iterable["State"]) -> "State":
        states = list(states)
        return State.from_flat([torch.cat(ts, 0) for ts in zip(*(s.flat() for s in states))])

    # ---- checks -------------------------------------------------------------------------------------
    def check(self, n_layer: int, n_embd: int, n_head: int, head_size: int, name: str = "state") -> None:
        """Raises a ValueError naming the first tensor whose shape or dtype breaks the contract."""
        if self.n_layer != n_layer:
            raise ValueError(f"{name}: has {self.n_layer} layers, the model has {n_layer}")
        b = self.batch_size
        for i in range(n_layer):
            for field, t, shape in (("shift_att", self.shift_att[i], (b, n_embd)),
                                    ("wkv", self.wkv[i], (b, n_head, head_size, head_size)),
                                    ("shift_ffn", self.shift_ffn[i], (b, n_embd))):
                if tuple(t.shape) != shape:
                    raise ValueError(f"{name}.{i}.{field}: shape {tuple(t.shape)}, expected {shape}")
            if self.wkv[i].dtype != torch.float32:
                raise ValueError(f"{name}.{i}.wkv: dtype {self.wkv[i].dtype}, the WKV state is always float32")

    # ---- the official ``rwkv`` package layout ------------------------------------------------------
    def to_official(self, version: str) -> list[Tensor]:
        """The ``rwkv`` pip package's state list for batch row 0: ``[att_x, S, ffn_x] * L`` (S float32)."""
        out: list[Tensor] = []
        for i in range(self.n_layer):
            s = self.wkv[i][0]
            out += [self.shift_att[i][0], s if version == "x060" else s.transpose(-1, -2).contiguous(),
                    self.shift_ffn[i][0]]
        return out

    @classmethod
    def from_official(cls, tensors: Sequence[Tensor], version: str) -> "State":
        flat = []
        for i in range(0, len(tensors), 3):
            s = tensors[i + 1].float()
            flat += [tensors[i][None], (s if version == "x060" else s.transpose(-1, -2))[None].contiguous(),
                     tensors[i + 2][None]]
        return cls.from_flat(flat)
