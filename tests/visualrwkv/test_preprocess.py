"""Acceptance 3: image preprocessing of the towers.

* CLIP (v6): against transformers' ``CLIPImageProcessor`` configured as ``openai/clip-vit-large-patch14-336``
  (shortest side 336, bicubic, center crop 336, CLIP mean/std) on every test photo: max-abs <= 1e-5 (it is 0).
* DINOv2 / SigLIP / SAM (v7): timm/torchvision ``Resize((s, s), BICUBIC) + ToTensor + Normalize`` cannot run here
  (torchvision does not install next to this torch).  Checked (a) against PIL's resize with an independent
  float64 normalisation (torchvision applies exactly ``PIL.Image.resize`` to PIL inputs), <= 1e-6; (b) against an
  independent float64 numpy implementation of PIL's bicubic filter (a = -0.5, support scaled by the reduction
  factor, horizontal pass, rounded and clipped to 8 bit as PIL stores it, then vertical).  PIL's weights are
  22-bit fixed point, so a few values land one level (once two) away: the bound is 2 grey levels per value, at
  most 1% of the values off at all (measured: 0.3% at most) and 0.01 levels on average.
* DINOv2 / SigLIP also against transformers' ``SiglipImageProcessor`` (PIL backend) set to the same square size,
  resample and mean/std: <= 1e-5.
* Loading: any mode, EXIF orientation, clear errors for missing / unreadable / truncated files.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import IMAGES  # noqa: E402
from vrwkv_edge.vision_rwkv.image import ImageLoadError
from vrwkv_edge.visualrwkv.preprocess import (CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, SIGLIP_MEAN, SIGLIP_STD,
                                              clip_transform, dino_transform, image_hash, load_rgb, sam_transform,
                                              siglip_transform)

pytestmark = pytest.mark.vision
PHOTOS = sorted(IMAGES.glob("*"))
assert {p.name for p in PHOTOS} >= {"chelsea.png", "coffee.png", "rocket.jpg"}


@pytest.mark.parametrize("path", PHOTOS, ids=lambda p: p.name)
def test_clip_matches_transformers(path):
    import transformers
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proc = transformers.CLIPImageProcessor(
            size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}, do_center_crop=True,
            resample=3, do_rescale=True, rescale_factor=1 / 255, do_normalize=True, image_mean=list(CLIP_MEAN),
            image_std=list(CLIP_STD), do_convert_rgb=True)
    ref = proc(images=Image.open(path), return_tensors="np")["pixel_values"][0]
    ours = clip_transform(336)(path).numpy()
    assert ours.shape == ref.shape == (3, 336, 336)
    assert ours.dtype == np.float32
    assert float(np.abs(ours - ref).max()) <= 1e-5


@pytest.mark.parametrize("path", PHOTOS, ids=lambda p: p.name)
@pytest.mark.parametrize("transform,size,mean,std", [
    (siglip_transform(448), 448, SIGLIP_MEAN, SIGLIP_STD), (dino_transform(448), 448, IMAGENET_MEAN, IMAGENET_STD)])
def test_square_resize_matches_transformers_siglip_processor(path, transform, size, mean, std):
    """An independent implementation of 'resize to (s, s) bicubic + rescale + normalise': transformers'
    SiglipImageProcessor (PIL backend).  It rescales in float64 where torchvision divides in float32."""
    import transformers
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proc = transformers.SiglipImageProcessor(size={"height": size, "width": size}, resample=3,
                                                 do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
                                                 image_mean=list(mean), image_std=list(std))
    ref = proc(images=Image.open(path).convert("RGB"), return_tensors="np")["pixel_values"][0]
    ours = transform(path).numpy()
    assert ours.shape == ref.shape == (3, size, size)
    assert float(np.abs(ours - ref).max()) <= 1e-5


@pytest.mark.parametrize("path", PHOTOS, ids=lambda p: p.name)
@pytest.mark.parametrize("name,transform,size,mean,std", [
    ("dino", dino_transform(448), 448, IMAGENET_MEAN, IMAGENET_STD),
    ("siglip", siglip_transform(448), 448, SIGLIP_MEAN, SIGLIP_STD),
    ("sam", sam_transform(1024), 1024, IMAGENET_MEAN, IMAGENET_STD)])
def test_resize_transforms_vs_pil_and_float64(path, name, transform, size, mean, std):
    img = load_rgb(path)
    ours = transform(img).numpy()
    assert ours.shape == (3, size, size) and ours.dtype == np.float32
    resized = np.asarray(img.resize((size, size), Image.BICUBIC), dtype=np.float64).transpose(2, 0, 1)
    ref = (resized / 255.0 - np.asarray(mean)[:, None, None]) / np.asarray(std)[:, None, None]
    assert float(np.abs(ours - ref).max()) <= 1e-6


def _bicubic_weights(n_in: int, n_out: int) -> np.ndarray:
    """PIL's resampling matrix [n_out, n_in] for the bicubic filter (float64)."""
    a = -0.5

    def f(x):
        x = np.abs(x)
        return np.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                        np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0))
    scale = n_in / n_out
    fscale = max(scale, 1.0)
    support = 2.0 * fscale
    W = np.zeros((n_out, n_in))
    for i in range(n_out):
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), n_in)
        j = np.arange(lo, hi)
        w = f((j - center + 0.5) / fscale)
        W[i, lo:hi] = w / w.sum()
    return W


@pytest.mark.parametrize("path", PHOTOS, ids=lambda p: p.name)
def test_resize_against_float64_bicubic(path):
    img = load_rgb(path)
    a = np.asarray(img, dtype=np.float64)                      # [H, W, 3]
    size = 448
    Wx = _bicubic_weights(a.shape[1], size)
    Wy = _bicubic_weights(a.shape[0], size)
    ref = np.einsum("ow,hwc->hoc", Wx, a)                       # horizontal pass first, as PIL,
    ref = np.clip(np.rint(ref), 0, 255)                         # stored as 8 bit between the passes
    ref = np.clip(np.rint(np.einsum("oh,hwc->owc", Wy, ref)), 0, 255)
    ref_norm = (ref / 255.0 - np.asarray(IMAGENET_MEAN)) / np.asarray(IMAGENET_STD)
    ours = dino_transform(size)(img).numpy().transpose(1, 2, 0)
    levels = np.abs(ours - ref_norm) * np.asarray(IMAGENET_STD) * 255.0
    assert levels.max() <= 2.0 + 1e-4, levels.max()
    assert (levels > 0.5).mean() <= 0.01                       # measured 0.0007% / 0.009% / 0.32%
    assert levels.mean() <= 0.01, levels.mean()


def test_clip_crop_geometry():
    """Portrait and landscape: shortest side 336, long side int(336 * long / short), crop at (d // 2)."""
    for w, h in ((451, 300), (300, 451), (336, 336), (1000, 337)):
        rng = np.random.default_rng(w * h)
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        t = clip_transform(336)
        resized = t.resize(img)
        assert resized.size == (336, 336)
        nw, nh = (336, int(336 * h / w)) if w <= h else (int(336 * w / h), 336)
        big = img.resize((nw, nh), Image.BICUBIC)
        top, left = (nh - 336) // 2, (nw - 336) // 2
        assert np.array_equal(np.asarray(resized), np.asarray(big)[top:top + 336, left:left + 336])


@pytest.mark.parametrize("mode", ["RGBA", "LA", "L", "P", "CMYK", "I;16", "I", "F", "1"])
def test_any_mode_becomes_rgb(mode, tmp_path):
    rng = np.random.default_rng(0)
    base = Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))
    if mode == "I;16":
        img = Image.fromarray((rng.integers(0, 65536, (20, 30))).astype(np.uint16))
        assert img.mode == "I;16"
    elif mode == "I":
        img = Image.fromarray(rng.integers(0, 65536, (20, 30)).astype(np.int32), "I")
    elif mode == "F":
        img = Image.fromarray(rng.random((20, 30)).astype(np.float32), "F")
    else:
        img = base.convert(mode)
    out = load_rgb(img)
    assert out.mode == "RGB" and out.size == (30, 20)
    if mode in ("L", "P", "CMYK", "1"):
        assert np.array_equal(np.asarray(out), np.asarray(img.convert("RGB")))     # as the datasets did
    if mode in ("RGBA", "LA"):                                  # package rule: alpha composited over white
        a = np.asarray(img.convert("RGBA"), dtype=np.float64)
        want = a[..., :3] * a[..., 3:] / 255 + 255 * (1 - a[..., 3:] / 255)
        assert np.abs(np.asarray(out, dtype=np.float64) - want).max() <= 1.0
    if mode == "I;16":                                          # scaled, not clipped to white
        want = np.clip(np.rint(np.asarray(img, dtype=np.float64) / 257), 0, 255)
        assert np.array_equal(np.asarray(out)[..., 0], want.astype(np.uint8))
    x = dino_transform(28)(img)
    assert x.shape == (3, 28, 28) and bool(np.isfinite(x.numpy()).all())
    # a file of that mode loads too
    if mode in ("RGBA", "LA", "L", "P", "I;16", "1"):
        p = tmp_path / f"img_{mode.replace(';', '_')}.png"
        img.save(p)
        assert load_rgb(p).mode == "RGB"


def test_exif_orientation(tmp_path):
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 256, (20, 40, 3), dtype=np.uint8))    # 40 wide, 20 high
    exif = Image.Exif()
    exif[0x0112] = 6                                             # rotate 90 degrees clockwise on display
    p = tmp_path / "rot.jpg"
    img.save(p, exif=exif.tobytes(), quality=95)
    out = load_rgb(p)
    assert out.size == (20, 40)
    assert load_rgb(np.asarray(img)).size == (40, 20)


def test_unreadable_and_truncated_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_rgb(tmp_path / "missing.jpg")
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    with pytest.raises((ImageLoadError, ValueError, OSError), match="notes.jpg"):
        load_rgb(bad)
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises((ImageLoadError, ValueError, OSError), match="cut.jpg"):
        load_rgb(cut)
    with pytest.raises((ImageLoadError, ValueError, IsADirectoryError), match="directory"):
        load_rgb(tmp_path)
    with pytest.raises(TypeError):
        load_rgb(42)


def test_image_hash_is_content_based(tmp_path):
    img = load_rgb(PHOTOS[0])
    p = tmp_path / "copy.png"
    img.save(p)
    assert image_hash(load_rgb(p)) == image_hash(img)
    assert image_hash(img.transpose(Image.FLIP_LEFT_RIGHT)) != image_hash(img)
