"""Tiny random VisualRWKV models (public API, for examples, smoke tests, benchmarks and training starts): the same
code as the released models at tiny sizes.

The LMs keep the World vocabulary (65536 rows) so that the real tokenizer and prompt templates apply; the
towers keep every structural feature (v6: CLIP with CLS, 4x4 patch grid; v7: DINOv2 with class + 4 register
tokens and LayerScale, SigLIP with its MAP head, SAM with windowed + global blocks, padding (grid 8 is not a
multiple of window 3) and the 2x2 space-to-depth), all on a 4x4 token grid.
"""
from __future__ import annotations

from dataclasses import asdict

from ..config import RWKVConfig
from .loading import build_random_visual_model
from .model import VisualConfig, VisualRWKV
from .sam import SamConfig
from .towers import V7TowerConfig, vrwkv_tower_config
from .vit import ViTConfig

TINY_X060 = RWKVConfig("x060", 4, 128, 64, 65536, 448, {"mix": 16, "decay": 16})
TINY_X070 = RWKVConfig("x070", 4, 128, 64, 65536, 512, {"w": 16, "a": 16, "v": 16, "g": 16})
TINY_CLIP = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                 image_size=56, patch_size=14)
TINY_V7_TOWERS = V7TowerConfig(
    dino=ViTConfig(img_size=56, patch_size=14, embed_dim=32, depth=3, num_heads=2, mlp_hidden=64, class_token=True,
                   reg_tokens=4, no_embed_class=True, layer_scale=True, global_pool="token"),
    siglip=ViTConfig(img_size=56, patch_size=14, embed_dim=48, depth=3, num_heads=2, mlp_hidden=96,
                     class_token=False, global_pool="map"),
    sam=SamConfig(img_size=128, patch_size=16, embed_dim=32, depth=2, num_heads=2, mlp_hidden=64, window_size=3,
                  global_attn_indexes=(1,), out_chans=16, downsample=2),
)


def tiny_v6(seed: int = 0, **visual) -> VisualRWKV:
    """RWKV-6 (4 layers, 128 wide) + a 2-layer CLIP on 56 px (16 patches + CLS); bidirectional scan."""
    vcfg = VisualConfig(version="v6", clip=dict(TINY_CLIP), **visual)
    return build_random_visual_model(TINY_X060, vcfg, seed)


def tiny_v7(seed: int = 0, **visual) -> VisualRWKV:
    """RWKV-7 (4 layers, 128 wide) + tiny DINOv2/SigLIP (56 px) and SAM (128 px): 16 tokens of 32+48+64 dims."""
    visual.setdefault("num_token_per_image", 16)
    visual.setdefault("proj_type", "mlp")
    vcfg = VisualConfig(version="v7", towers=TINY_V7_TOWERS.to_dict(), **visual)
    return build_random_visual_model(TINY_X070, vcfg, seed)


# A 2-layer Vision-RWKV with 32 channels on 64 px (a 4x4 grid of 16-px patches), built at 48 px so that the
# position embedding is always resized (3x3 -> 4x4), as a tower running above its training resolution does.
TINY_VRWKV = vrwkv_tower_config("vrwkv_t", embed_dims=32, depth=2, img_size=48)
TINY_VRWKV6 = vrwkv_tower_config("vrwkv6_t", embed_dims=64, depth=2, img_size=48, head_size=32, mix_lora=8,
                                 decay_lora=8)


def tiny_vrwkv(lm: str = "x070", seed: int = 0, variant: str = "vrwkv", **visual) -> VisualRWKV:
    """RWKV-7 or RWKV-6 (4 layers, 128 wide) + a tiny Vision-RWKV tower at 64 px (16 tokens)."""
    visual.setdefault("image_size", 64)
    visual.setdefault("version", "v7" if lm == "x070" else "v6")
    tower = TINY_VRWKV if variant == "vrwkv" else TINY_VRWKV6
    vcfg = VisualConfig(tower="vrwkv", vrwkv=asdict(tower), **visual)
    return build_random_visual_model(TINY_X070 if lm == "x070" else TINY_X060, vcfg, seed)
