"""RWKV-6/7 models: the trained tiny testdata models, and the equivalence of the sequence and step paths."""
import numpy as np
import pytest
import torch

from tests.helpers import TINY_MODELS, assert_close, max_abs, random_model
from vrwkv_edge import load_model
from vrwkv_edge.state import State

PROMPT = [34, 105, 110]          # '"', 'i', 'n': the rwkv.cpp fixture prompt


@pytest.mark.parametrize("version", ["x060", "x070"])
def test_trained_tiny_models_reproduce_expected_logits(version, testdata):
    ckpt, expected_file = TINY_MODELS[version]
    expected = torch.from_numpy(np.fromfile(expected_file, dtype="<f4"))
    model = load_model(ckpt)
    logits, _ = model.forward(torch.tensor([PROMPT]))
    assert_close("forward", expected, logits[0, -1], 1e-4)
    state = None
    for t in PROMPT:
        step_logits, state = model.step(torch.tensor([t]), state)
    assert_close("step", expected, step_logits[0], 1e-4)
    assert logits[0, -1].argmax() == expected.argmax() == step_logits[0].argmax()


MODELS = [  # version, n_layer, n_embd, head_size
    ("x060", 3, 64, 8), ("x060", 2, 128, 64), ("x070", 3, 64, 16), ("x070", 2, 128, 64),
]


@pytest.mark.parametrize("spec", MODELS, ids=lambda s: f"{s[0]}-L{s[1]}-C{s[2]}-N{s[3]}")
@pytest.mark.parametrize("T", [1, 23, 77])
def test_forward_equals_steps_equals_split_forward(spec, T):
    model = random_model(*spec, vocab_size=300, seed=T)
    ids = torch.randint(0, 300, (2, T), generator=torch.Generator().manual_seed(T))
    logits, state = model.forward(ids)

    s = model.new_state(2)
    step_logits = []
    for t in range(T):
        lg, s = model.step(ids[:, t], s)
        step_logits.append(lg)
    assert_close("steps vs forward", logits, torch.stack(step_logits, 1), 1e-4)
    for a, b in zip(state.flat(), s.flat()):
        assert_close("state steps vs forward", a, b, 1e-4)

    cut = T // 3
    if cut:
        l1, s1 = model.forward(ids[:, :cut])
        l2, s2 = model.forward(ids[:, cut:], s1, chunk_size=8)
        assert_close("split forward", logits, torch.cat([l1, l2], 1), 1e-4)
        for a, b in zip(state.flat(), s2.flat()):
            assert_close("state split forward", a, b, 1e-4)

    last, _ = model.forward(ids, last_only=True)
    assert_close("last_only", logits[:, -1], last, 1e-6)


@pytest.mark.parametrize("version", ["x060", "x070"])
def test_inputs_embeds_equal_token_ids(version):
    model = random_model(version, 2, 64, 16, vocab_size=100)
    ids = torch.randint(0, 100, (1, 9))
    by_ids, s_ids = model.forward(ids)
    by_emb, s_emb = model.forward(inputs_embeds=model.emb(ids))
    assert_close("forward embeds", by_ids, by_emb, 0)
    lg_ids, _ = model.step(ids[:, 0], s_ids)
    lg_emb, _ = model.step(inputs_embeds=model.emb(ids[:, 0]), state=s_emb)
    assert_close("step embeds", lg_ids, lg_emb, 0)


@pytest.mark.parametrize("version", ["x060", "x070"])
def test_state_is_never_modified(version):
    model = random_model(version, 2, 64, 16, vocab_size=100)
    _, state = model.forward(torch.randint(0, 100, (1, 5)))
    kept = state.clone()
    a, _ = model.forward(torch.tensor([[1, 2, 3]]), state)
    model.step(torch.tensor([4]), state)
    b, _ = model.forward(torch.tensor([[1, 2, 3]]), state)
    assert all(torch.equal(x, y) for x, y in zip(kept.flat(), state.flat()))
    assert torch.equal(a, b)


@pytest.mark.parametrize("version", ["x060", "x070"])
def test_batch_rows_are_independent(version):
    model = random_model(version, 2, 64, 16, vocab_size=100)
    ids = torch.randint(0, 100, (3, 11))
    batched, state = model.forward(ids)
    for b in range(3):
        single, s = model.forward(ids[b:b + 1])
        assert_close(f"row {b}", batched[b:b + 1], single, 1e-5)
        assert_close(f"row {b} wkv", state.select(b).wkv[1], s.wkv[1], 1e-5)


@pytest.mark.parametrize("version", ["x060", "x070"])
def test_bfloat16_runs_close_to_float32(version):
    model = random_model(version, 2, 128, 64, vocab_size=200)
    ids = torch.randint(0, 200, (1, 40))
    ref, _ = model.forward(ids)
    bf = random_model(version, 2, 128, 64, vocab_size=200).to(torch.bfloat16)
    logits, state = bf.forward(ids)
    assert logits.dtype == torch.float32 and state.wkv[0].dtype == torch.float32
    assert state.shift_att[0].dtype == torch.bfloat16
    step_logits, _ = bf.step(ids[:, 0])
    assert torch.isfinite(logits).all() and torch.isfinite(step_logits).all()
    # bf16 has an 8-bit mantissa: a loose bound that still catches a broken path
    assert max_abs(ref, logits) < 0.1 * ref.abs().max().item()


def test_state_contract_and_checks():
    model = random_model("x070", 2, 64, 16, vocab_size=50)
    state = model.new_state(3)
    assert state.n_layer == 2 and state.batch_size == 3
    assert [tuple(t.shape) for t in state.layer(0)] == [(3, 64), (3, 4, 16, 16), (3, 64)]
    assert State.io_names(2)[:3] == ["past_key_values.0.shift_att", "past_key_values.0.wkv",
                                     "past_key_values.0.shift_ffn"]
    assert State.from_flat(state.flat()).flat()[1] is state.flat()[1]
    model.check_state(state)
    bad = State.from_flat([t if i != 4 else t[:, :2] for i, t in enumerate(state.flat())])
    with pytest.raises(ValueError, match=r"state\.1\.wkv: shape"):
        model.check_state(bad)
    with pytest.raises(ValueError, match="batch size 3"):
        model.forward(torch.zeros(1, 2, dtype=torch.long), state)
    with pytest.raises(ValueError, match="exactly one of"):
        model.step(None, state)
    assert State.cat([state.select(0), state.select([1, 2])]).batch_size == 3
    assert state.select(0).expand(4).batch_size == 4
