"""Run by tests/training/test_deepspeed.py under ``torchrun --nproc_per_node 2`` (gloo, CPU).

    python -m torch.distributed.run --nproc_per_node 2 tests/training/ds_worker.py DATA_JSON OUT_DIR INIT_CKPT

For ZeRO 1 and 2 and for stages 1 and 2: one DeepSpeed forward/backward on this rank's half of a global batch
(rank 0 writes the loss and the full gradients, gathered with ``safe_get_full_grad``), then the step (rank 0
writes the weights).  Then a 4-step ZeRO-2 run, and the same run killed after step 2 (a new process group
state: fresh model, engine and Trainer) and resumed from its checkpoint; rank 0 writes both final weights.
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.training.common import config, dataset, tiny_model  # noqa: E402
from vrwkv_edge.training.config import CONFIG_DIR  # noqa: E402
from vrwkv_edge.training.data import batch_indices  # noqa: E402
from vrwkv_edge.training.engines import DeepSpeedEngine  # noqa: E402
from vrwkv_edge.training.optim import apply_stage  # noqa: E402
from vrwkv_edge.training.trainer import Trainer  # noqa: E402

GLOBAL_BATCH = 4


def main(data: str, out: str, init: str) -> None:
    import deepspeed
    from deepspeed.utils import safe_get_full_grad
    torch.set_num_threads(1)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    deepspeed.init_distributed(dist_backend="gloo", verbose=False)
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    for zero in (1, 2):
        for stage in ("1", "2"):
            tmp = out / f"z{zero}-s{stage}"
            cfg = config(tmp, Path(data), stage=stage, engine="deepspeed", micro_batch_size=GLOBAL_BATCH // world,
                         deepspeed_config=str(CONFIG_DIR / f"deepspeed_zero{zero}.json"))
            model = tiny_model()
            apply_stage(model, stage)
            engine = DeepSpeedEngine(model, cfg)
            ds = dataset(model, Path(data))
            idx = batch_indices(len(ds), 0, GLOBAL_BATCH, cfg.seed, rank, world)
            loss = engine.forward_backward(ds.collate(idx))
            torch.distributed.all_reduce(loss)
            grads = {n: safe_get_full_grad(p) for n, p in model.named_parameters() if p.requires_grad}
            engine.engine.step()
            if rank == 0:
                torch.save({"loss": loss / world, "grads": {n: g.clone() for n, g in grads.items()},
                            "weights": {n: p.detach().clone() for n, p in model.named_parameters()}},
                           out / f"z{zero}-s{stage}.pt")
    # killed and resumed == uninterrupted (ZeRO 2, stage 2)
    finals = {}
    for name, stops in (("straight", [None]), ("resumed", [2, None])):
        run_dir = out / f"run-{name}"
        for stop in stops:
            cfg = config(run_dir, Path(data), stage="2", engine="deepspeed", micro_batch_size=GLOBAL_BATCH // world,
                         steps=4, save_every=2, init=init, deepspeed_config=str(CONFIG_DIR / "deepspeed_zero2.json"))
            trainer = Trainer(cfg, progress=False)
            trainer.train(stop_after=stop)
        finals[name] = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    if rank == 0:
        torch.save(finals, out / "resume.pt")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
