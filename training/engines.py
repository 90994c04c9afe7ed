"""The two training engines: plain single-process PyTorch and DeepSpeed (ZeRO 1/2, any number of processes).

Both run the same step: the differentiable forward (:mod:`vrwkv_edge.visualrwkv.training_forward`), the
sample-level loss with L2Wrap (:mod:`.objective`), backward, gradient-norm clipping and an AdamW update with
the original parameter groups (:mod:`.optim`) at the schedule's learning rate for that step.  They differ in
who owns the optimiser and the gradients, and in how a resumable checkpoint is written:

* :class:`TorchEngine`: ``torch.optim.AdamW``; its state goes into ``optimizer.pt`` (loaded with
  ``weights_only=True``).
* :class:`DeepSpeedEngine`: ``deepspeed.initialize`` with the JSON config named by ``deepspeed_config`` (ZeRO
  stage and buckets); batch size, AdamW (``torch_adam``: PyTorch's implementation, no JIT build), betas, eps,
  clipping and bf16 are filled in from the training configuration, so the two engines cannot disagree.  Every
  rank takes its slice of the global batch and DeepSpeed averages the gradients, which equals the single-process
  mean over the global batch.  Checkpoints are DeepSpeed's own (``engine.save_checkpoint``), per rank.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
from pathlib import Path

import torch
from torch import nn

from ..fileio import atomic_write
from ..visualrwkv.training_forward import TrainingBatch, training_logits
from .config import ConfigError, TrainConfig
from .objective import training_loss
from .optim import build_adamw, parameter_groups, set_learning_rate


def autocast_context(precision: str):
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class LossModule(nn.Module):
    """The model plus its loss, as one module (what DeepSpeed wraps)."""

    def __init__(self, model: nn.Module, cfg: TrainConfig):
        super().__init__()
        self.model = model
        self.grad_checkpointing = cfg.grad_checkpointing
        self.l2wrap = cfg.l2wrap
        self.precision = cfg.precision

    def forward(self, batch: TrainingBatch) -> torch.Tensor:
        with autocast_context(self.precision):
            logits, targets, sample_index = training_logits(self.model, batch, self.grad_checkpointing)
        return training_loss(logits, targets, sample_index, batch.batch_size, batch.input_ids.shape[1],
                             self.l2wrap)


class TorchEngine:
    name = "torch"
    rank, world_size = 0, 1

    def __init__(self, model: nn.Module, cfg: TrainConfig):
        self.cfg = cfg
        self.model = model
        self.loss_module = LossModule(model, cfg)
        self.groups = parameter_groups(model, cfg.weight_decay)
        self.optimizer = build_adamw(self.groups, cfg.lr_init, cfg.betas, cfg.adam_eps)
        self.trainable = [p for g in self.groups for p in g["params"]]

    def forward_backward(self, batch: TrainingBatch) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_module(batch)
        loss.backward()
        return loss.detach()

    def step(self, batch: TrainingBatch, lr: float) -> dict:
        loss = self.forward_backward(batch)
        if self.cfg.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.trainable, self.cfg.grad_clip)
        else:
            norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in self.trainable if p.grad is not None]))
        set_learning_rate(self.optimizer, lr)
        self.optimizer.step()
        return {"loss": float(loss), "grad_norm": float(norm), "lr": lr}

    def save_state(self, directory: Path) -> None:
        with atomic_write(directory / "optimizer.pt", suffix=".pt") as tmp:
            torch.save(self.optimizer.state_dict(), tmp)

    def load_state(self, directory: Path) -> None:
        state = torch.load(directory / "optimizer.pt", map_location="cpu", weights_only=True)
        self.optimizer.load_state_dict(state)

    def barrier(self) -> None:
        pass


def deepspeed_settings(cfg: TrainConfig, world_size: int) -> dict:
    """The DeepSpeed config: the file's ZeRO settings plus what the training configuration fixes."""
    path = Path(cfg.deepspeed_config)
    try:
        ds = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"deepspeed_config: {path} not found") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"deepspeed_config: {path} is not valid JSON: {e}") from None
    if not isinstance(ds, dict):
        raise ConfigError(f"deepspeed_config: {path} must hold a JSON object")
    owned = sorted(k for k in ("train_batch_size", "train_micro_batch_size_per_gpu", "optimizer", "scheduler",
                               "gradient_clipping", "bf16", "fp16") if k in ds)
    if owned:
        raise ConfigError(f"deepspeed_config: {path} sets {owned}, which the training configuration owns "
                          f"(micro_batch_size, lr_*, betas, adam_eps, weight_decay, grad_clip, precision)")
    ds.update({
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": 1,
        "train_batch_size": cfg.micro_batch_size * world_size,
        "gradient_clipping": cfg.grad_clip,
        "optimizer": {"type": "AdamW", "params": {"lr": cfg.lr_init, "betas": list(cfg.betas), "eps": cfg.adam_eps,
                                                  "weight_decay": cfg.weight_decay, "torch_adam": True}},
        "bf16": {"enabled": cfg.precision == "bf16"},
        "steps_per_print": 10 ** 9,
    })
    return ds


class DeepSpeedEngine:
    name = "deepspeed"

    def __init__(self, model: nn.Module, cfg: TrainConfig):
        import deepspeed
        import torch.distributed as dist
        self.cfg = cfg
        self.model = model
        os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(cfg.out_dir).resolve() / ".torch_extensions"))
        if not dist.is_initialized():
            deepspeed.init_distributed(dist_backend="gloo" if not torch.cuda.is_available() else "nccl",
                                       verbose=False)
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.groups = parameter_groups(model, cfg.weight_decay)
        groups = [{k: v for k, v in g.items() if k != "names"} for g in self.groups]
        self.loss_module = LossModule(model, cfg)
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=self.loss_module, model_parameters=groups, config=deepspeed_settings(cfg, self.world_size))

    def forward_backward(self, batch: TrainingBatch) -> torch.Tensor:
        loss = self.engine(batch)
        self.engine.backward(loss)
        return loss.detach()

    def step(self, batch: TrainingBatch, lr: float) -> dict:
        set_learning_rate(self.optimizer, lr)
        loss = self.forward_backward(batch)
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        loss = loss.clone()
        torch.distributed.all_reduce(loss)
        return {"loss": float(loss) / self.world_size, "grad_norm": float(norm) if norm is not None else float("nan"),
                "lr": lr}

    def save_state(self, directory: Path) -> None:
        self.engine.save_checkpoint(str(directory), tag="deepspeed", save_latest=False)

    def load_state(self, directory: Path) -> None:
        path, _ = self.engine.load_checkpoint(str(directory), tag="deepspeed", load_module_strict=True)
        if path is None:
            raise FileNotFoundError(f"{directory}: no DeepSpeed checkpoint (tag 'deepspeed')")

    def barrier(self) -> None:
        torch.distributed.barrier()


def build_engine(model: nn.Module, cfg: TrainConfig):
    if cfg.engine == "deepspeed":
        if importlib.util.find_spec("deepspeed") is None:
            raise ConfigError("engine: deepspeed is not installed (pip install 'vrwkv_edge[train]')")
        return DeepSpeedEngine(model, cfg)
    return TorchEngine(model, cfg)
