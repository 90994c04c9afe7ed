"""Continuous batching: sequences of different lengths join and leave at random steps; every sequence's logits
and tokens equal its solo run, through the PyTorch model and the ONNX Runtime backend."""
import random

import pytest
import torch

from tests.helpers import assert_close
from vrwkv_edge.generation import SamplingParams, generate
from vrwkv_edge.serving.batcher import ContinuousBatcher

pytestmark = pytest.mark.usefixtures("quiet_torch")


def _workload(seed: int, n: int, vocab: int):
    """n sequences: prompt, sampling parameters, arrival step; one of them is cancelled mid-way."""
    rng = random.Random(seed)
    seqs = []
    for i in range(n):
        prompt = [rng.randrange(1, vocab) for _ in range(rng.randint(1, 23))]
        sampled = i % 3 == 2               # a third sample (temperature, top-p, penalties, seeded)
        params = (SamplingParams(temperature=1.0, top_p=0.9, frequency_penalty=0.5, max_new_tokens=rng.randint(1, 14),
                                 stop_tokens=(), seed=100 + i) if sampled
                  else SamplingParams.greedy(max_new_tokens=rng.randint(1, 14), stop_tokens=()))
        seqs.append({"prompt": prompt, "params": params, "arrival": rng.randint(0, 14)})
    seqs[1]["cancel_after"] = 3            # leaves by cancel() once it has 3 tokens
    seqs[1]["params"] = SamplingParams.greedy(max_new_tokens=30, stop_tokens=())
    return seqs


def _solo(model, prompt, tokens):
    """The logits a sequence samples from, run alone: forward(prompt), then one step per generated token."""
    logits, state = model.forward(torch.tensor([prompt]), last_only=True)
    out = [logits[0]]
    for t in tokens[:-1]:
        logits, state = model.step(torch.tensor([t]), state)
        out.append(logits[0])
    return out


def _run_interleaved(model, seqs, max_batch, **kw):
    b = ContinuousBatcher(model, max_batch=max_batch, keep_logits=True, **kw)
    ids, step, max_rows, emitted = {}, 0, 0, {}
    while step < 200 and (len(ids) < len(seqs) or not b.idle()):
        for i, s in enumerate(seqs):
            if s["arrival"] == step:
                ids[i] = b.submit(s["prompt"], s["params"])
            if "cancel_after" in s and i in ids and emitted.get(ids[i]) == s["cancel_after"]:
                assert b.cancel(ids[i])
                emitted[ids[i]] = -1
        for e in b.step():
            emitted[e.request_id] = emitted.get(e.request_id, 0) + (e.token is not None)
        max_rows = max(max_rows, b.running)
        step += 1
    assert b.idle(), "the batcher did not finish every sequence"
    return b, ids, max_rows


def _check_against_solo(model, seqs, b, ids, atol):
    joins, leaves = set(), set()
    for i, s in enumerate(seqs):
        res = b.result(ids[i])
        joins.add(res.joined_step)
        leaves.add(res.left_step)
        solo = generate(model, s["prompt"], params=s["params"])
        if "cancel_after" in s:
            assert res.finish_reason == "cancelled"
            assert len(res.tokens) == s["cancel_after"] < len(solo.tokens[0])
            assert res.tokens == solo.tokens[0][:len(res.tokens)]
        else:
            assert res.finish_reason == solo.finish_reason[0] == "length"
            assert res.tokens == solo.tokens[0], f"sequence {i}: tokens differ from its solo run"
        ref = _solo(model, s["prompt"], res.tokens)
        assert len(res.logits) >= len(res.tokens)
        for t, (got, want) in enumerate(zip(res.logits, ref)):
            assert_close(f"sequence {i} logits at token {t}", want, got, atol)
    # sequences really did join and leave at different steps, while others ran
    assert len(joins) >= 4 and len(leaves) >= 4


@pytest.mark.parametrize("max_batch,prefill_chunk", [(4, None), (16, 5)])
def test_torch_continuous_batching_equals_solo_runs(serving_model, max_batch, prefill_chunk):
    seqs = _workload(1, 10, serving_model.cfg.vocab_size)
    b, ids, max_rows = _run_interleaved(serving_model, seqs, max_batch, prefill_chunk=prefill_chunk)
    _check_against_solo(serving_model, seqs, b, ids, 1e-5)
    assert max_rows == min(max_batch, max_rows) and max(b.decode_batch_sizes) >= 3


@pytest.mark.export
def test_ort_continuous_batching_equals_solo_runs(serving_export):
    from vrwkv_edge.runtime.ort import OrtModel  # needs onnxruntime (export extra)

    ort_model = OrtModel(serving_export, threads=1, spinning=False)
    seqs = _workload(2, 9, ort_model.cfg.vocab_size)
    b, ids, _ = _run_interleaved(ort_model, seqs, 6, prefill_per_step=2)
    _check_against_solo(ort_model, seqs, b, ids, 1e-5)
    assert max(b.decode_batch_sizes) >= 3


def test_rows_keep_their_own_position(serving_model):
    b = ContinuousBatcher(serving_model, max_batch=2)
    a = b.submit([1, 2, 3], SamplingParams.greedy(max_new_tokens=5, stop_tokens=()))
    c = b.submit([4], SamplingParams.greedy(max_new_tokens=5, stop_tokens=()))
    w = b.submit([5, 6], SamplingParams.greedy(max_new_tokens=1, stop_tokens=()))
    b.step()                                 # a joins (one prefill per step), c prefilled next step
    assert b.row_positions() == {a: 4} and b.waiting == 1
    b.step()
    assert b.row_positions() == {a: 5, c: 2}
    assert b.waiting == 1                    # the third waits for a free slot
    b.run()
    assert b.result(w).joined_step > b.result(c).joined_step
    assert [len(b.result(x).tokens) for x in (a, c, w)] == [5, 5, 1]


def test_stop_tokens_zero_budget_and_bad_requests(serving_model):
    b = ContinuousBatcher(serving_model, max_batch=3)
    prompt = [7, 8, 9]
    first = generate(serving_model, prompt, params=SamplingParams.greedy(max_new_tokens=3, stop_tokens=())).tokens[0]
    s = b.submit(prompt, SamplingParams.greedy(max_new_tokens=10, stop_tokens=(first[1],)))
    z = b.submit(prompt, SamplingParams.greedy(max_new_tokens=0))
    b.run()
    assert b.result(s).tokens == first[:1] and b.result(s).finish_reason == "stop"
    assert b.result(z).tokens == [] and b.result(z).finish_reason == "length"
    with pytest.raises(ValueError, match="empty"):
        b.submit([])
    with pytest.raises(ValueError, match=r"\[0, 256\)"):
        b.submit([256])
    b.submit([1], request_id="x")
    with pytest.raises(ValueError, match="'x' is already in use"):
        b.submit([1], request_id="x")
    with pytest.raises(ValueError, match="max_batch"):
        ContinuousBatcher(serving_model, max_batch=0)
    with pytest.raises(KeyError, match="no finished sequence"):
        b.result("nope")
