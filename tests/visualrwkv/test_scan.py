"""Acceptance 1: the recurrent runtime (layer-wise image prefill + ordinary steps) equals the training-style
full-sequence forward that permutes the patch span per layer, for prompts (text, image, text) and 32 generated
tokens; v6 bidirectional, v6 multidirectional, v7 unidirectional (+ v7 with two images)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers import IMAGES  # noqa: E402
from vrwkv_edge.generation import Sampler, SamplingParams
from vrwkv_edge.visualrwkv.builders import tiny_v6, tiny_v7
from vrwkv_edge.visualrwkv.scan import (ImageSpan, _apply_training_permutation, patch_order, scan_prefill,
                                        training_style_forward)

IMG = str(IMAGES / "chelsea.png")
TOL = 1e-4


pytestmark = [pytest.mark.usefixtures("quiet_torch"), pytest.mark.vision]


@pytest.fixture(scope="module")
def v6():
    return tiny_v6(seed=1)


@pytest.fixture(scope="module")
def v7():
    return tiny_v7(seed=2)


def _image_embeddings(model, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(model.tokens_per_image, model.cfg.n_embd, generator=g)


def _prompt(embeds):
    # "User: " <image> "\nWhat is the color of the cat?\n\n" "Assistant:"  (ids from the World tokenizer)
    return [[24281, 59, 33], *embeds, [11, 24326, 4600, 22590, 38083, 4706, 22590, 21417, 64, 261, 5585, 41693, 59]]


def _runtime_vs_reference(model, prompt, n_new=32, text_mode="chunk"):
    """Runtime logits for the prompt and n_new greedy steps vs the full-sequence reference over
    prompt + generated tokens.  Returns (max abs diff, number of positions compared)."""
    logits, state = model.prefill(prompt, all_logits=True, text_mode=text_mode)
    runtime = [logits]
    sampler = Sampler(SamplingParams.greedy(max_new_tokens=n_new, stop_tokens=()), 1, logits.shape[-1])
    last = logits[-1:]
    generated = []
    for _ in range(n_new):
        tok = int(sampler(last)[0])
        generated.append(tok)
        last, state = model.step(torch.tensor([tok]), state)
        runtime.append(last)
    runtime = torch.cat(runtime, 0)
    ref = model.reference_logits(list(prompt) + [generated])
    assert ref.shape == runtime.shape
    return float((ref - runtime).abs().max()), ref.shape[0], generated


@pytest.mark.parametrize("scan", ["bidirectional", "multidirectional"])
def test_v6_runtime_equals_training_forward(v6, scan):
    v6.vcfg.scan = scan
    try:
        prompt = _prompt([_image_embeddings(v6, 0)])
        diff, n, _ = _runtime_vs_reference(v6, prompt)
        assert n == 3 + 17 + 13 + 32
        assert diff <= TOL, f"{scan}: max-abs {diff}"
    finally:
        v6.vcfg.scan = "bidirectional"


def test_v6_step_mode_and_real_image(v6):
    """Text after the image stepped token by token; image through the CLIP tower."""
    diff, _, _ = _runtime_vs_reference(v6, _prompt([IMG]), n_new=8, text_mode="step")
    assert diff <= TOL


def test_v7_runtime_equals_training_forward(v7):
    diff, n, _ = _runtime_vs_reference(v7, _prompt([_image_embeddings(v7, 3)]))
    assert n == 3 + 16 + 13 + 32
    assert diff <= TOL


def test_v7_two_images_through_towers(v7):
    prompt = [[24281, 59, 33], IMG, [11], str(IMAGES / "rocket.jpg"), [11, 24326, 5585, 41693, 59]]
    diff, _, _ = _runtime_vs_reference(v7, prompt, n_new=8)
    assert diff <= TOL


def test_token_by_token_rnn_is_not_the_training_forward(v6):
    """Why the layer-wise prefill exists: for v6.0 a plain causal pass over the same embeddings differs."""
    prompt = _prompt([_image_embeddings(v6, 0)])
    ref = v6.reference_logits(prompt)
    x, _ = v6.embed_prompt(prompt)
    plain, _ = v6.rwkv.forward(inputs_embeds=x)
    assert float((plain[0] - ref).abs().max()) > 1e-2
    # ...while before the image both agree (the scan only reorders the patches)
    assert float((plain[0, :3] - ref[:3]).abs().max()) <= TOL


@pytest.mark.parametrize("mode", ["bidirectional", "multidirectional"])
@pytest.mark.parametrize("grid", [(4, 4), (3, 5), (1, 1), (1, 6)])
def test_patch_order_matches_training_ops(mode, grid):
    """The index permutations of the runtime equal the training code's flip / view-transpose ops."""
    h, w = grid
    n = h * w
    x = torch.arange(2 + n + 1, dtype=torch.float32).reshape(1, -1, 1).repeat(1, 1, 3)
    span = ImageSpan(2, h, w)
    for layer in range(8):
        permuted = _apply_training_permutation(x, span, mode, layer, undo=False)
        order = patch_order(mode, layer, h, w)
        want = x.clone()
        if order is not None:
            want[:, 2:2 + n] = x[:, 2 + order]
        assert torch.equal(permuted, want), (mode, grid, layer)
        back = _apply_training_permutation(permuted, span, mode, layer, undo=True)
        assert torch.equal(back, x)


def test_unidirectional_is_identity():
    assert all(patch_order("unidirectional", l, 4, 4) is None for l in range(6))


@pytest.mark.parametrize("grid_size", [0, 1, 2, 3])
def test_v6_grid_sizes(grid_size):
    m = tiny_v6(seed=3, grid_size=grid_size)
    L = m.image_layout
    emb = m.encode_images([IMG])
    assert emb.shape[1] == L.num_tokens == L.num_patches + 1
    diff, _, _ = _runtime_vs_reference(m, _prompt([emb[0]]), n_new=4)
    assert diff <= TOL


def test_v6_grid_size_too_large():
    with pytest.raises(ValueError, match="grid_size"):
        tiny_v6(seed=3, grid_size=5)


def test_scan_prefill_from_a_nonzero_state(v6):
    """The image chunk starts from each layer's own state (the text before it)."""
    lm = v6.rwkv
    x = torch.randn(1, 5 + 17, 128)
    spans = [ImageSpan(5, 4, 4)]
    ref = training_style_forward(lm, x, spans, "bidirectional")
    _, st = lm.forward(inputs_embeds=x[:, :5])
    hidden, _ = scan_prefill(lm, x[:, 5:], st, [ImageSpan(0, 4, 4)], "bidirectional")
    assert float((lm.logits(hidden) - ref[:, 5:]).abs().max()) <= TOL
