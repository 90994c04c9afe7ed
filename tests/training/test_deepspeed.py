"""DeepSpeed, 2 CPU processes over gloo, ZeRO 1 and 2: one step of stage 1 and stage 2 gives the loss, the
gradients and the update of the single-process reference (1e-5) and leaves the frozen parts alone; a 4-step run
killed after step 2 and resumed ends with the weights of the uninterrupted run (1e-5)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import REPO, assert_close
from tests.training.common import (config, dataset, grads, reference_loss, require_train_extra, tiny_model,
                                   write_data)
from vrwkv_edge.training.data import batch_indices
from vrwkv_edge.training.engines import TorchEngine
from vrwkv_edge.training.optim import apply_stage
from vrwkv_edge.visualrwkv import save_visual_checkpoint

require_train_extra()
TOL = 1e-5
GLOBAL_BATCH = 4


@pytest.fixture(scope="module")
def ds_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ds")
    data = write_data(tmp / "data", records=9)
    init = save_visual_checkpoint(tiny_model(), tmp / "init.safetensors")[0]
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp / "ext"), "OMP_NUM_THREADS": "1",
           "MASTER_PORT": str(29500 + os.getpid() % 1000)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", env["MASTER_PORT"], str(REPO / "tests/training/ds_worker.py"),
                           str(data), str(tmp / "out"), str(init)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return tmp, data


_REFERENCES = {}


def _reference(data, tmp_path, stage):
    """Loss, gradients and the plain engine's updated weights for one stage (shared by both ZeRO stages)."""
    if stage not in _REFERENCES:
        model = tiny_model()
        apply_stage(model, stage)
        ds = dataset(model, data)
        indices = batch_indices(len(ds), 0, GLOBAL_BATCH, seed=0)
        ref = reference_loss(model, ds, indices)
        ref.backward()
        want = grads(model)
        # the update: the plain engine's AdamW step on the whole global batch (same lr, clipping, groups)
        model.zero_grad(set_to_none=True)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        cfg = config(tmp_path, data, stage=stage)
        TorchEngine(model, cfg).step(ds.collate(indices), lr=cfg.lr_init)
        _REFERENCES[stage] = (ref.item(), want, before, model)
    return _REFERENCES[stage]


@pytest.mark.parametrize("zero", [1, 2])
@pytest.mark.parametrize("stage", ["1", "2"])
def test_one_deepspeed_step_matches_the_reference(ds_run, tmp_path, zero, stage):
    tmp, data = ds_run
    got = torch.load(tmp / "out" / f"z{zero}-s{stage}.pt", weights_only=True)
    ref, want, before, model = _reference(data, tmp_path, stage)
    assert abs(got["loss"].item() - ref) <= TOL * max(1.0, abs(ref))
    assert set(got["grads"]) == set(want)
    for n in want:
        assert_close(f"ZeRO-{zero} stage {stage} grad {n}", want[n], got["grads"][n],
                     TOL * max(1.0, float(want[n].abs().max())))
    for n, p in model.named_parameters():
        assert_close(f"ZeRO-{zero} stage {stage} weight {n}", p.detach(), got["weights"][n], TOL)
        if not p.requires_grad:
            assert torch.equal(got["weights"][n], before[n]), f"frozen {n} changed"


def test_deepspeed_killed_and_resumed_equals_uninterrupted(ds_run):
    tmp, _ = ds_run
    finals = torch.load(tmp / "out" / "resume.pt", weights_only=True)
    for n, w in finals["straight"].items():
        assert_close(f"resumed {n}", w, finals["resumed"][n], TOL)
    assert (Path(tmp) / "out" / "run-resumed" / "run" / "checkpoints" / "step-000002" / "deepspeed").is_dir()
