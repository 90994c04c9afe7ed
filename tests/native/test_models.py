"""The language models on the native C++ CPU ops equal the pure-PyTorch path: forward, step, and a training step's
gradients, on the rwkv.cpp tiny models and on random checkpoints."""
from __future__ import annotations

import pytest
import torch

from tests.helpers import TINY_MODELS, random_model
from tests.native.conftest import rel_err
from vrwkv_edge import load_model


def forward_and_steps(model, ids):
    logits, state = model.forward(ids)
    s, steps = None, []
    for t in range(ids.shape[1]):
        lg, s = model.step(ids[:, t], s)
        steps.append(lg)
    return logits, state, torch.stack(steps, 1), s


def assert_same_paths(torch_model, native_model, ids):
    with torch.no_grad():
        a, b = forward_and_steps(torch_model, ids), forward_and_steps(native_model, ids)
    for name, x, y in zip(("forward logits", "forward state", "step logits", "step state"), a, b):
        if name.endswith("state"):
            for xs, ys in zip(x.flat(), y.flat()):
                assert rel_err(xs, ys) <= 1e-5, name
        else:
            assert rel_err(x, y) <= 1e-5, name


@pytest.mark.parametrize("version", ["x060", "x070"])
def test_tiny_models(native, testdata, version):
    ids = torch.randint(0, 256, (2, 40), generator=torch.Generator().manual_seed(1))
    assert_same_paths(load_model(TINY_MODELS[version][0]), load_model(TINY_MODELS[version][0], wkv_impl="native"),
                      ids)


@pytest.mark.parametrize("spec", [("x060", 2, 128, 64), ("x070", 2, 128, 64), ("x070", 2, 64, 16)],
                         ids=lambda s: f"{s[0]}-N{s[3]}")
def test_random_models(native, spec):
    model = random_model(*spec, vocab_size=300, seed=3)
    ids = torch.randint(0, 300, (2, 37), generator=torch.Generator().manual_seed(2))
    native_model = random_model(*spec, vocab_size=300, seed=3).set_wkv_impl("native")
    assert_same_paths(model, native_model, ids)


@pytest.mark.parametrize("version", ["x060", "x070"])
def test_training_step_gradients(native, version):
    """One language-modelling loss on a random checkpoint: every parameter's gradient through the native backward
    equals autograd through the pure-PyTorch ops (1e-4 relative)."""
    ids = torch.randint(0, 300, (2, 41), generator=torch.Generator().manual_seed(4))
    grads = {}
    for impl in ("torch", "native"):
        model = random_model(version, 2, 128, 64, vocab_size=300, seed=5).train().set_wkv_impl(impl)
        logits, _ = model.forward(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 300), ids[:, 1:].reshape(-1))
        loss.backward()
        grads[impl] = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads["torch"].keys() == grads["native"].keys() and len(grads["torch"]) > 10
    for name, g in grads["torch"].items():
        assert rel_err(g, grads["native"][name]) <= 1e-4, name
