"""Vision-RWKV: structure and parameter counts, q-shift (== the official code), the default WKV == the official
kernel's port and the formula's fast == reference inside the model, VRWKV6 key_norm, official-layout checkpoints
(good and bad), image loading/preprocessing, classify() and the CLI."""
from dataclasses import replace
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vrwkv_edge.checkpoint import CheckpointError
from vrwkv_edge.vision_rwkv import backbone, classify, load_vision_rwkv, read_labels
from vrwkv_edge.vision_rwkv.backbone import (VRWKV_PRESETS, PatchEmbed, VRWKVConfig, build_vision_rwkv, get_config,
                                             q_shift, resize_pos_embed)
from vrwkv_edge.vision_rwkv.cli import main as cli_main
from vrwkv_edge.vision_rwkv.image import (IMAGENET_MEAN_255, IMAGENET_STD_255, ImageLoadError, load_image,
                                          preprocess_classification)
from vrwkv_edge.visualrwkv.towers import VRWKVTower, vrwkv_tower_config

# Doc section 8: totals including the 1000-class head, to 0.01M, and the README's 0.1M figures.
PUBLISHED = {"vrwkv_t": ("6.16", "6.2"), "vrwkv_s": ("23.82", "23.8"), "vrwkv_b": ("93.65", "93.7"),
             "vrwkv_l": ("334.88", "334.9"), "vrwkv6_t": ("7.64", "7.6"), "vrwkv6_s": ("27.68", "27.7"),
             "vrwkv6_b": ("104.90", "104.9")}

TINY = VRWKVConfig(embed_dims=32, depth=2, img_size=64, num_classes=7)
TINY_L = replace(TINY, post_norm=True, init_values=0.5, key_norm=True, head_hidden=24, img_size=48, test_size=96)
TINY6 = VRWKVConfig(variant="vrwkv6", embed_dims=32, depth=2, head_size=16, mix_lora=8, decay_lora=8, img_size=64,
                    num_classes=7)
TINY6_POST = replace(TINY6, post_norm=True, init_values=1e-2)
TINY6_KN = replace(TINY6, key_norm=True)


def random_model(arch, seed=0, **overrides):
    model = build_vision_rwkv(arch, **overrides)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def image_batch(h, w, b=1, seed=0):
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


# ---- structure ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", sorted(VRWKV_PRESETS))
def test_parameter_counts_match_the_published_numbers(arch):
    n = sum(p.numel() for p in build_vision_rwkv(arch, device="meta").parameters())
    two_dec = Decimal(n / 1e6).quantize(Decimal("0.01"), ROUND_HALF_UP)
    assert str(two_dec) == PUBLISHED[arch][0]
    # The README rounds the 0.01M figure (VRWKV-B: 93,645,544 -> 93.65 -> 93.7, not 93.6).
    assert str(two_dec.quantize(Decimal("0.1"), ROUND_HALF_UP)) == PUBLISHED[arch][1]


def _shapes(arch):
    return {k: tuple(v.shape) for k, v in build_vision_rwkv(arch, device="meta").state_dict().items()}


def test_vrwkv_key_names_and_shapes_are_the_official_ones():
    C, H = 192, 4 * 192
    block = {"ln1.weight": (C,), "ln1.bias": (C,), "ln2.weight": (C,), "ln2.bias": (C,),
             "att.spatial_decay": (C,), "att.spatial_first": (C,), "att.spatial_mix_k": (1, 1, C),
             "att.spatial_mix_v": (1, 1, C), "att.spatial_mix_r": (1, 1, C), "att.key.weight": (C, C),
             "att.value.weight": (C, C), "att.receptance.weight": (C, C), "att.output.weight": (C, C),
             "ffn.spatial_mix_k": (1, 1, C), "ffn.spatial_mix_r": (1, 1, C), "ffn.key.weight": (H, C),
             "ffn.receptance.weight": (C, C), "ffn.value.weight": (C, H)}
    expected = {"backbone.patch_embed.projection.weight": (C, 3, 16, 16), "backbone.patch_embed.projection.bias": (C,),
                "backbone.pos_embed": (1, 196, C), "backbone.ln1.weight": (C,), "backbone.ln1.bias": (C,),
                "backbone.layers.0.ln0.weight": (C,), "backbone.layers.0.ln0.bias": (C,),
                "head.fc.weight": (1000, C), "head.fc.bias": (1000,)}
    for i in range(12):
        expected.update({f"backbone.layers.{i}.{k}": s for k, s in block.items()})
    assert _shapes("vrwkv_t") == expected


def test_vrwkv_s_and_l_extras():
    s = _shapes("vrwkv_s")
    assert s["backbone.layers.11.gamma1"] == s["backbone.layers.11.gamma2"] == (384,)
    big = _shapes("vrwkv_l")
    assert big["backbone.pos_embed"] == (1, 144, 1024)                      # built at 192 px, run at 384
    assert big["backbone.layers.23.att.key_norm.weight"] == (1024,)
    assert big["backbone.layers.23.ffn.key_norm.bias"] == (4096,)
    assert (big["head.0.weight"], big["head.2.weight"]) == ((3072, 1024), (1000, 3072))
    assert "head.fc.weight" not in big and "backbone.layers.24.ln1.weight" not in big


def test_vrwkv6_key_names_and_shapes():
    s = _shapes("vrwkv6_s")
    C, p = 384, "backbone.layers.3.att."
    for name in ("x", "w", "k", "v", "r", "g"):
        assert s[p + "time_maa_" + name] == (1, 1, C)
    assert (s[p + "time_maa_w1"], s[p + "time_maa_w2"]) == ((C, 160), (5, 32, C))
    assert (s[p + "time_decay"], s[p + "time_decay_w1"], s[p + "time_decay_w2"]) == ((1, 1, C), (C, 64), (64, C))
    assert s[p + "time_faaaa"] == (6, 64)
    for name in ("receptance", "key", "value", "gate", "output"):
        assert s[p + name + ".weight"] == (C, C)
    assert s[p + "ln_x.weight"] == (C,)
    assert s["backbone.layers.3.ffn.spatial_mix_k"] == (1, 1, C)


def test_q_shift_directions():
    H, W, C = 3, 4, 8                                         # quarters of 2 channels
    h, w, c = torch.meshgrid(torch.arange(H), torch.arange(W), torch.arange(C), indexing="ij")
    x = (100 * c + 10 * h + w + 1).float().view(1, H * W, C)
    out = q_shift(x, (H, W)).view(H, W, C)
    grid = x.view(H, W, C)
    for i in range(H):
        for j in range(W):
            want = [grid[i, j - 1, 0:2] if j > 0 else torch.zeros(2),         # from the left
                    grid[i, j + 1, 2:4] if j < W - 1 else torch.zeros(2),     # from the right
                    grid[i - 1, j, 4:6] if i > 0 else torch.zeros(2),         # from above
                    grid[i + 1, j, 6:8] if i < H - 1 else torch.zeros(2)]     # from below
            assert torch.equal(out[i, j], torch.cat(want))


def official_q_shift(x, grid, shift=1, gamma=1 / 4):
    """``q_shift`` of the official vrwkv.py, as written there."""
    B, N, C = x.shape
    x = x.transpose(1, 2).reshape(B, C, *grid)
    H, W = grid
    out = torch.zeros_like(x)
    out[:, 0:int(C * gamma), :, shift:W] = x[:, 0:int(C * gamma), :, 0:W - shift]
    out[:, int(C * gamma):int(C * gamma * 2), :, 0:W - shift] = x[:, int(C * gamma):int(C * gamma * 2), :, shift:W]
    out[:, int(C * gamma * 2):int(C * gamma * 3), shift:H, :] = \
        x[:, int(C * gamma * 2):int(C * gamma * 3), 0:H - shift, :]
    out[:, int(C * gamma * 3):int(C * gamma * 4), 0:H - shift, :] = \
        x[:, int(C * gamma * 3):int(C * gamma * 4), shift:H, :]
    out[:, int(C * gamma * 4):, ...] = x[:, int(C * gamma * 4):, ...]
    return out.flatten(2).transpose(1, 2)


@pytest.mark.parametrize("C", [6, 8, 10, 66])
@pytest.mark.parametrize("gamma", [1 / 4, 1 / 8])
def test_q_shift_is_the_official_one(C, gamma):
    """Boundaries int(C*gamma*i), not i*int(C*gamma): C = 6 splits 1, 2, 1, 2 (not 1, 1, 1, 1 and 2 unshifted)."""
    x = torch.randn(2, 12, C)
    assert torch.equal(q_shift(x, (3, 4), gamma=gamma), official_q_shift(x, (3, 4), gamma=gamma))
    assert torch.equal(q_shift(x, (4, 3), shift=2, gamma=gamma), official_q_shift(x, (4, 3), shift=2, gamma=gamma))
    if C == 6 and gamma == 1 / 4:
        assert not torch.equal(q_shift(x, (3, 4))[..., 2], x[..., 2])        # channel 2 comes from the right


def test_q_shift_per_head_for_vrwkv6():
    x = torch.randn(2, 6, 32)
    heads = q_shift(x, (2, 3), group_size=16)
    for h in range(2):                                        # each head shifted as if it were all the channels
        assert torch.equal(heads[..., 16 * h:16 * (h + 1)], q_shift(x[..., 16 * h:16 * (h + 1)].contiguous(), (2, 3)))


def test_patch_embed_pads_bottom_and_right():
    pe = PatchEmbed(TINY)
    img = image_batch(20, 36)
    tokens, grid = pe(img)
    assert grid == (2, 3) and tokens.shape == (1, 6, 32)
    padded = torch.zeros(1, 3, 32, 48)
    padded[..., :20, :36] = img
    assert torch.allclose(tokens, pe.projection(padded).flatten(2).transpose(1, 2))


def test_resize_pos_embed():
    pos = torch.randn(1, 16, 8)
    assert resize_pos_embed(pos, (4, 4), (4, 4)) is pos
    want = F.interpolate(pos.view(1, 4, 4, 8).permute(0, 3, 1, 2), size=(6, 3), mode="bicubic", align_corners=False)
    assert torch.allclose(resize_pos_embed(pos, (4, 4), (6, 3)), want.flatten(2).transpose(1, 2))


def test_config_validation():
    with pytest.raises(ValueError, match="unknown Vision-RWKV arch"):
        get_config("vrwkv_xl")
    assert get_config("VRWKV6-S") == VRWKV_PRESETS["vrwkv6_s"]
    with pytest.raises(ValueError, match="not a multiple of head_size"):
        replace(TINY6, embed_dims=40)


# ---- forward: the default WKV == the official kernel's port, fast == reference, any resolution ------------

@pytest.mark.parametrize("cfg", [TINY, TINY_L, TINY6, TINY6_POST, TINY6_KN],
                         ids=["vrwkv", "vrwkv-L-like", "vrwkv6", "vrwkv6-post", "vrwkv6-key-norm"])
@pytest.mark.parametrize("size", [(64, 64), (48, 80), (37, 70), (176, 176)])
def test_default_wkv_is_the_official_kernel_in_the_model(cfg, size):
    """The default model equals the model driven by the kernel's port (VRWKV6: by the formula, which its
    kernel computes), and the formula's fast form equals its O(T^2) reference; 176 px: 121 tokens, Lc = 4."""
    model = random_model(cfg, seed=1)
    x = image_batch(*size, b=2)
    with torch.no_grad():
        default = model(x)
        port = model.set_wkv_impl("official_ref")(x)
        formula, ref = model.set_wkv_impl("formula")(x), model.set_wkv_impl("ref")(x)
    assert torch.isfinite(default).all()
    assert (default - port).abs().max() <= 1e-5 * port.abs().max()
    assert (formula - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_features_tokens_and_missing_head():
    model = random_model(TINY)
    x = image_batch(64, 96)
    with torch.no_grad():
        tokens = model.forward_tokens(x)
        fmap = model.forward_features(x)
    assert tokens.shape == (1, 24, 32) and fmap.shape == (1, 32, 4, 6)
    assert torch.equal(fmap.flatten(2).transpose(1, 2), tokens)            # raster order
    with pytest.raises(RuntimeError, match="no classification head"):
        build_vision_rwkv(TINY, num_classes=0)(x)
    with pytest.raises(ValueError, match="wkv impl must be one of"):
        model.set_wkv_impl("cuda")


def test_official_is_the_default_and_the_formula_an_option():
    model = random_model(TINY, seed=2)
    assert {layer.att.impl for layer in model.backbone.layers} == {"official"}
    x = image_batch(64, 64)                                   # 16 tokens: the kernel's symmetric form
    with torch.no_grad():
        official = model(x)
        formula = model.set_wkv_impl("formula")(x)
        assert torch.equal(model.set_wkv_impl("fast")(x), formula)           # old names kept
        assert torch.equal(model.set_wkv_impl("kernel")(x), official)
    assert (official - formula).abs().max() > 1e-4 * official.abs().max()
    tower = VRWKVTower(vrwkv_tower_config(TINY)).backbone                # the VisualRWKV tower: same default
    assert {layer.att.impl for layer in tower.layers} == {"official"}
    assert {layer.att.impl for layer in tower.set_wkv_impl("fast").layers} == {"formula"}


def test_vrwkv6_key_norm_sits_between_the_wkv_and_ln_x(monkeypatch):
    """Official vrwkv6.py: ``x = RUN_CUDA_RWKV6(...); x = key_norm(x); ln_x(x)``; and it loads from a state dict."""
    model = random_model(TINY6_KN, seed=3)
    att = model.backbone.layers[1].att
    assert tuple(att.key_norm.weight.shape) == (32,)
    assert tuple(model.backbone.layers[1].ffn.key_norm.bias.shape) == (128,)
    x = image_batch(48, 64)
    loaded = load_vision_rwkv(model.state_dict(), arch=TINY6_KN)
    assert loaded.config.key_norm and loaded.config.variant == "vrwkv6"
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    seen = {}
    wkv = backbone.BI_WKV6["official"]
    monkeypatch.setitem(backbone.BI_WKV6, "official", lambda *a: seen.setdefault("wkv", wkv(*a)))
    att.key_norm.register_forward_hook(lambda m, i, o: seen.update(kn_in=i[0], kn_out=o))
    att.ln_x.register_forward_hook(lambda m, i, o: seen.update(ln_in=i[0]))
    with torch.no_grad():
        att(torch.randn(1, 12, 32), (3, 4))
    assert torch.equal(seen["kn_in"], seen["wkv"].reshape(1, 12, 32))
    assert torch.equal(seen["ln_in"], seen["kn_out"].reshape(12, 32))


# ---- checkpoints ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """A random VRWKV-T in the mmcls layout ({'meta', 'state_dict'} with backbone./head. keys), 7 classes."""
    model = random_model("vrwkv_t", seed=3, num_classes=7)
    path = tmp_path_factory.mktemp("ckpt") / "vrwkv_tiny_in1k_224.pth"
    torch.save({"meta": {"mmcls_version": "0.25.0", "epoch": 300, "CLASSES": [f"c{i}" for i in range(7)]},
                "state_dict": model.state_dict()}, path)
    return path, model


def test_official_layout_loads_with_inferred_arch_at_224_and_448(tiny_ckpt):
    path, source = tiny_ckpt
    model = load_vision_rwkv(path)
    assert model.config == replace(VRWKV_PRESETS["vrwkv_t"], num_classes=7)
    assert not model.training
    x224 = image_batch(224, 224)
    with torch.no_grad():
        assert torch.equal(model(x224), source(x224))
        assert model.forward_features(image_batch(448, 448)).shape == (1, 192, 28, 28)   # pos embed resized
        assert torch.isfinite(model(image_batch(448, 448))).all()
    assert model.backbone.pos_embed.shape == (1, 196, 192)                              # stored size unchanged


def test_vrwkv6_and_prefixes_and_safetensors(tmp_path):
    from safetensors.torch import save_file
    source = random_model("vrwkv6_t", seed=4, num_classes=5)
    sd = source.state_dict()
    x = image_batch(64, 80)
    with torch.no_grad():
        want = source(x)
        for i, variant in enumerate([{"model": sd}, {"module." + k: v for k, v in sd.items()}]):
            assert torch.equal(load_vision_rwkv(variant)(x), want), i
        save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "v6.safetensors")
        model = load_vision_rwkv(tmp_path / "v6.safetensors", arch="vrwkv6_t")
        assert model.config.variant == "vrwkv6"
        assert all(torch.equal(v, sd[k]) for k, v in model.state_dict().items())
        assert torch.allclose(model(x), want, rtol=0, atol=1e-6)     # buffer alignment may change the SIMD path


def test_l_like_checkpoint_runs_at_twice_its_construction_size(tmp_path):
    source = random_model(TINY_L, seed=5)
    torch.save({"state_dict": source.state_dict(), "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3}]}},
               tmp_path / "l.pth")
    model = load_vision_rwkv(tmp_path / "l.pth", arch=TINY_L)
    x = image_batch(96, 96)                                   # grid 6x6 from a 3x3 pos_embed
    with torch.no_grad():
        assert torch.equal(model(x), source(x))


def test_bare_backbone_checkpoint_loads_without_head():
    source = random_model(TINY, seed=6)
    bare = {k[len("backbone."):]: v for k, v in source.state_dict().items() if k.startswith("backbone.")}
    model = load_vision_rwkv(bare, arch=TINY)
    assert model.head is None and model.config.num_classes == 0
    x = image_batch(64, 64)
    with torch.no_grad():
        assert torch.equal(model.forward_tokens(x), source.forward_tokens(x))


def _tiny_sd():
    return random_model(TINY, seed=7).state_dict()


def test_bad_checkpoints_give_clear_errors(tmp_path, tiny_ckpt):
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        load_vision_rwkv(tmp_path / "nowhere.pth")
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="notes.pth"):
        load_vision_rwkv(tmp_path / "notes.pth")
    data = tiny_ckpt[0].read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pth"):
        load_vision_rwkv(tmp_path / "cut.pth")
    with pytest.raises(CheckpointError, match="checkpoint does not match arch vrwkv_s: embed_dims 192"):
        load_vision_rwkv(tiny_ckpt[0], arch="vrwkv_s")
    with pytest.raises(CheckpointError, match="not a Vision-RWKV checkpoint"):
        load_vision_rwkv({"emb.weight": torch.zeros(4, 4), "blocks.0.ln1.weight": torch.zeros(4)})
    with pytest.raises(CheckpointError, match="no preset has variant vrwkv, embed_dims 32, depth 2; pass arch="):
        load_vision_rwkv(_tiny_sd())


@pytest.mark.parametrize("fault,match", [
    ("missing", r"missing keys \['backbone.layers.1.att.key.weight'\]"),
    ("unexpected", r"unexpected keys \['backbone.layers.0.att.bonus'\]"),
    ("shape", r"backbone.layers.1.ffn.value.weight has shape \(32, 100\), expected \(32, 128\)"),
    ("nan", r"non-finite values .*backbone.layers.0.att.spatial_decay"),
    ("pos", r"backbone.pos_embed has 15 positions, not a square grid"),
    ("not-tensor", r"entries that are not tensors: \['backbone.extra'\]"),
])
def test_damaged_state_dicts_name_the_key(fault, match):
    sd = _tiny_sd()
    if fault == "missing":
        del sd["backbone.layers.1.att.key.weight"]
    elif fault == "unexpected":
        sd["backbone.layers.0.att.bonus"] = torch.zeros(3)
    elif fault == "shape":
        sd["backbone.layers.1.ffn.value.weight"] = torch.zeros(32, 100)
    elif fault == "nan":
        sd["backbone.layers.0.att.spatial_decay"][3] = float("nan")
    elif fault == "pos":
        sd["backbone.pos_embed"] = torch.zeros(1, 15, 32)
    else:
        sd["backbone.extra"] = "text"
    with pytest.raises(CheckpointError, match=match):
        load_vision_rwkv(sd, arch=TINY)


# ---- images ---------------------------------------------------------------------------------------------------

PHOTOS = {"chelsea.png": (451, 300), "coffee.png": (600, 400), "rocket.jpg": (640, 427)}


@pytest.mark.parametrize("name", sorted(PHOTOS))
def test_photos_preprocess_like_the_mmcls_test_pipeline(testdata, name):
    img = load_image(testdata / "images" / name)
    assert img.mode == "RGB" and img.size == PHOTOS[name]
    x = preprocess_classification(img)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32 and x.flags.c_contiguous
    # short side -> 256 (long side truncated), bicubic; centre 224 crop; (pixel - mean) / std
    w, h = img.size
    size = (int(w * 256 / h), 256) if w > h else (256, int(h * 256 / w))
    left, top = round((size[0] - 224) / 2), round((size[1] - 224) / 2)
    crop = np.asarray(img.resize(size, Image.Resampling.BICUBIC).crop((left, top, left + 224, top + 224)), np.float32)
    want = ((crop - np.float32(IMAGENET_MEAN_255)) / np.float32(IMAGENET_STD_255)).transpose(2, 0, 1)
    np.testing.assert_allclose(x, want, atol=1e-6)
    assert np.array_equal(preprocess_classification(load_image(testdata / "images" / name)), x)


def _save(tmp_path, img, name, **kw):
    path = tmp_path / name
    img.save(path, **kw)
    return path


def _pixels(path):
    return np.asarray(load_image(path)).reshape(-1, 3)


def test_alpha_is_composited_over_white(tmp_path):
    rgba = Image.new("RGBA", (3, 1))
    rgba.putdata([(255, 0, 0, 0), (0, 0, 255, 255), (0, 0, 0, 128)])
    px = _pixels(_save(tmp_path, rgba, "a.png"))
    assert px[0].tolist() == [255, 255, 255] and px[1].tolist() == [0, 0, 255]
    assert abs(int(px[2][0]) - 127) <= 1
    la = Image.new("LA", (1, 1), (10, 0))
    assert _pixels(_save(tmp_path, la, "la.png"))[0].tolist() == [255, 255, 255]


def test_palette_with_and_without_transparency(tmp_path):
    p = Image.new("P", (2, 1))
    p.putpalette([0, 255, 0, 200, 100, 50] + [0] * 762)
    p.putdata([0, 1])
    assert _pixels(_save(tmp_path, p, "p.png")).tolist() == [[0, 255, 0], [200, 100, 50]]
    assert _pixels(_save(tmp_path, p, "pt.png", transparency=0)).tolist() == [[255, 255, 255], [200, 100, 50]]
    assert _pixels(_save(tmp_path, p, "p.gif")).tolist() == [[0, 255, 0], [200, 100, 50]]


def test_grey_bilevel_cmyk_and_float_modes(tmp_path):
    assert _pixels(_save(tmp_path, Image.new("L", (1, 1), 77), "l.png")).tolist() == [[77, 77, 77]]
    assert _pixels(_save(tmp_path, Image.new("1", (1, 1), 1), "b.png")).tolist() == [[255, 255, 255]]
    cmyk = Image.new("CMYK", (1, 1), (0, 255, 255, 0))
    assert _pixels(_save(tmp_path, cmyk, "c.tif")).tolist() == [[255, 0, 0]]
    assert load_image(_save(tmp_path, Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "c.jpg")).mode == "RGB"
    assert _pixels(_save(tmp_path, Image.new("F", (1, 1), 12.4), "f.tif")).tolist() == [[12, 12, 12]]


def test_sixteen_bit_greyscale_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257 * 128, 65535, 1000]], np.uint16)
    path = _save(tmp_path, Image.fromarray(values), "g16.png")
    assert Image.open(path).mode.startswith("I")
    assert _pixels(path)[:, 0].tolist() == [0, 128, 255, 4]
    wide = _save(tmp_path, Image.fromarray(values.astype(np.int32)), "i32.tif")
    assert Image.open(wide).mode == "I" and _pixels(wide)[:, 0].tolist() == [0, 128, 255, 4]


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (4, 2), (0, 0, 255))
    img.putpixel((0, 0), (255, 0, 0))                         # stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6                                          # display = stored rotated 90 degrees clockwise
    out = load_image(_save(tmp_path, img, "o.png", exif=exif))
    assert out.size == (2, 4)
    assert out.getpixel((1, 0)) == (255, 0, 0)                # now top-right


def test_unreadable_images_name_the_file(tmp_path, testdata):
    data = (testdata / "images" / "rocket.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match=r"cut.jpg: cannot decode the image \(truncated or corrupt\?\)"):
        load_image(tmp_path / "cut.jpg")
    data = (testdata / "images" / "coffee.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageLoadError, match="cut.png"):
        load_image(tmp_path / "cut.png")
    (tmp_path / "text.jpg").write_text("hello")
    with pytest.raises(ImageLoadError, match="text.jpg: not a recognised image format"):
        load_image(tmp_path / "text.jpg")
    with pytest.raises(ImageLoadError, match="is a directory"):
        load_image(tmp_path)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(tmp_path / "missing.png")


# ---- classify and the CLI -------------------------------------------------------------------------------------

@pytest.fixture
def labels(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("".join(f"n0{i} class {i}\n" for i in range(7)))
    return path


def test_classify_returns_sorted_topk_with_labels(tiny_ckpt, testdata, labels):
    path, source = tiny_ckpt
    image = testdata / "images" / "chelsea.png"
    out = classify(path, image, topk=3, labels_path=labels)
    x = torch.from_numpy(preprocess_classification(load_image(image)))[None]
    with torch.no_grad():
        probs = source(x).softmax(-1)[0]
    p, idx = probs.topk(3)
    assert [i for i, _, _ in out] == idx.tolist()
    assert [lab for _, lab, _ in out] == [f"n0{i} class {i}" for i in idx.tolist()]
    assert np.allclose([q for _, _, q in out], p.tolist(), atol=1e-6)
    assert [i for i, lab, _ in classify(source, image, topk=50)] == probs.argsort(descending=True).tolist()
    assert all(lab is None for _, lab, _ in classify(source, image, topk=2))


def test_classify_errors(tiny_ckpt, testdata, tmp_path):
    image = testdata / "images" / "chelsea.png"
    (tmp_path / "few.txt").write_text("a\nb\n")
    with pytest.raises(ValueError, match="few.txt: 2 labels, but the model has 7 classes"):
        classify(tiny_ckpt[1], image, labels_path=tmp_path / "few.txt")
    with pytest.raises(ValueError, match="topk must be >= 1"):
        classify(tiny_ckpt[1], image, topk=0)
    assert read_labels(tmp_path / "few.txt") == ["a", "b"]


def test_cli_prints_topk(tiny_ckpt, testdata, labels, capsys):
    rc = cli_main(["classify", "--model", str(tiny_ckpt[0]), "--image", str(testdata / "images" / "rocket.jpg"),
                   "--topk", "3", "--labels", str(labels)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert rc == 0 and len(lines) == 4 and lines[0].split() == ["rank", "prob", "class", "label"]
    assert lines[1].split()[0] == "1" and "class" in lines[1]


def test_cli_errors(tiny_ckpt, tmp_path, capsys):
    rc = cli_main(["classify", "--model", str(tiny_ckpt[0]), "--image", str(tmp_path / "none.png")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and "none.png" in err
    with pytest.raises(SystemExit):
        cli_main(["classify", "--model", str(tiny_ckpt[0]), "--image", "x.png", "--topk", "0"])
