"""Vision-RWKV image classification: top-k classes of an image, with optional label names."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import torch

from ..fileio import PathLike
from .backbone import VisionRWKV
from .image import load_image, preprocess_classification
from .loading import load_vision_rwkv


def read_labels(path: PathLike, num_classes: Optional[int] = None) -> list[str]:
    """One label per line (e.g. ``n01440764 tench, Tinca tinca`` or ``tench``); trailing blank lines ignored."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"labels file not found: {path}")
    try:
        labels = path.read_text(encoding="utf-8").rstrip("\n").split("\n")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: labels file is not UTF-8 text: {e}") from e
    labels = [line.strip() for line in labels]
    if num_classes is not None and len(labels) != num_classes:
        raise ValueError(f"{path}: {len(labels)} labels, but the model has {num_classes} classes")
    return labels


def classify(model: Union[VisionRWKV, PathLike], image_path: PathLike, topk: int = 5,
             labels_path: Optional[PathLike] = None) -> list[tuple[int, Optional[str], float]]:
    """Top-k classes of one image: ``[(class_index, label or None, probability), ...]``, most likely first.

    ``model`` is a :class:`VisionRWKV` or a checkpoint path. The image goes through the model's test
    pipeline (``config.test_size`` crop, 224 for T/S/B and 384 for L)."""
    if not isinstance(model, VisionRWKV):
        model = load_vision_rwkv(model)
    model.eval()                                     # drop-path off
    if model.head is None:
        raise ValueError("classify: the model has no classification head (a backbone-only checkpoint)")
    if int(topk) < 1:
        raise ValueError(f"classify: topk must be >= 1, got {topk}")
    n = model.config.num_classes
    labels = read_labels(labels_path, n) if labels_path is not None else None
    pixels = preprocess_classification(load_image(image_path), model.config.test_size)
    param = next(model.parameters())
    x = torch.from_numpy(pixels).unsqueeze(0).to(device=param.device, dtype=param.dtype)
    with torch.inference_mode():
        probs = model(x).float().softmax(-1)[0]
    p, idx = probs.topk(min(int(topk), n))
    return [(i, labels[i] if labels else None, float(q)) for i, q in zip(idx.tolist(), p.tolist())]
