"""End to end: a model exported in both WKV flavours (``export --wkv standard|custom``) and loaded by the Python
ONNX Runtime backend, which registers the op library by itself for the custom flavour: custom-op graph ==
standard-op graph == PyTorch (fp32, 1e-4) for a tiny RWKV-6 and RWKV-7 text model and a VisualRWKV (RWKV-7) with a
Vision-RWKV tower (its Bi-WKV nodes, official semantics, in vision.onnx).

Models are small (2 layers) and exported without the ``_embeds`` graphs: the six exports dominate this file's time
(marked slow: 8 min here at load average 9-11 on the 2-core machine, the tests themselves 5 s).
"""
from __future__ import annotations

import pytest
import torch

from tests.helpers import random_model, require_extra

require_extra("export")

from vrwkv_edge.export import export_model, load_onnx_model  # noqa: E402

pytestmark = [pytest.mark.usefixtures("quiet_torch"), pytest.mark.export, pytest.mark.slow]
TOL = 1e-4
FLAVOURS = ("standard", "custom")


@pytest.fixture(scope="module")
def text_models(op_library, tmp_path_factory):
    """version -> (PyTorch model, {flavour: export dir})."""
    out = {}
    for version in ("x060", "x070"):
        model = random_model(version, n_layer=2, n_embd=64, head_size=32, vocab_size=256, seed=3)
        out[version] = model, {f: export_model(model, tmp_path_factory.mktemp("e2e") / f"{version}-{f}", wkv=f, embeds=False,
                                               progress=False) for f in FLAVOURS}
    return out


@pytest.fixture(scope="module")
def visual_model(op_library, tmp_path_factory):
    from vrwkv_edge.visualrwkv.builders import tiny_vrwkv
    model = tiny_vrwkv("x070", seed=5).eval()
    return model, {f: export_model(model, tmp_path_factory.mktemp("e2e") / f"visual-{f}", wkv=f, embeds=False,
                                   progress=False) for f in FLAVOURS}


def language_model_outputs(om, ids):
    """Prefill logits and state, then one decode step's logits and state."""
    logits, state = om.forward(ids, None, last_only=True)
    step_logits, step_state = om.step(ids[:, 0], state)
    return [logits, *state.flat(), step_logits, *step_state.flat()]


def assert_all_close(got, want, what):
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        err = (g.float() - w.float()).abs().max().item()
        assert err <= TOL, f"{what}: output {i}: max-abs difference {err:.3g} > {TOL:g}"


@pytest.mark.parametrize("version", ["x060", "x070"])
def test_text_flavours_agree_with_pytorch(text_models, version):
    model, dirs = text_models[version]
    ids = torch.randint(0, 256, (2, 21), generator=torch.Generator().manual_seed(1))
    ref = language_model_outputs(model, ids)
    got = {}
    for flavour, d in dirs.items():
        om = load_onnx_model(d, threads=1, spinning=False)
        assert (om.op_library is None) == (flavour == "standard")     # registered with no user action
        got[flavour] = language_model_outputs(om, ids)
        assert_all_close(got[flavour], ref, f"{version} {flavour} vs PyTorch")
    assert_all_close(got["custom"], got["standard"], f"{version} custom vs standard")


def test_visual_flavours_agree_with_pytorch(visual_model):
    from vrwkv_edge.visualrwkv.model import project, tower_features
    model, dirs = visual_model
    ids = torch.randint(0, 1000, (1, 11), generator=torch.Generator().manual_seed(2))
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    ref_lm = language_model_outputs(model.rwkv, ids)
    ref_emb = project(model.proj, tower_features(model.vit, model.vcfg, pixels))
    got = {}
    for flavour, d in dirs.items():
        om = load_onnx_model(d, threads=1, spinning=False)
        emb = torch.from_numpy(om._session("vision").run(None, {"pixel_values": pixels.numpy()})[0])
        got[flavour] = [emb, *language_model_outputs(om, ids)]
        assert_all_close(got[flavour], [ref_emb, *ref_lm], f"visual {flavour} vs PyTorch")
    assert_all_close(got["custom"], got["standard"], "visual custom vs standard")
