"""Model classes, one module per model version."""
from ..config import RWKVConfig
from .base import RWKVModel
from .rwkv6 import RWKV6
from .rwkv7 import RWKV7

MODEL_CLASSES = {"x060": RWKV6, "x070": RWKV7}


def build_model(cfg: RWKVConfig) -> RWKVModel:
    """An uninitialised model of ``cfg`` (load weights into it, or call ``init_random_``)."""
    return MODEL_CLASSES[cfg.version](cfg)


__all__ = ["MODEL_CLASSES", "RWKV6", "RWKV7", "RWKVModel", "build_model"]
