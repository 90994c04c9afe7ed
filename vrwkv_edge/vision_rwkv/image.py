"""Image loading and classification preprocessing in Pillow + NumPy (no torch), shared by every vision tower.

``load_image(path)`` decodes the whole file at once (so a truncated file fails here, naming it), applies the
EXIF orientation, and converts any Pillow mode to RGB:

* alpha (RGBA, LA, PA, P with a transparent colour): composited over an opaque background, white by default,
  so transparent areas look as a viewer shows them rather than exposing whatever RGB they happen to store;
* 16/32-bit integer greyscale (I;16*, I): scaled by 255/65535 (a 16-bit range is assumed for I);
* everything else (L, 1, P, CMYK, YCbCr, LAB, HSV, F, ...): Pillow's own conversion.

``preprocess_classification`` is the mmcls test pipeline of Vision-RWKV (doc section 9): resize the short side
to 256 (bicubic, aspect kept, long side truncated to an int), center-crop 224, normalise with the ImageNet
mean/std on the 0..255 scale, channels first.  Other crop sizes keep the 256/224 ratio.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGENET_MEAN_255 = (123.675, 116.28, 103.53)
IMAGENET_STD_255 = (58.395, 57.12, 57.375)
RESIZE_RATIO = 256 / 224
WHITE = (255, 255, 255)


# Decompression-bomb and degenerate-shape limits, checked from the header before any pixel is decoded: a few
# hundred bytes of PNG can declare a 1 x 50000 image whose resize to a 256-pixel short side asks for gigabytes.
MAX_IMAGE_PIXELS = 64 * 2 ** 20          # 64 megapixels (about 8K x 8K)
MAX_ASPECT_RATIO = 32                    # longer side / shorter side


class ImageLoadError(ValueError):
    """An image file that cannot be used; the message names the file and the reason."""


def check_image_size(width: int, height: int, where: str) -> None:
    """Refuses an empty image, one over :data:`MAX_IMAGE_PIXELS` or one more elongated than
    :data:`MAX_ASPECT_RATIO`, naming ``where`` (the file or argument)."""
    if width < 1 or height < 1:
        raise ImageLoadError(f"{where}: the image is empty ({width}x{height} pixels)")
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageLoadError(f"{where}: {width}x{height} pixels is more than the {MAX_IMAGE_PIXELS:,}-pixel limit")
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise ImageLoadError(f"{where}: a {width}x{height} image is more elongated than {MAX_ASPECT_RATIO}:1")


def to_rgb(img: Image.Image, background: Sequence[int] = WHITE) -> Image.Image:
    """Any Pillow mode -> RGB (see the module docstring for how alpha and high bit depths are treated)."""
    if img.mode == "RGB":
        return img
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        if img.mode == "RGB":
            return img
    if img.mode.startswith("I"):                     # I, I;16, I;16B, I;16L, I;16N: wide integer greyscale
        a = np.asarray(img, dtype=np.float64) * (255 / 65535)
        img = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*tuple(background)[:3], 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(path: Union[str, os.PathLike], background: Sequence[int] = WHITE) -> Image.Image:
    """Reads an image file into an RGB ``PIL.Image`` (EXIF orientation applied, fully decoded).

    Raises ``FileNotFoundError`` for a missing file and :class:`ImageLoadError` for a directory, a file that is
    not an image, or one that is truncated or corrupt; every message names the file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image not found: {path}")
    if path.is_dir():
        raise ImageLoadError(f"{path}: is a directory, expected an image file")
    try:
        with Image.open(path) as im:
            check_image_size(*im.size, str(path))    # from the header, before decoding
            im.load()                                # decode now: truncated data fails here, not later
            im = ImageOps.exif_transpose(im)         # a copy, independent of the file
        return to_rgb(im, background)
    except ImageLoadError:
        raise
    except UnidentifiedImageError as e:
        raise ImageLoadError(f"{path}: not a recognised image format") from e
    except Image.DecompressionBombError as e:
        raise ImageLoadError(f"{path}: image too large to decode safely: {e}") from e
    except PermissionError:
        raise
    except (OSError, SyntaxError, EOFError, ValueError, MemoryError) as e:
        raise ImageLoadError(f"{path}: cannot decode the image (truncated or corrupt?): {e}") from e


def resize_short_side(img: Image.Image, size: int, resample=Image.Resampling.BICUBIC) -> Image.Image:
    """Scales so that the shorter side is ``size`` (the longer one truncated to an int), as mmcls does."""
    w, h = img.size
    if w <= h:
        new = (size, max(1, int(h * size / w)))
    else:
        new = (max(1, int(w * size / h)), size)
    return img if new == (w, h) else img.resize(new, resample)


def center_crop(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    if w < size or h < size:
        raise ValueError(f"center_crop: image {w}x{h} is smaller than the crop {size}")
    x0, y0 = int(round((w - size) / 2)), int(round((h - size) / 2))
    return img.crop((x0, y0, x0 + size, y0 + size))


def normalize(img: Image.Image, mean: Sequence[float] = IMAGENET_MEAN_255,
              std: Sequence[float] = IMAGENET_STD_255) -> np.ndarray:
    """RGB image -> float32 [3, H, W], ``(pixel - mean) / std`` on the 0..255 scale."""
    a = np.asarray(to_rgb(img), dtype=np.float32)
    a = (a - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(a.transpose(2, 0, 1))


def preprocess_classification(img: Image.Image, crop_size: int = 224, resize_size: int | None = None
                              ) -> np.ndarray:
    """The Vision-RWKV test pipeline: short side -> ``resize_size`` (default ``crop_size * 256/224``,
    rounded), center crop ``crop_size``, ImageNet normalisation. Returns float32 [3, crop, crop]."""
    check_image_size(*img.size, "image")
    resize_size = resize_size or int(round(crop_size * RESIZE_RATIO))
    if resize_size < crop_size:
        raise ValueError(f"resize_size {resize_size} is smaller than crop_size {crop_size}")
    return normalize(center_crop(resize_short_side(to_rgb(img), resize_size), crop_size))
