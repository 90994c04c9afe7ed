"""A run stopped after a checkpoint (or killed while writing the next one) and resumed ends with exactly the
weights of the uninterrupted run (plain engine, fp32, one process: <= 1e-6); metrics, the loss curve and the
final checkpoint in the official layout that load_model reads."""
import json

import torch

from tests.training.common import config, tiny_model, write_data
from vrwkv_edge.loading import load_model
from vrwkv_edge.training.trainer import Trainer
from vrwkv_edge.visualrwkv import VisualRWKV, save_visual_checkpoint


def _run(cfg, stop_after=None):
    trainer = Trainer(cfg, progress=False)
    trainer.train(stop_after=stop_after)
    return trainer


def test_killed_and_resumed_equals_uninterrupted(tmp_path):
    data = write_data(tmp_path / "data", records=8)
    init = save_visual_checkpoint(tiny_model(), tmp_path / "init.safetensors")[0]
    kw = dict(steps=4, save_every=2, micro_batch_size=2, stage="full", init=str(init), l2wrap=True,
              val_data=str(data), eval_limit=2)
    straight = _run(config(tmp_path / "a", data, **kw))

    cfg = config(tmp_path / "b", data, **kw)
    _run(cfg, stop_after=3)                    # checkpoint at step 2, then one more step that is lost
    # a kill while the step-4 checkpoint was being written leaves a directory without trainer.json
    (tmp_path / "b" / "run" / "checkpoints" / "step-000004").mkdir()
    resumed = _run(cfg)

    assert resumed.step == straight.step == 4
    for (n, a), (_, b) in zip(straight.model.named_parameters(), resumed.model.named_parameters()):
        assert (a - b).abs().max().item() <= 1e-6, n
    rows = [json.loads(x) for x in (tmp_path / "b" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]      # step 3 of the lost run is not kept twice
    assert any("val_exact_match" in r for r in rows)
    assert (tmp_path / "b" / "run" / "loss_curve.png").stat().st_size > 1000
    final = load_model(tmp_path / "b" / "run" / "model.safetensors")
    assert isinstance(final, VisualRWKV)
    for n, p in final.named_parameters():
        assert torch.equal(p, dict(resumed.model.named_parameters())[n].detach()), n
