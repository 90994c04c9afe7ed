"""Explicit WKV dispatch: a model runs the implementation it was given, per model, and says clearly when one
is unknown or not built."""
import dataclasses

import pytest
import torch

from tests.helpers import random_model
from vrwkv_edge.ops import dispatch
from vrwkv_edge.ops.dispatch import WkvImpl, get_wkv_impl, register_wkv_impl, unregister_wkv_impl


def test_each_model_runs_its_own_implementation():
    calls = []
    torch_impl = get_wkv_impl("torch")

    def counting(fn):
        def wrapped(*args, **kw):
            calls.append(fn.__name__)
            return fn(*args, **kw)
        return wrapped

    spy = dataclasses.replace(torch_impl, name="spy", wkv7_step=counting(torch_impl.wkv7_step),
                              wkv7_seq=counting(torch_impl.wkv7_seq))
    register_wkv_impl(spy)
    try:
        a, b = random_model("x070", n_layer=2, n_embd=64, head_size=32), random_model("x070", n_layer=2, n_embd=64,
                                                                                    head_size=32)
        b.set_wkv_impl("spy")
        ids = torch.tensor([[1, 2, 3, 4, 5]])
        with torch.no_grad():
            la, _ = a.forward(ids)
            assert calls == []                                       # a still runs "torch"
            lb, sb = b.forward(ids)
            lb_step, _ = b.step(ids[:, 0])
        assert calls == ["wkv7_chunked"] * 2 + ["wkv7_step"] * 2    # one call per layer and path
        assert torch.equal(la, lb)
    finally:
        unregister_wkv_impl("spy")


def test_unknown_and_unbuilt_implementations_are_refused_when_selected(monkeypatch):
    m = random_model("x060", n_layer=1, n_embd=64, head_size=32)
    with pytest.raises(ValueError, match="unknown WKV implementation 'nope'"):
        m.set_wkv_impl("nope")
    assert m.wkv_impl == "torch"
    monkeypatch.setitem(dispatch.PROVIDERS, "missing", "vrwkv_edge.no_such_provider")
    with pytest.raises(ImportError):
        m.set_wkv_impl("missing")
    with pytest.raises(ValueError, match="cannot be replaced"):
        register_wkv_impl(WkvImpl("torch", *(lambda: None,) * 4))
