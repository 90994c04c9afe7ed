"""The training run: model, data, engine, the step loop, resumable checkpoints, metrics and the loss curve.

Output directory::

    checkpoints/step-000100/model.safetensors   the weights in the official layout (rwkv. / proj. / vit.)
    checkpoints/step-000100/optimizer.pt        TorchEngine: AdamW state   (DeepSpeedEngine: deepspeed/ per rank)
    checkpoints/step-000100/rng-rank0.pt        the torch RNG state of each rank
    checkpoints/step-000100/trainer.json        step, configuration, skipped records
    checkpoints/latest                          the name of the newest COMPLETE checkpoint, written last
    metrics.jsonl                               one line per log_every steps and per evaluation
    loss_curve.png                              training loss (and validation exact match) against step
    model.safetensors                           the final weights (load_model / vrwkv-edge export read it)

Every file is written atomically and ``latest`` only after all of a checkpoint's files, so a run killed at any
moment resumes from the last complete checkpoint.  Resume restores the weights, the optimiser, the RNG and the
step; the learning rate and the data position are functions of the step (:func:`~.optim.learning_rate`,
:func:`~.data.batch_indices`), so a killed-and-resumed run computes exactly the steps an uninterrupted one does.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Optional

import torch

from ..checkpoint import read_state_dict
from ..config import RWKVConfig
from ..fileio import atomic_write, write_json
from ..tokenizer import load_tokenizer
from ..visualrwkv.loading import (VISUAL_CONFIG_KEY, build_random_visual_model, load_visual_model,
                                  save_visual_checkpoint)
from ..visualrwkv.model import VisualConfig, VisualRWKV
from ..visualrwkv.towers import DEFAULT_VRWKV_TOWER, vrwkv_tower_config
from .config import ConfigError, TrainConfig
from .data import TrainingDataset, batch_indices
from .engines import build_engine
from .evaluate import exact_match, read_questions
from .optim import apply_stage, learning_rate
from .synthetic import ensure_generated

LATEST = "latest"
DEFAULT_LORA = {"x070": {"w": 16, "a": 16, "v": 16, "g": 16}, "x060": {"mix": 16, "decay": 16}}
WORLD_VOCAB = 65536


def build_model(cfg: TrainConfig) -> VisualRWKV:
    """The starting model: seeded random weights from ``lm`` + ``visual``, or a VisualRWKV checkpoint."""
    if cfg.init != "random":
        return load_visual_model(cfg.init).train()
    lm = dict(cfg.lm)
    version = lm.pop("version", "x070")
    if version not in DEFAULT_LORA:
        raise ConfigError(f"lm.version must be x070 or x060, got {version!r}")
    try:
        n_embd = int(lm.pop("n_embd"))
        n_layer = int(lm.pop("n_layer"))
    except KeyError as e:
        raise ConfigError(f"lm: random init needs n_layer and n_embd (missing {e})") from None
    head_size = int(lm.pop("head_size", 64))
    dim_ffn = int(lm.pop("dim_ffn", 4 * n_embd))
    lora = dict(lm.pop("lora", DEFAULT_LORA[version]))
    vocab = int(lm.pop("vocab_size", WORLD_VOCAB))
    if lm:
        raise ConfigError(f"lm: unknown key(s) {sorted(lm)}")
    visual = dict(cfg.visual)
    try:
        if isinstance(visual.get("vrwkv"), dict):      # a Vision-RWKV preset ("arch") with field overrides
            tower = dict(visual["vrwkv"])
            visual["vrwkv"] = asdict(vrwkv_tower_config(tower.pop("arch", DEFAULT_VRWKV_TOWER), **tower))
        lm_cfg = RWKVConfig(version, n_layer, n_embd, head_size, vocab, dim_ffn, lora)
        vcfg = VisualConfig(**visual)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"lm / visual: {e}") from None
    model = build_random_visual_model(lm_cfg, vcfg, cfg.seed)
    init_decay_for_training_(model.rwkv)
    return model.train()


def init_decay_for_training_(lm) -> None:
    """The decay initialisation of RWKV-LM for a model trained from scratch.  The random builders draw decays
    of realistic scale for tests (RWKV-7: per-token decay 0.57-0.97, a memory of a few tokens), from which a
    small model never learns to carry an image's details to the answer; RWKV-LM spreads each layer's channels
    from nearly no decay to fast decay instead:  decay_speed[n] = -7 + 5 (n / (C-1)) ^ (0.85 + sqrt(l / (L-1)))
    (x070: w0 = decay_speed + 0.5, per-token decay 0.90-0.999; x060: time_decay = -6 + 5 (n / (C-1)) ^
    (0.7 + 1.3 l / (L-1)))."""
    C, L = lm.cfg.n_embd, lm.cfg.n_layer
    n = torch.arange(C, dtype=torch.float32) / max(C - 1, 1)
    with torch.no_grad():
        for layer, block in enumerate(lm.blocks):
            ratio = layer / max(L - 1, 1)
            if lm.cfg.version == "x070":
                speed = -7 + 5 * n ** (0.85 + 1.0 * ratio ** 0.5)
                block.att.w0.copy_((speed + 0.5).reshape(block.att.w0.shape))
            else:
                speed = -6 + 5 * n ** (0.7 + 1.3 * ratio)
                block.att.time_decay.copy_(speed.reshape(block.att.time_decay.shape))


def make_synthetic_data(cfg: TrainConfig) -> None:
    spec = dict(cfg.synthetic)
    unknown = sorted(set(spec) - {"train", "val", "test", "seed"})
    if unknown:
        raise ConfigError(f"synthetic: unknown key(s) {unknown}; known: train, val, test, seed")
    ensure_generated(Path(cfg.train_data).parent, int(spec.get("train", 20000)), int(spec.get("val", 300)),
                     int(spec.get("test", 600)), int(spec.get("seed", cfg.seed)))


def _load_weights(model: VisualRWKV, path: Path) -> None:
    sd = read_state_dict(path)
    sd.pop(VISUAL_CONFIG_KEY, None)
    model.load_state_dict(sd, strict=True)


class Trainer:
    def __init__(self, cfg: TrainConfig, out=None, progress: bool = True):
        self.cfg = cfg
        self.out = out or sys.stderr
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.out_dir = Path(cfg.out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg)
        self.model.set_wkv_impl(cfg.wkv_impl)
        apply_stage(self.model, cfg.stage, cfg.freeze_rwkv, cfg.freeze_proj)
        self.tokenizer = load_tokenizer()
        if cfg.synthetic is not None:
            make_synthetic_data(cfg)
        self.data = TrainingDataset(cfg.train_data, cfg.image_folder, self.tokenizer, self.model.visual_version,
                                    self.model.image_layout, self.model.preprocess, cfg.ctx_len,
                                    self.model.vcfg.image_position, cfg.on_bad_sample)
        self.engine = build_engine(self.model, cfg)
        self.is_main = self.engine.rank == 0
        self.progress = progress and self.is_main
        self.global_batch = cfg.micro_batch_size * self.engine.world_size
        batch_indices(len(self.data), 0, self.global_batch, cfg.seed)       # refuses data < one batch, now
        self.val = read_questions(cfg.val_data, cfg.image_folder, cfg.eval_limit) if cfg.val_data else None
        self.step = 0

    # ---- checkpoints ---------------------------------------------------------------------------------------
    def latest_checkpoint(self) -> Optional[Path]:
        pointer = self.ckpt_dir / LATEST
        if not pointer.is_file():
            return None
        path = self.ckpt_dir / pointer.read_text(encoding="utf-8").strip()
        if not (path / "trainer.json").is_file():
            raise ConfigError(f"{pointer} names {path.name}, which is not a complete checkpoint")
        return path

    def save(self) -> Path:
        path = self.ckpt_dir / f"step-{self.step:06d}"
        path.mkdir(parents=True, exist_ok=True)
        if self.is_main:
            save_visual_checkpoint(self.model, path / "model.safetensors")
        self.engine.save_state(path)
        with atomic_write(path / f"rng-rank{self.engine.rank}.pt", suffix=".pt") as tmp:
            torch.save({"torch": torch.get_rng_state()}, tmp)
        self.engine.barrier()
        if self.is_main:
            write_json(path / "trainer.json", {"step": self.step, "config": self.cfg.to_dict(),
                                               "skipped_records": dict(self.data.skipped),
                                               "world_size": self.engine.world_size})
            with atomic_write(self.ckpt_dir / LATEST) as tmp:
                Path(tmp).write_text(path.name + "\n", encoding="utf-8")
        self.engine.barrier()
        return path

    def resume(self, path: Path) -> None:
        info = json.loads((path / "trainer.json").read_text(encoding="utf-8"))
        if info.get("world_size", 1) != self.engine.world_size:
            raise ConfigError(f"{path}: written by {info.get('world_size')} process(es), resuming with "
                              f"{self.engine.world_size}; the data order would differ")
        _load_weights(self.model, path / "model.safetensors")
        self.engine.load_state(path)
        rng = torch.load(path / f"rng-rank{self.engine.rank}.pt", weights_only=True)
        torch.set_rng_state(rng["torch"])
        self.step = int(info["step"])

    # ---- metrics -------------------------------------------------------------------------------------------
    @property
    def metrics_path(self) -> Path:
        return self.out_dir / "metrics.jsonl"

    def _trim_metrics(self) -> None:
        """Drops metric lines past the resumed step (logged by the killed run after its last checkpoint)."""
        if not self.metrics_path.is_file():
            return
        lines = [ln for ln in self.metrics_path.read_text(encoding="utf-8").splitlines()
                 if ln.strip() and json.loads(ln).get("step", 0) <= self.step]
        with atomic_write(self.metrics_path) as tmp:
            Path(tmp).write_text("".join(ln + "\n" for ln in lines), encoding="utf-8")

    def log(self, row: dict) -> None:
        if not self.is_main:
            return
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    def evaluate(self) -> Optional[float]:
        if not self.val or not self.is_main:
            return None
        score = exact_match(self.model, self.tokenizer, self.val)["exact_match"]
        self.log({"step": self.step, "val_exact_match": score})
        return score

    # ---- the loop ------------------------------------------------------------------------------------------
    def train(self, stop_after: Optional[int] = None, on_step: Optional[Callable[[int, dict], None]] = None) -> dict:
        """Runs (or resumes) to ``cfg.steps``; ``stop_after`` ends early after that step (tests of resume)."""
        cfg = self.cfg
        self.out_dir.mkdir(parents=True, exist_ok=True)
        latest = self.latest_checkpoint()
        if latest is not None:
            self.resume(latest)
            if self.is_main:
                print(f"resumed from {latest} (step {self.step})", file=self.out)
        elif self.is_main and self.metrics_path.exists():
            self.metrics_path.unlink()
        if self.is_main:
            self._trim_metrics()
            write_json(self.out_dir / "config.json", cfg.to_dict())
        bar = None
        if self.progress:
            from tqdm import tqdm
            bar = tqdm(total=cfg.steps, initial=self.step, desc="train", file=self.out, dynamic_ncols=True)
        t0, window, window_start = time.perf_counter(), [], time.perf_counter()
        while self.step < cfg.steps:
            idx = batch_indices(len(self.data), self.step, self.global_batch, cfg.seed, self.engine.rank,
                                self.engine.world_size)
            batch = self.data.collate(idx).to(self.model.device)
            lr = learning_rate(self.step, cfg.steps, cfg.lr_init, cfg.lr_final, cfg.warmup_steps)
            stats = self.engine.step(batch, lr)
            self.step += 1
            window.append(stats)
            if on_step is not None:
                on_step(self.step, stats)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{stats['loss']:.4f}", lr=f"{lr:.2e}")
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                dt = time.perf_counter() - window_start
                self.log({"step": self.step, "loss": sum(s["loss"] for s in window) / len(window),
                          "lr": lr, "grad_norm": window[-1]["grad_norm"],
                          "samples_per_s": len(window) * self.global_batch / max(dt, 1e-9),
                          "elapsed_s": time.perf_counter() - t0})
                window, window_start = [], time.perf_counter()
            if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.steps:
                self.evaluate()
            if (cfg.save_every and self.step % cfg.save_every == 0) or self.step == cfg.steps:
                self.save()
            if stop_after is not None and self.step >= stop_after:
                break
        if bar is not None:
            bar.close()
        summary = {"step": self.step, "finished": self.step >= cfg.steps,
                   "skipped_records": dict(self.data.skipped), "records": len(self.data)}
        if self.step >= cfg.steps:
            if self.is_main:
                save_visual_checkpoint(self.model, self.out_dir / "model.safetensors")
            summary["val_exact_match"] = self.evaluate()
            if self.is_main:
                plot_metrics(self.metrics_path, self.out_dir / "loss_curve.png", self.out)
                write_json(self.out_dir / "summary.json", summary)
        return summary


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def plot_metrics(metrics: Path, png: Path, out=None) -> Optional[Path]:
    """The loss curve (log scale) and the validation exact match, if any, against step."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"loss curve not drawn: matplotlib is not installed ({png})", file=out or sys.stderr)
        return None
    rows = read_metrics(metrics)
    train = [r for r in rows if "loss" in r]
    val = [r for r in rows if "val_exact_match" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="training loss")
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (sample-level CE)")
    if val:
        ax2 = ax.twinx()
        ax2.plot([r["step"] for r in val], [r["val_exact_match"] for r in val], "o-", color="tab:orange",
                 label="validation exact match")
        ax2.set_ylabel("exact match")
        ax2.set_ylim(0, 1)
        ax2.legend(loc="center right")
    ax.legend(loc="upper right")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    with atomic_write(png, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return png


def run_training(cfg: TrainConfig, progress: bool = True) -> dict:
    return Trainer(cfg, progress=progress).train()


