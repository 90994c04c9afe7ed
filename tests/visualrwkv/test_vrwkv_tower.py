"""Vision-RWKV as a VisualRWKV tower (issue #4): the tower is the Vision-RWKV backbone itself, its tokens go
through a projector into either LM version, the exact image-scan prefill still equals the training-style
forward, and checkpoints with a Vision-RWKV tower save and load (full, split, stored config or none)."""
from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
import torch

from vrwkv_edge.checkpoint import CheckpointError, read_state_dict, save_checkpoint
from vrwkv_edge.loading import load_model
from vrwkv_edge.vision_rwkv.backbone import build_vision_rwkv
from vrwkv_edge.visualrwkv import VisualConfig, VisualRWKV, load_visual_model, save_visual_checkpoint
from vrwkv_edge.visualrwkv.builders import TINY_X060, TINY_X070, tiny_vrwkv
from vrwkv_edge.visualrwkv.loading import assemble_vrwkv_visual_model, build_random_visual_model
from vrwkv_edge.visualrwkv.towers import adaptive_pool, init_tower_random_, vrwkv_tower_config

pytestmark = pytest.mark.usefixtures("quiet_torch")


def _image(seed: int, h: int = 50, w: int = 70) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


PROMPT = [[24281, 59, 33], _image(0), [11, 24326, 4600, 261, 5585, 41693, 59]]


@pytest.mark.parametrize("lm,variant,scan", [("x070", "vrwkv", None), ("x060", "vrwkv", None),
                                             ("x070", "vrwkv6", None), ("x060", "vrwkv", "multidirectional")])
def test_prefill_equals_training_style_forward(lm, variant, scan):
    m = tiny_vrwkv(lm, seed=3, variant=variant, scan=scan)
    assert m.vcfg.tower == "vrwkv" and m.visual_version == ("v7" if lm == "x070" else "v6")
    assert m.tokens_per_image == 16 and m.image_layout.num_extra == 0        # 64 px / 16 = 4x4, no CLS
    logits, _ = m.prefill(PROMPT, all_logits=True)
    ref = m.reference_logits(PROMPT)
    assert logits.shape == ref.shape == (3 + 16 + 7, 65536)
    torch.testing.assert_close(logits, ref, atol=1e-4, rtol=0)


def test_tower_is_the_vision_rwkv_backbone():
    """The tower's tokens are exactly the Vision-RWKV classifier's ``forward_tokens``; pooling then projection."""
    m = tiny_vrwkv("x070", seed=5, num_token_per_image=4)
    clf = build_vision_rwkv(m.vcfg.vrwkv_tower(), num_classes=0)
    clf.backbone.load_state_dict(m.vit.backbone.state_dict())
    pixels = m.preprocess(_image(1))
    assert pixels.shape == (3, 64, 64)
    tokens = clf.forward_tokens(pixels[None])
    assert tokens.shape == (1, 16, 32)
    expected = m.proj(adaptive_pool(tokens, 4))
    torch.testing.assert_close(m.encode_images([_image(1)]), expected, atol=0, rtol=0)
    assert m.tokens_per_image == 4 and m.image_layout.grid_h == 2


@pytest.mark.parametrize("split", [False, True])
def test_checkpoint_round_trip(tmp_path, split):
    m = tiny_vrwkv("x060", seed=7, proj_type="mlp")
    paths = save_visual_checkpoint(m, tmp_path / "edge.pth", split=split)
    sd = read_state_dict(paths[-1])
    assert "vit.backbone.patch_embed.projection.weight" in sd and "proj.gate.weight" in sd
    loaded = load_model(paths[0])
    assert isinstance(loaded, VisualRWKV) and loaded.vcfg == m.vcfg
    assert torch.equal(loaded.prefill(PROMPT)[0], m.prefill(PROMPT)[0])


def test_official_size_tower_without_stored_config(tmp_path):
    """A file with no stored configuration: the tower (VRWKV-T) is recognised from the ``vit.backbone.*``
    shapes, the version follows the LM, image size and pooling can be set at load time."""
    vcfg = VisualConfig(version="v7", tower="vrwkv", vrwkv=asdict(vrwkv_tower_config("vrwkv_t")))
    m = build_random_visual_model(TINY_X070, vcfg, seed=2)
    path = save_visual_checkpoint(m, tmp_path / "t.pth", include_config=False)[0]
    loaded = load_model(path)
    assert loaded.vcfg.tower == "vrwkv" and loaded.vcfg.version == "v7" and loaded.tokens_per_image == 196
    assert loaded.vcfg.vrwkv_tower() == vcfg.vrwkv_tower()
    assert torch.equal(loaded.prefill(PROMPT)[0], m.prefill(PROMPT)[0])
    hi = load_visual_model(path, image_size=448, num_token_per_image=196)       # 28x28 tokens pooled to 14x14
    assert hi.vcfg.tower_grid() == 28 and hi.tokens_per_image == 196
    assert hi.encode_images([_image(2)]).shape == (1, 196, 128)
    # An LM-version mismatch in the stored file is impossible to guess: an RWKV-6 LM gives v6 prompts.
    m6 = build_random_visual_model(TINY_X060, VisualConfig(version="v6", tower="vrwkv",
                                                           vrwkv=asdict(vrwkv_tower_config("vrwkv_t"))), seed=2)
    path6 = save_visual_checkpoint(m6, tmp_path / "t6.pth", include_config=False)[0]
    assert load_model(path6).vcfg.version == "v6" and load_model(path6).vcfg.scan == "bidirectional"


def test_assemble_from_official_vision_rwkv_checkpoint(tmp_path):
    """Stage-1 starting point: an LM checkpoint + an official mmcls Vision-RWKV classifier file (head dropped)."""
    lm = tiny_vrwkv("x070", seed=1).rwkv
    lm_path = save_checkpoint(lm.state_dict(), tmp_path / "lm.pth")
    clf = build_vision_rwkv("vrwkv_t", num_classes=10)
    init_tower_random_(clf, seed=4)
    vr_path = tmp_path / "vrwkv_t_in1k.pth"
    torch.save({"meta": {}, "state_dict": clf.state_dict()}, vr_path)       # the mmcls container
    m = assemble_vrwkv_visual_model(lm_path, vr_path, proj_type="mlp", image_size=448, num_token_per_image=64)
    assert m.vcfg.version == "v7" and m.tokens_per_image == 64
    assert not any(k.startswith("vit.head") for k in m.state_dict())
    for k, v in clf.backbone.state_dict().items():
        assert torch.equal(m.vit.backbone.state_dict()[k], v), k
    emb = m.encode_images([_image(3)])
    assert emb.shape == (1, 64, 128) and torch.isfinite(emb).all()
    path = save_visual_checkpoint(m, tmp_path / "stage0.pth")[0]
    assert load_model(path).vcfg == m.vcfg
    # a preset name gives a randomly initialised tower of that size
    assert assemble_vrwkv_visual_model(lm, "vrwkv6_t").vcfg.vrwkv["variant"] == "vrwkv6"


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match="belongs to VisualRWKV v6"):
        VisualConfig(version="v7", tower="clip")
    with pytest.raises(ValueError, match="tower must be one of"):
        VisualConfig(version="v6", tower="resnet")
    with pytest.raises(ValueError, match="square number"):
        VisualConfig(version="v6", tower="vrwkv", num_token_per_image=10)
    with pytest.raises(ValueError, match="more than the tower"):
        tiny_vrwkv("x070", num_token_per_image=25)                 # a 4x4 grid cannot be pooled up to 5x5
    m = tiny_vrwkv("x070")
    sd = read_state_dict(save_visual_checkpoint(m, tmp_path / "good.pth")[0])
    sd["vit.backbone.layers.1.att.key.weight"] = torch.zeros(5, 5)
    path = save_checkpoint(sd, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"vit\.backbone\.layers\.1\.att\.key\.weight"):
        load_model(path)


def test_assemble_cli_then_chat(tmp_path, capsys):
    from vrwkv_edge.cli import main
    lm = tiny_vrwkv("x060", seed=1).rwkv
    lm_path = save_checkpoint(lm.state_dict(), tmp_path / "lm.pth")
    out = tmp_path / "edge.pth"
    assert main(["assemble", "--lm", str(lm_path), "--tower", "vrwkv_t", "--out", str(out), "--split",
                 "--image-size", "112"]) == 0
    assert "49 tokens per image" in capsys.readouterr().out
    img = tmp_path / "x.png"
    from PIL import Image
    Image.fromarray(_image(4)).save(img)
    assert main(["chat", "--model", str(tmp_path / "edge_rwkv.pth"), "--image", str(img), "--prompt", "Hi?",
                 "--greedy", "--max-new-tokens", "3"]) == 0
