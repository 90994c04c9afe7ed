"""Model configuration: one dataclass for RWKV-6 and RWKV-7, read from checkpoint shapes or from a preset.

Every size is read from the weights (``RWKVConfig.from_state_dict``), never assumed: head size, head count,
LoRA ranks and FFN width differ between official models and the tiny test models.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from .checkpoint import layer_count

VERSIONS = ("x060", "x070")
# Names of the LoRA ranks each version has (read from the shapes of these parameters).
LORA_KEYS = {
    "x060": {"mix": "att.time_maa_w2", "decay": "att.time_decay_w1"},
    "x070": {"w": "att.w1", "a": "att.a1", "v": "att.v1", "g": "att.g1"},
}
# eps of the per-head GroupNorm ``ln_x``: 1e-5 * head_size_divisor**2 with divisor 8, as trained.
LN_X_EPS = 64e-5
LN_EPS = 1e-5


@dataclass
class RWKVConfig:
    version: str                 # "x060" (RWKV-6 Finch) or "x070" (RWKV-7 Goose)
    n_layer: int
    n_embd: int
    head_size: int
    vocab_size: int
    dim_ffn: int
    lora: dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        for name in ("n_layer", "n_embd", "head_size", "vocab_size", "dim_ffn"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"RWKVConfig.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.lora, dict) or any(isinstance(v, bool) or not isinstance(v, int) or v < 0
                                                  for v in self.lora.values()):
            raise ValueError(f"RWKVConfig.lora must map names to non-negative integer ranks, got {self.lora!r}")
        if self.version not in VERSIONS:
            raise ValueError(f"RWKVConfig.version must be one of {VERSIONS}, got {self.version!r}")
        if self.n_embd % self.head_size:
            raise ValueError(f"RWKVConfig: n_embd {self.n_embd} is not a multiple of head_size {self.head_size}")
        missing = set(LORA_KEYS[self.version]) - set(self.lora)
        if missing:
            raise ValueError(f"RWKVConfig({self.version}): missing LoRA ranks {sorted(missing)}")

    @property
    def n_head(self) -> int:
        return self.n_embd // self.head_size

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "RWKVConfig":
        return cls(**d)

    @classmethod
    def from_state_dict(cls, sd: dict, version: str, source: str = "state dict") -> "RWKVConfig":
        """Reads every size from the tensor shapes of an official-layout state dict."""
        def shape(key, rank):
            if key not in sd:
                raise KeyError(f"{source}: missing key {key!r} needed to read the model size")
            s = tuple(sd[key].shape)
            if len(s) != rank:
                raise ValueError(f"{source}: {key} has shape {s}, expected {rank} dimensions")
            return s

        vocab_size, n_embd = shape("emb.weight", 2)
        n_layer = layer_count(sd, r"blocks\.(\d+)\.", source)
        if not n_layer:
            raise KeyError(f"{source}: no 'blocks.N.' keys: not an RWKV language model")
        if version == "x060":
            n_head, head_size = shape("blocks.0.att.time_faaaa", 2)
        else:
            n_head, head_size = shape("blocks.0.att.r_k", 2)
        if n_head * head_size != n_embd:
            raise ValueError(f"{source}: {n_head} heads of size {head_size} do not make n_embd {n_embd}")
        dim_ffn = shape("blocks.0.ffn.key.weight", 2)[0]
        lora = {}
        for name, key in LORA_KEYS[version].items():
            # x070's layer 0 has no value-residual LoRA, so read each rank from the first layer that has it.
            layer = next((i for i in range(n_layer) if f"blocks.{i}.{key}" in sd), None)
            if layer is None and n_layer == 1 and key == "att.v1":
                lora[name] = 0                   # a one-layer x070 never uses the value residual
                continue
            s = shape(f"blocks.{0 if layer is None else layer}.{key}", 3 if key.endswith("time_maa_w2") else 2)
            # time_maa_w2 is (5, D, C); every other LoRA matrix is (C, D) and its rank is the last axis.
            lora[name] = s[1] if key.endswith("time_maa_w2") else s[-1]
        return cls(version, n_layer, n_embd, head_size, vocab_size, dim_ffn, lora)


def _x060_ffn(n_embd: int) -> int:
    return int(n_embd * 3.5) // 32 * 32          # RWKV-LM x060 training default


# Named shapes for random-weight benchmarks and tests (sizes of the released models).
LM_PRESETS: dict[str, RWKVConfig] = {
    "rwkv7-0.1b": RWKVConfig("x070", 12, 768, 64, 65536, 3072, {"w": 64, "a": 64, "v": 32, "g": 128}),
    "rwkv7-0.4b": RWKVConfig("x070", 24, 1024, 64, 65536, 4096, {"w": 64, "a": 64, "v": 32, "g": 128}),
    "rwkv7-1.5b": RWKVConfig("x070", 24, 2048, 64, 65536, 8192, {"w": 96, "a": 96, "v": 64, "g": 256}),
    "rwkv7-2.9b": RWKVConfig("x070", 32, 2560, 64, 65536, 10240, {"w": 96, "a": 96, "v": 64, "g": 320}),
    # RWKV-6 at the 0.1B shape: the LM of the VisualRWKV v6 time-to-first-token benchmarks
    "rwkv6-0.1b": RWKVConfig("x060", 12, 768, 64, 65536, _x060_ffn(768), {"mix": 32, "decay": 64}),
    "rwkv6-1.6b": RWKVConfig("x060", 24, 2048, 64, 65536, _x060_ffn(2048), {"mix": 32, "decay": 64}),
    "rwkv7-tiny": RWKVConfig("x070", 2, 128, 64, 1024, 512, {"w": 32, "a": 32, "v": 32, "g": 32}),
    "rwkv6-tiny": RWKVConfig("x060", 2, 128, 64, 1024, 448, {"mix": 32, "decay": 32}),
}


def preset(name: str) -> RWKVConfig:
    try:
        return RWKVConfig.from_dict(asdict(LM_PRESETS[name]))
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; choose one of {sorted(LM_PRESETS)}") from None
