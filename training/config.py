"""The training configuration: one YAML or JSON mapping, every key a :class:`TrainConfig` field.

Relative paths in the file are relative to the file's own directory.  Unknown keys, wrong types and bad values
are refused with a :class:`ConfigError` that names the file and the key.  ``training/configs/`` holds the
configuration of the embedded default model (``synthetic_default.yaml``) and the DeepSpeed ZeRO configs.

Keys (defaults in brackets)::

  # run
  out_dir            directory for checkpoints, metrics.jsonl, loss_curve.png, final model   [required]
  seed               data order, initialisation                                              [0]
  steps              optimizer steps                                                         [required]
  micro_batch_size   samples per process per step                                            [8]
  threads            torch CPU threads (null: torch's default)                               [null]
  # model
  init               "random" (build from lm + visual) or a VisualRWKV checkpoint to start from   ["random"]
  lm                 random init: {version: x070|x060, n_layer, n_embd, head_size, dim_ffn, lora}  [{}]
  visual             random init: VisualConfig fields (version, tower, vrwkv, num_token_per_image, ...) [{}]
  wkv_impl           "torch" (chunked PyTorch with autograd) or "native" (vrwkv-edge build-native) ["torch"]
  # data
  train_data         LLaVA-format JSON list                                                  [required]
  image_folder       base of the records' image paths (null: the data file's directory)      [null]
  synthetic          {train, val, test, seed}: generate the synthetic shapes task (training/synthetic.py)
                     into train_data's directory first, unless that directory already holds it     [null]
  val_data           held-out LLaVA JSON, scored by exact match every eval_every steps       [null]
  ctx_len            longest sample in positions (text tokens + image tokens)                [1024]
  on_bad_sample      "error" (stop, naming file and record) or "skip" (leave out and count)  ["error"]
  # what trains
  stage              "1" (projector), "2" (LM + projector), "full" (everything, from scratch)  ["2"]
  freeze_rwkv        stage 2: freeze the first N LM blocks                                   [0]
  freeze_proj        stage 2: freeze the projector                                           [false]
  # optimisation
  lr_init, lr_final  cosine from lr_init to lr_final over `steps`                            [6e-4, 1e-5]
  warmup_steps       linear warm-up factor 0.1 + 0.9 * step / warmup_steps                   [0]
  weight_decay       for parameters with >= 2 dimensions                                     [0.0]
  betas, adam_eps    AdamW                                                                   [[0.9, 0.99], 1e-8]
  grad_clip          global gradient-norm clip (0: off)                                      [1.0]
  l2wrap             the L2Wrap logit regulariser                                            [true]
  precision          "fp32" or "bf16" (autocast)                                             ["fp32"]
  grad_checkpointing recompute each block in backward                                        [false]
  engine             "torch" (one process) or "deepspeed" (launch with torchrun / deepspeed)  ["torch"]
  deepspeed_config   DeepSpeed JSON (ZeRO stage, buckets); batch, optimiser, clipping come from here
                                                                    [configs/deepspeed_zero2.json]
  # bookkeeping
  log_every          steps between metrics lines                                             [10]
  save_every         steps between resumable checkpoints (0: only at the end)                [100]
  eval_every         steps between validation exact-match scores (0: only at the end)        [0]
  eval_limit         validation questions scored (0: all)                                    [200]
"""
from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Optional

from ..fileio import PathLike
from .optim import STAGES

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
PRECISIONS = ("fp32", "bf16")
ENGINES = ("torch", "deepspeed")
PATH_KEYS = ("out_dir", "train_data", "image_folder", "val_data", "deepspeed_config")


class ConfigError(ValueError):
    pass


@dataclass
class TrainConfig:
    out_dir: str
    train_data: str
    steps: int
    seed: int = 0
    micro_batch_size: int = 8
    threads: Optional[int] = None
    init: str = "random"
    lm: dict = field(default_factory=dict)
    visual: dict = field(default_factory=dict)
    wkv_impl: str = "torch"
    image_folder: Optional[str] = None
    synthetic: Optional[dict] = None
    val_data: Optional[str] = None
    ctx_len: int = 1024
    on_bad_sample: str = "error"
    stage: str = "2"
    freeze_rwkv: int = 0
    freeze_proj: bool = False
    lr_init: float = 6e-4
    lr_final: float = 1e-5
    warmup_steps: int = 0
    weight_decay: float = 0.0
    betas: list = field(default_factory=lambda: [0.9, 0.99])
    adam_eps: float = 1e-8
    grad_clip: float = 1.0
    l2wrap: bool = True
    precision: str = "fp32"
    grad_checkpointing: bool = False
    engine: str = "torch"
    deepspeed_config: str = str(CONFIG_DIR / "deepspeed_zero2.json")
    log_every: int = 10
    save_every: int = 100
    eval_every: int = 0
    eval_limit: int = 200

    def __post_init__(self):
        self.stage = str(self.stage)
        checks = [
            (self.steps >= 1, "steps", "must be >= 1"),
            (self.micro_batch_size >= 1, "micro_batch_size", "must be >= 1"),
            (self.threads is None or self.threads >= 1, "threads", "must be >= 1 or null"),
            (self.ctx_len >= 2, "ctx_len", "must be >= 2"),
            (self.on_bad_sample in ("error", "skip"), "on_bad_sample", "must be error or skip"),
            (self.stage in STAGES, "stage", f"must be one of {STAGES}"),
            (self.freeze_rwkv >= 0, "freeze_rwkv", "must be >= 0"),
            (self.lr_init > 0 and self.lr_final >= 0, "lr_init", "lr_init must be > 0 and lr_final >= 0"),
            (self.warmup_steps >= 0, "warmup_steps", "must be >= 0"),
            (self.weight_decay >= 0, "weight_decay", "must be >= 0"),
            (len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas", "must be two numbers in [0, 1)"),
            (self.adam_eps > 0, "adam_eps", "must be > 0"),
            (self.grad_clip >= 0, "grad_clip", "must be >= 0"),
            (self.precision in PRECISIONS, "precision", f"must be one of {PRECISIONS}"),
            (self.engine in ENGINES, "engine", f"must be one of {ENGINES}"),
            (self.log_every >= 1, "log_every", "must be >= 1"),
            (self.save_every >= 0 and self.eval_every >= 0 and self.eval_limit >= 0, "save_every",
             "save_every, eval_every and eval_limit must be >= 0"),
        ]
        for ok, key, why in checks:
            if not ok:
                raise ConfigError(f"{key}: {why}")

    def to_dict(self) -> dict:
        return asdict(self)


# JSON/YAML types accepted per field (ints are accepted where floats are expected)
_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,), "dict": (dict,), "list": (list,)}


def _expected(f) -> tuple[tuple, bool]:
    t = str(f.type)
    optional = t.startswith("Optional[")
    base = t[len("Optional["):-1] if optional else t
    return _TYPES[base], optional


def config_from_dict(d: dict, source: str = "config", base_dir: Optional[Path] = None) -> TrainConfig:
    if not isinstance(d, dict):
        raise ConfigError(f"{source}: expected a mapping of settings, got a {type(d).__name__}")
    known = {f.name: f for f in fields(TrainConfig)}
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown}; known keys: {sorted(known)}")
    values = {}
    for key, value in d.items():
        types, optional = _expected(known[key])
        if value is None and optional:
            values[key] = None
            continue
        if key == "stage" and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        bad_bool = isinstance(value, bool) and bool not in types
        if not isinstance(value, types) or bad_bool:
            raise ConfigError(f"{source}: {key} must be {'/'.join(t.__name__ for t in types)}, got "
                              f"{type(value).__name__} {value!r}")
        if key in PATH_KEYS and base_dir is not None:
            value = str((base_dir / value).resolve()) if not Path(value).is_absolute() else value
        values[key] = value
    missing = [k for k, f in known.items() if f.default is MISSING and f.default_factory is MISSING
               and k not in values]
    if missing:
        raise ConfigError(f"{source}: missing required key(s) {sorted(set(missing))}")
    if "init" in values and values["init"] != "random" and base_dir is not None and \
            not Path(values["init"]).is_absolute():
        values["init"] = str((base_dir / values["init"]).resolve())
    try:
        return TrainConfig(**values)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def load_config(path: PathLike, overrides: Optional[dict] = None) -> TrainConfig:
    """A :class:`TrainConfig` from a YAML (.yaml / .yml) or JSON file; ``overrides`` (already parsed) win."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ConfigError(f"{path}: YAML configurations need PyYAML (pip install pyyaml, or the 'train' "
                              f"extra); JSON needs nothing") from None
        try:
            d = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
    else:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON: {e}") from None
    if isinstance(d, dict) and overrides:
        d = {**d, **overrides}
    return config_from_dict(d, str(path), path.resolve().parent)
