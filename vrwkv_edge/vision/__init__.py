"""Deprecated alias of vrwkv_edge.vision_rwkv (removed in 0.3)."""
from vrwkv_edge._deprecated import alias_module

alias_module(__name__, "vrwkv_edge.vision_rwkv", None)
