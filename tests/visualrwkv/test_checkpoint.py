"""Acceptance 4: VisualRWKV checkpoints in the three layouts (full v6, full v7, split *_rwkv + *_visual pair)
load through ``vrwkv_edge.checkpoint.load_model``; wrong or missing tower weights fail naming the keys; the
embedded full-size tower configurations are recognised from the weights' shapes."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers import IMAGES  # noqa: E402
from vrwkv_edge.checkpoint import CheckpointError, read_state_dict, save_checkpoint
from vrwkv_edge.loading import load_model
from vrwkv_edge.models import RWKVModel
from vrwkv_edge.protocol import LanguageModel, VisionLanguageModel
from vrwkv_edge.visualrwkv import VISUAL_CONFIG_KEY, VisualConfig, VisualRWKV, load_visual_model, save_visual_checkpoint
from vrwkv_edge.visualrwkv.builders import tiny_v6, tiny_v7
from vrwkv_edge.visualrwkv.loading import (expected_visual_shapes, split_partner, visual_config_from_state_dict,
                                           visual_key_problems)
from vrwkv_edge.visualrwkv.towers import CLIP_CONFIGS, build_clip

IMG = str(IMAGES / "coffee.png")
PROMPT = [[24281, 59, 33], IMG, [11, 24326, 4600, 261, 5585, 41693, 59]]


pytestmark = [pytest.mark.usefixtures("quiet_torch"), pytest.mark.vision]


@pytest.fixture(scope="module")
def models():
    return {"v6": tiny_v6(seed=11), "v7": tiny_v7(seed=12)}


@pytest.fixture(scope="module")
def reference_logits(models):
    return {v: m.prefill(PROMPT)[0] for v, m in models.items()}


@pytest.mark.parametrize("version", ["v6", "v7"])
@pytest.mark.parametrize("layout", ["full", "split-rwkv", "split-visual"])
def test_layouts_load(models, reference_logits, tmp_path, version, layout):
    m = models[version]
    paths = save_visual_checkpoint(m, tmp_path / f"run_{version}.pth", split=layout != "full")
    if layout == "full":
        sd = read_state_dict(paths[0])
        assert any(k.startswith("rwkv.blocks.0.att.") for k in sd) and "rwkv.emb.weight" in sd
        tower_key = "vit.vision_model.embeddings.patch_embedding.weight" if version == "v6" else \
            "vit.sam_featurizer.neck.0.weight"
        assert tower_key in sd
        assert ("proj.weight" in sd) if version == "v6" else ("proj.o_proj.weight" in sd and "proj.ln_v.bias" in sd)
    else:
        lm_path, vis_path = paths
        assert lm_path.name == f"run_{version}_rwkv.pth" and vis_path.name == f"run_{version}_visual.pth"
        lm_sd, vis_sd = read_state_dict(lm_path), read_state_dict(vis_path)
        assert "emb.weight" in lm_sd and not any(k.startswith(("rwkv.", "vit.", "proj.")) for k in lm_sd)
        assert all(k.startswith(("vit.", "proj.")) or k == VISUAL_CONFIG_KEY for k in vis_sd)
        assert split_partner(lm_path) == (lm_path, vis_path) == split_partner(vis_path)
    path = paths[0] if layout != "split-visual" else paths[1]
    loaded = load_model(path)
    assert isinstance(loaded, VisualRWKV) and loaded.visual_version == version
    assert loaded.vcfg == m.vcfg
    logits, _ = loaded.prefill(PROMPT)
    assert torch.equal(logits, reference_logits[version])


def test_fp16_split_like_export_py(models, reference_logits, tmp_path):
    """export.py writes both halves in fp16; they load (as bf16 or fp32) and stay close."""
    m = models["v7"]
    _, vis = save_visual_checkpoint(m, tmp_path / "half.pth", split=True, dtype=torch.float16)
    loaded = load_model(vis, dtype="fp32")
    logits, _ = loaded.prefill(PROMPT)
    assert float((logits - reference_logits["v7"]).abs().max()) < 0.05
    assert load_model(vis, dtype="bf16").dtype == torch.bfloat16


def test_lm_api_and_protocol(models):
    m = models["v6"]
    ids = torch.tensor([[24281, 59, 33]])
    a, s1 = m.forward(ids)
    b, s2 = m.rwkv.forward(ids)
    assert torch.equal(a, b)
    assert isinstance(m, VisionLanguageModel) and isinstance(m.rwkv, LanguageModel)
    assert not isinstance(m.rwkv, VisionLanguageModel)
    assert not hasattr(m, "blocks") and not hasattr(m, "_inputs")      # no forwarding of the LM's insides
    assert m.version == "x060" and m.cfg.n_layer == 4
    info = m.info()
    assert info["tokens_per_image"] == 17 and info["visual"]["scan"] == "bidirectional"


def test_plain_lm_still_loads_as_lm(models, tmp_path):
    sd = {k[len("rwkv."):]: v for k, v in models["v6"].state_dict().items() if k.startswith("rwkv.")}
    p = save_checkpoint(sd, tmp_path / "lm.pth")
    assert isinstance(load_model(p), RWKVModel)


def _full_sd(m):
    sd = dict(m.state_dict())
    sd[VISUAL_CONFIG_KEY] = torch.tensor(list(m.vcfg.to_json().encode()), dtype=torch.uint8)
    return sd


def test_wrong_tower_shape_names_the_key(models, tmp_path):
    sd = _full_sd(models["v7"])
    key = "vit.dino_featurizer.blocks.1.attn.qkv.weight"
    sd[key] = sd[key][:-3]
    p = save_checkpoint(sd, tmp_path / "bad_shape.pth")
    with pytest.raises(CheckpointError, match=r"wrong shapes.*dino_featurizer\.blocks\.1\.attn\.qkv\.weight"):
        load_model(p)


def test_missing_and_unexpected_tower_keys_are_named(models, tmp_path):
    sd = _full_sd(models["v7"])
    del sd["vit.sam_featurizer.neck.0.weight"]
    sd["vit.sam_featurizer.extra.weight"] = torch.zeros(2)
    p = save_checkpoint(sd, tmp_path / "bad_keys.pth")
    with pytest.raises(CheckpointError) as e:
        load_model(p)
    msg = str(e.value)
    assert "missing keys (1): ['vit.sam_featurizer.neck.0.weight']" in msg
    assert "unexpected keys (1): ['vit.sam_featurizer.extra.weight']" in msg
    assert str(p) in msg


def test_no_tower_weights(models, tmp_path):
    sd = {k: v for k, v in models["v6"].state_dict().items() if not k.startswith("vit.")}
    p = save_checkpoint(sd, tmp_path / "no_vit.pth")
    with pytest.raises(CheckpointError, match=r"no vision-tower weights.*vit\.vision_model\."):
        load_visual_model(p)
    assert isinstance(load_model(p), RWKVModel)        # load_model keeps its LM-only answer for such a file
    vis = save_checkpoint({k: v for k, v in sd.items() if k.startswith("proj.")}, tmp_path / "x_visual.pth")
    with pytest.raises(CheckpointError, match="x_rwkv.pth"):
        load_model(vis)                                 # a visual half without its tower and its partner


def test_nan_in_tower(models, tmp_path):
    sd = _full_sd(models["v6"])
    k = "vit.vision_model.encoder.layers.0.mlp.fc1.weight"
    sd[k] = sd[k].clone()
    sd[k][0, 0] = float("nan")
    p = save_checkpoint(sd, tmp_path / "nan.pth")
    with pytest.raises(CheckpointError, match="non-finite.*layers.0.mlp.fc1.weight"):
        load_model(p)


def test_visual_half_without_partner(models, tmp_path):
    _, vis = save_visual_checkpoint(models["v6"], tmp_path / "lonely.pth", split=True)
    (tmp_path / "lonely_rwkv.pth").unlink()
    with pytest.raises(CheckpointError, match="lonely_rwkv.pth"):
        load_model(vis)
    # an explicit pairing works from any names
    lm = save_checkpoint({k[5:]: v for k, v in models["v6"].state_dict().items() if k.startswith("rwkv.")},
                         tmp_path / "some_lm.pth")
    m = load_visual_model(lm, visual_path=vis)
    assert isinstance(m, VisualRWKV)


def test_runtime_overrides(models, tmp_path):
    p = save_visual_checkpoint(models["v6"], tmp_path / "o.pth")[0]
    m = load_visual_model(p, scan="multidirectional", image_position="first", grid_size=2)
    assert (m.vcfg.scan, m.vcfg.image_position, m.vcfg.grid_size) == ("multidirectional", "first", 2)
    assert m.tokens_per_image == 5


def test_official_layout_without_stored_config_uses_embedded_towers(models):
    """Official files carry no config: the embedded one matching the shapes is used, and tiny towers (which match
    none) fail with the keys and shapes at fault."""
    sd = {k: v for k, v in models["v7"].state_dict().items()}
    cfg = visual_config_from_state_dict(sd)
    assert cfg.version == "v7" and cfg.pooled_tokens == 1024 and cfg.proj_type == "mlp"
    assert cfg.towers["dino"]["embed_dim"] == 1024 and cfg.towers["siglip"]["depth"] == 27
    problems = visual_key_problems(sd, expected_visual_shapes(cfg, 128))
    assert any("vit.dino_featurizer.blocks.0.attn.qkv.weight (96, 32) (expected (3072, 1024))" in p
               for p in problems)
    with pytest.raises(CheckpointError, match="match none of the embedded configurations"):
        visual_config_from_state_dict(dict(models["v6"].state_dict()))


@pytest.mark.parametrize("name", ["openai/clip-vit-large-patch14-336", "openai/clip-vit-base-patch32"])
def test_full_size_clip_is_recognised(name):
    vit = build_clip(CLIP_CONFIGS[name], meta=True)
    sd = {f"vit.{k}": v for k, v in vit.state_dict().items()}
    sd["proj.weight"] = torch.empty(2048, CLIP_CONFIGS[name]["hidden_size"], device="meta")
    sd["vit.vision_model.embeddings.position_ids"] = torch.empty(1, 1, device="meta")   # old transformers
    cfg = visual_config_from_state_dict(sd)
    assert cfg.version == "v6" and cfg.clip == CLIP_CONFIGS[name]
    assert cfg.scan == "bidirectional" and cfg.grid_size == -1 and cfg.image_position == "middle"
    assert visual_key_problems(sd, expected_visual_shapes(cfg, 2048)) == []


def test_full_size_v7_shapes():
    cfg = VisualConfig(version="v7", proj_type="mlp")
    shapes = expected_visual_shapes(cfg, 768)
    assert shapes["proj.gate.weight"] == (3200, 3200) and shapes["proj.o_proj.weight"] == (768, 3200)
    assert shapes["vit.dino_featurizer.pos_embed"] == (1, 1024, 1024)
    assert shapes["vit.dino_featurizer.reg_token"] == (1, 4, 1024)
    assert shapes["vit.siglip_featurizer.pos_embed"] == (1, 1024, 1152)
    assert shapes["vit.siglip_featurizer.blocks.26.mlp.fc1.weight"] == (4304, 1152)
    assert shapes["vit.sam_featurizer.pos_embed"] == (1, 64, 64, 768)
    assert shapes["vit.sam_featurizer.blocks.0.attn.rel_pos_h"] == (27, 64)
    assert shapes["vit.sam_featurizer.blocks.2.attn.rel_pos_h"] == (127, 64)
    assert shapes["vit.sam_featurizer.neck.2.weight"] == (256, 256, 3, 3)


def test_transformers_is_optional(monkeypatch):
    """Building a v6 (CLIP) tower without transformers says what to install (v7 towers never need it)."""
    import sys
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r"pip install 'vrwkv_edge\[vision\]'"):
        build_clip(CLIP_CONFIGS["openai/clip-vit-base-patch32"], meta=True)
