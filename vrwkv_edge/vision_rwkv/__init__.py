"""Vision-RWKV (VRWKV with Bi-WKV, VRWKV6 with bidirectional WKV-6): backbones, official checkpoints, image
transforms and classification.  A backbone is also a VisualRWKV vision tower (:mod:`vrwkv_edge.visualrwkv`).

    from vrwkv_edge.vision_rwkv import load_vision_rwkv, classify, load_image
    model = load_vision_rwkv("vrwkv_tiny_in1k_224.pth")          # arch inferred from the weights
    for index, label, prob in classify(model, "cat.jpg", topk=5, labels_path="imagenet_classes.txt"):
        ...
    tokens = model.forward_tokens(pixels)                       # [B, T, C] after the final norm (tower use)

Modules: :mod:`.backbone` (the model, official parameter names), :mod:`.loading` (checkpoints),
:mod:`.image` (safe image loading, classification transforms), :mod:`.classify`, :mod:`.cli` (``classify``).
"""
from .backbone import VRWKV_PRESETS, VisionRWKV, VRWKVConfig, build_vision_rwkv, get_config
from .classify import classify, read_labels
from .image import ImageLoadError, load_image, preprocess_classification
from .loading import config_from_state_dict, is_vision_rwkv_state_dict, load_vision_rwkv, official_state_dict

__all__ = ["ImageLoadError", "VRWKVConfig", "VRWKV_PRESETS", "VisionRWKV", "build_vision_rwkv", "classify",
           "config_from_state_dict", "get_config", "is_vision_rwkv_state_dict", "load_image", "load_vision_rwkv",
           "official_state_dict", "preprocess_classification", "read_labels"]
