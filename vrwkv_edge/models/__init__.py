"""The RWKV language models, one module per version, and building them from checkpoints."""
from .base import RWKVModel
from .loading import MODEL_CLASSES, build_model, detect_version, language_model_part, model_from_state_dict
from .rwkv6 import RWKV6
from .rwkv7 import RWKV7

__all__ = ["MODEL_CLASSES", "RWKV6", "RWKV7", "RWKVModel", "build_model", "detect_version", "language_model_part",
           "model_from_state_dict"]
