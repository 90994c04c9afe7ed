"""Tiny standard-op exports of every graph kind, made once per test session: a VisualRWKV (RWKV-7 language model +
Vision-RWKV tower) in fp32 (decode, prefill, vision, image_prefill), its language model alone in fp16 (decode,
prefill: an fp16 export's vision graph is fp32 anyway, and exports are the slow part of these tests: ~12 s of CPU
per graph here) and a Vision-RWKV classifier (fp32)."""
from __future__ import annotations

from pathlib import Path

# Two layers, 64 wide, head size 32, a byte-level vocabulary: the smallest shapes the exporter and the kernels take.
TINY_LM = dict(version="x070", n_layer=2, n_embd=64, head_size=32, vocab_size=256, dim_ffn=128,
               lora={"w": 8, "a": 8, "v": 8, "g": 8})


def tiny_visual_model(seed: int = 0):
    from dataclasses import asdict

    from vrwkv_edge.config import RWKVConfig
    from vrwkv_edge.visualrwkv.builders import TINY_VRWKV, build_random_visual_model
    from vrwkv_edge.visualrwkv.model import VisualConfig

    vcfg = VisualConfig(tower="vrwkv", vrwkv=asdict(TINY_VRWKV), image_size=64, version="v7")
    return build_random_visual_model(RWKVConfig(**TINY_LM), vcfg, seed)


def export_visual(out: Path, dtype: str) -> Path:
    from vrwkv_edge.export import export_model

    return export_model(tiny_visual_model(), out, dtype=dtype, embeds=False, progress=False)


def export_language_model(out: Path, dtype: str) -> Path:
    from vrwkv_edge.export import export_model

    from vrwkv_edge.config import RWKVConfig
    from vrwkv_edge.models import build_model

    model = build_model(RWKVConfig(**TINY_LM)).init_random_(0).eval()
    return export_model(model, out, dtype=dtype, embeds=False, progress=False)


def export_classifier(out: Path) -> Path:
    from vrwkv_edge.export.visual import export_vision_rwkv
    from vrwkv_edge.vision_rwkv.backbone import build_vision_rwkv
    from vrwkv_edge.visualrwkv.towers import init_tower_random_

    model = build_vision_rwkv("vrwkv_t", embed_dims=32, depth=2, num_classes=5, img_size=32)
    init_tower_random_(model, seed=3)
    return export_vision_rwkv(model.eval(), out, image_size=32)
