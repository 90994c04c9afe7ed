"""Generation: greedy and sampled decoding, penalties, stop tokens, batches, and reuse of a prompt state."""
import pytest
import torch

from tests.helpers import random_model
from vrwkv_edge.generation import Sampler, SamplingParams, TextStreamer, generate, generate_stream


@pytest.fixture(scope="module")
def model():
    return random_model("x070", 2, 64, 16, vocab_size=120, seed=3)


def greedy_by_hand(model, prompt, n):
    logits, state = model.forward(torch.tensor([prompt]), last_only=True)
    out = []
    for _ in range(n):
        tok = logits.argmax(-1)
        out.append(int(tok))
        logits, state = model.step(tok, state)
    return out


def test_greedy_matches_argmax_chain(model):
    res = generate(model, [5, 6, 7], params=SamplingParams.greedy(max_new_tokens=12, stop_tokens=()))
    assert res.tokens[0] == greedy_by_hand(model, [5, 6, 7], 12)
    assert res.finish_reason == ["length"]


def test_stop_token_ends_generation(model):
    free = greedy_by_hand(model, [1, 2], 10)
    stop = free[4]
    first = free.index(stop)
    res = generate(model, [1, 2], params=SamplingParams.greedy(max_new_tokens=10, stop_tokens=(stop,)))
    assert res.tokens[0] == free[:first] and res.finish_reason == ["stop"]


def test_batch_equals_single_sequences(model):
    prompts = torch.tensor([[3, 4, 5], [9, 8, 7]])
    params = SamplingParams.greedy(max_new_tokens=8, stop_tokens=())
    batched = generate(model, prompts, params=params)
    for b in range(2):
        assert batched.tokens[b] == generate(model, prompts[b].tolist(), params=params).tokens[0]


def test_prompt_state_is_reused(model):
    logits, prefix_state = model.forward(torch.tensor([[10, 11, 12]]), last_only=True)
    kept = prefix_state.clone()
    params = SamplingParams.greedy(max_new_tokens=6, stop_tokens=())
    a = generate(model, [13, 14], state=prefix_state, params=params)
    b = generate(model, [13, 14], state=prefix_state, params=params)
    full = generate(model, [10, 11, 12, 13, 14], params=params)
    assert a.tokens == b.tokens == full.tokens
    assert all(torch.equal(x, y) for x, y in zip(kept.flat(), prefix_state.flat()))
    from_logits = generate(model, state=prefix_state, prefix_logits=logits, params=params)
    assert from_logits.tokens[0] == greedy_by_hand(model, [10, 11, 12], 6)


def test_sampling_is_seeded_and_limits_work(model):
    p = dict(max_new_tokens=10, stop_tokens=(), frequency_penalty=0.0)
    a = generate(model, [1], params=SamplingParams(temperature=1.0, top_p=1.0, seed=5, **p)).tokens
    b = generate(model, [1], params=SamplingParams(temperature=1.0, top_p=1.0, seed=5, **p)).tokens
    assert a == b
    greedy = generate(model, [1], params=SamplingParams.greedy(**p)).tokens
    assert generate(model, [1], params=SamplingParams(top_k=1, top_p=1.0, seed=1, **p)).tokens == greedy
    assert generate(model, [1], params=SamplingParams(top_p=1e-6, seed=2, **p)).tokens == greedy


def test_penalties():
    logits = torch.tensor([[5.0, 4.0, 0.0]])
    s = Sampler(SamplingParams(temperature=0, presence_penalty=0.0, frequency_penalty=3.0, penalty_decay=0.5), 1, 3)
    assert int(s(logits)) == 0            # counts: token 0 -> 1
    assert int(s(logits)) == 1            # 5 - 3 < 4
    # each step decays every count, then counts the new token: token 0 -> 1 -> 0.5
    assert s.counts[0, 0].item() == pytest.approx(0.5) and s.counts[0, 1].item() == pytest.approx(1.0)
    # a huge presence penalty forbids any repetition
    model = random_model("x060", 1, 32, 8, vocab_size=60, seed=1)
    res = generate(model, [1], params=SamplingParams(temperature=0, presence_penalty=1e9, frequency_penalty=0,
                                                     max_new_tokens=30, stop_tokens=()))
    assert len(set(res.tokens[0])) == 30


def test_non_finite_logits_are_reported():
    s = Sampler(SamplingParams.greedy(), 1, 3)
    with pytest.raises(FloatingPointError, match="NaN"):
        s(torch.full((1, 3), float("nan")))


@pytest.mark.parametrize("bad", [dict(temperature=-1), dict(top_p=1.5), dict(top_k=-2),
                                 dict(max_new_tokens=-1), dict(frequency_penalty=float("nan"))])
def test_invalid_sampling_params(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        SamplingParams(**bad)


def test_generate_needs_a_start(model):
    with pytest.raises(ValueError, match="prompt_ids"):
        list(generate_stream(model, None))


class BytesTok:
    def decode_bytes(self, ids):
        return bytes(ids)


def test_text_streamer_holds_back_split_characters():
    st = TextStreamer(BytesTok())
    euro = "€".encode()                       # 3 bytes
    assert st.push(ord("a")) == "a"
    assert st.push(euro[0]) == "" and st.push(euro[1]) == ""
    assert st.push(euro[2]) == "€"
    assert st.push(0xFF) == "\ufffd"          # invalid, not a truncated character: emitted at once
    st.push(euro[0])
    assert st.flush() == "\ufffd"
