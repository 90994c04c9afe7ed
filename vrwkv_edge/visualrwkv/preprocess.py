"""Image preprocessing of the VisualRWKV towers in Pillow + numpy (no torchvision, no transformers needed).

* **CLIP (v6.0)** = ``CLIPImageProcessor`` of ``openai/clip-vit-large-patch14-336``: convert to RGB; resize the
  SHORTEST side to 336 with PIL bicubic, the long side to ``int(336 * long / short)``; center crop 336x336 at
  ``top = (h - 336) // 2, left = (w - 336) // 2``; rescale ``uint8 * (1/255)`` in float64 then float32;
  normalise with the OpenAI CLIP mean/std.  Checked against transformers' processor on the test photos.
* **DINOv2 / SigLIP (v7.00)** = ``Compose([Resize((448, 448), BICUBIC), ToTensor(), Normalize(mean, std)])``
  (aspect ratio not kept): torchvision applies ``PIL.Image.resize((448, 448), BICUBIC)`` to PIL inputs, then
  ``float32(uint8) / 255`` and ``(x - mean) / std`` in float32 -- reproduced with the same float32 operations.
  DINOv2 uses the ImageNet mean/std, SigLIP 0.5/0.5.
* **SAM (v7.00)** = ``Resize((1024, 1024), BICUBIC)`` + the DINOv2 (ImageNet) normalisation.
* **Vision-RWKV tower** = the same square bicubic resize to the tower's input size + ImageNet normalisation (the
  backbones were trained on ImageNet statistics; the whole image is kept, as a VLM tower should, rather than
  the classifier's center crop).

torchvision cannot be installed next to this torch, so the timm-style transforms cannot be run here; the tests
check them against PIL's resize plus an independent float64 normalisation, and against an independent float64
numpy implementation of PIL's bicubic filter (see ``tests/test_visual_preprocess.py``).

Inputs: a path (read with :func:`load_rgb`, i.e. the package loader :func:`vrwkv_edge.vision_rwkv.image.load_image`:
EXIF orientation applied, any mode converted to RGB, clear errors for unreadable or truncated files), a PIL image,
or an HxWx3 uint8 array.  One deliberate difference from the training code: images with transparency are
composited over white (the package-wide rule), where the VisualRWKV datasets called ``convert("RGB")`` and so
exposed whatever colour transparent pixels store; opaque images (all of the training and evaluation data) are
unaffected.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import torch
from PIL import Image

from ..vision_rwkv.image import check_image_size, load_image, to_rgb

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)

ImageSource = Union[str, os.PathLike, Image.Image, np.ndarray]



def load_rgb(source: ImageSource) -> Image.Image:
    """An RGB PIL image from a path (:func:`vrwkv_edge.vision_rwkv.image.load_image`: fully decoded, EXIF orientation
    applied, clear errors naming the file), a PIL image or an HxW / HxWx3 / HxWx4 uint8 array.  Mode conversion
    is the package's :func:`~vrwkv_edge.vision_rwkv.image.to_rgb`."""
    if isinstance(source, Image.Image):
        check_image_size(*source.size, "image")
        return to_rgb(source)
    if isinstance(source, np.ndarray):
        bad_shape = source.ndim not in (2, 3) or (source.ndim == 3 and source.shape[2] not in (3, 4))
        if source.dtype != np.uint8 or bad_shape:
            raise ValueError(f"an image array must be uint8 HxW, HxWx3 or HxWx4, got {source.dtype} {source.shape}")
        check_image_size(source.shape[1], source.shape[0], "image array")
        return to_rgb(Image.fromarray(source))
    if isinstance(source, (str, os.PathLike)):
        return load_image(source)
    raise TypeError(f"expected an image path, PIL image or uint8 array, got {type(source).__name__}")


def image_hash(img: Image.Image) -> str:
    """Content hash of an RGB image (its size and pixels), for the image-state cache."""
    h = hashlib.sha256()
    h.update(f"{img.mode}:{img.size[0]}x{img.size[1]}:".encode())
    h.update(np.ascontiguousarray(np.asarray(img)).tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class ImageTransform:
    """``mode="clip"``: shortest side to ``size`` + center crop ``crop`` (transformers' CLIPImageProcessor);
    ``mode="resize"``: resize to ``size x size`` (torchvision ``Resize((s, s))``).  Bicubic in both."""
    mode: str
    size: int
    mean: tuple
    std: tuple
    crop: Optional[int] = None

    def resize(self, img: Image.Image) -> Image.Image:
        if self.mode == "resize":
            return img.resize((self.size, self.size), Image.BICUBIC)
        if self.mode != "clip":
            raise ValueError(f"unknown transform mode {self.mode!r}")
        w, h = img.size
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = self.size, int(self.size * long / short)
        new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
        img = img.resize((new_w, new_h), Image.BICUBIC)
        c = self.crop or self.size
        top, left = (new_h - c) // 2, (new_w - c) // 2
        if top < 0 or left < 0:                        # never for shortest-side == crop; kept for safety
            raise ValueError(f"image {new_w}x{new_h} is smaller than the {c}x{c} crop")
        return img.crop((left, top, left + c, top + c))

    def to_array(self, img: Image.Image) -> np.ndarray:
        """[3, H, W] float32 from an RGB PIL image."""
        a = np.asarray(self.resize(load_rgb(img)), dtype=np.uint8)
        mean = np.asarray(self.mean, dtype=np.float32)[:, None, None]
        std = np.asarray(self.std, dtype=np.float32)[:, None, None]
        chw = np.ascontiguousarray(a.transpose(2, 0, 1))
        if self.mode == "clip":                        # transformers: rescale in float64, then float32
            x = (chw.astype(np.float64) * (1 / 255)).astype(np.float32)
        else:                                          # torchvision ToTensor: float32 / 255
            x = chw.astype(np.float32) / np.float32(255)
        return (x - mean) / std

    def __call__(self, image: ImageSource) -> torch.Tensor:
        return torch.from_numpy(self.to_array(load_rgb(image)))


def clip_transform(size: int = 336, crop: Optional[int] = None) -> ImageTransform:
    return ImageTransform("clip", size, CLIP_MEAN, CLIP_STD, crop or size)


def dino_transform(size: int = 448) -> ImageTransform:
    return ImageTransform("resize", size, IMAGENET_MEAN, IMAGENET_STD)


def siglip_transform(size: int = 448) -> ImageTransform:
    return ImageTransform("resize", size, SIGLIP_MEAN, SIGLIP_STD)


def sam_transform(size: int = 1024) -> ImageTransform:
    return ImageTransform("resize", size, IMAGENET_MEAN, IMAGENET_STD)


def vrwkv_transform(size: int = 224) -> ImageTransform:
    return ImageTransform("resize", size, IMAGENET_MEAN, IMAGENET_STD)
