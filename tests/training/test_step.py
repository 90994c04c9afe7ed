"""One training step of each stage (plain PyTorch engine) against the sample-by-sample reference; what each stage
freezes; the loss pieces (sample-level mean, L2Wrap), the parameter groups and the schedule."""
import pytest
import torch

from tests.helpers import assert_close
from tests.training.common import (config, dataset, grads, reference_loss, tiny_model, two_image_record,
                                   write_data)
from vrwkv_edge.training.engines import LossModule, TorchEngine
from vrwkv_edge.training.objective import L2WRAP_SCALE, L2Wrap, sample_level_loss
from vrwkv_edge.training.optim import apply_stage, learning_rate, parameter_groups

TOL = 1e-5


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    return write_data(folder, records=6, extra=[two_image_record(folder)])


@pytest.mark.parametrize("stage,lm", [("1", "x070"), ("2", "x070"), ("full", "x070"), ("2", "x060")])
def test_one_step_matches_the_reference_and_freezes(tmp_path, data_path, stage, lm):
    torch.manual_seed(0)
    # x060 -> VisualRWKV v6 (bidirectional scan: odd layers reverse each sample's image at its own offset)
    model = tiny_model(lm)
    apply_stage(model, stage, freeze_rwkv=1 if stage == "2" else 0)
    ds = dataset(model, data_path, on_bad_sample="skip")          # v6: the two-image record is left out
    indices = [0, 6, 3] if lm == "x070" else [0, 4, 3]             # the v7 batch holds the two-image record
    assert len(ds) == (7 if lm == "x070" else 6) and ds.skipped == ({} if lm == "x070" else
                                                                    {"malformed conversation": 1})
    cfg = config(tmp_path, data_path, stage=stage, grad_checkpointing=stage == "full")
    engine = TorchEngine(model, cfg)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    loss = LossModule(model, cfg)(ds.collate(indices))
    loss.backward()
    got = grads(model)
    model.zero_grad(set_to_none=True)
    ref = reference_loss(model, ds, indices)
    ref.backward()
    want = grads(model)
    model.zero_grad(set_to_none=True)

    assert abs(loss.item() - ref.item()) <= TOL * max(1.0, abs(ref.item()))
    assert set(got) == set(want) == {n for n, p in model.named_parameters() if p.requires_grad}
    for n in want:
        assert_close(f"grad {n}", want[n], got[n], TOL * max(1.0, float(want[n].abs().max())))

    engine.step(ds.collate(indices), lr=1e-3)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert changed and changed <= trainable
    if stage == "1":
        assert all(n.startswith("proj.") for n in trainable)
    elif stage == "2":
        assert not any(n.startswith("vit.") or n == "rwkv.emb.weight" or n.startswith("rwkv.blocks.0.")
                       for n in trainable)
        assert "rwkv.head.weight" in trainable and "rwkv.blocks.1.att.key.weight" in trainable
    else:
        assert trainable == set(before)


def test_sample_level_loss_weighs_every_sample_equally():
    logits = torch.randn(5, 7)
    targets = torch.tensor([1, 2, 3, 4, 5])
    sample = torch.tensor([0, 0, 0, 1, 1])
    ce = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    want = (ce[:3].mean() + ce[3:].mean()) / 2
    assert torch.allclose(sample_level_loss(logits, targets, sample, 2), want)
    # a sample without targets counts as 0 (its count is clamped to 1), as in the original
    assert torch.allclose(sample_level_loss(logits, targets, sample, 3), (ce[:3].mean() + ce[3:].mean()) / 3)


def test_l2wrap_adds_the_max_logit_push():
    logits = torch.randn(4, 9, requires_grad=True)
    loss = (logits ** 2).sum() * 0.0 + logits.sum() * 0.0 + 1.0
    factor = L2WRAP_SCALE / 12
    L2Wrap.apply(loss, logits, factor).backward()
    want = torch.zeros(4, 9)
    top, idx = logits.detach().max(-1)
    want[torch.arange(4), idx] = top * factor
    assert torch.allclose(logits.grad, want)


def test_parameter_groups_and_schedule():
    model = tiny_model()
    apply_stage(model, "full")
    groups = parameter_groups(model, 0.1)
    no_decay, decay = groups
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.1
    assert "rwkv.blocks.1.att.x_r" in no_decay["names"] and "rwkv.blocks.0.att.r_k" in decay["names"]
    assert "rwkv.emb.weight" in decay["names"]
    assert learning_rate(0, 100, 1e-3, 1e-5, 10) == pytest.approx(1e-4)           # warm-up factor 0.1
    assert learning_rate(100, 100, 1e-3, 1e-5, 10) == pytest.approx(1e-5)
    assert learning_rate(50, 100, 1e-3, 1e-5, 0) == pytest.approx((1e-3 + 1e-5) / 2)


def test_bad_stage_settings_are_refused():
    model = tiny_model()
    with pytest.raises(ValueError, match="stage must be"):
        apply_stage(model, "3")
    with pytest.raises(ValueError, match="freeze_rwkv"):
        apply_stage(model, "2", freeze_rwkv=3)
    with pytest.raises(ValueError, match="trains nothing"):
        apply_stage(model, "2", freeze_rwkv=2, freeze_proj=True)
