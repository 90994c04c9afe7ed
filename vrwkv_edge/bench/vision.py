"""The vision suites of ``vrwkv-edge bench``, run inside worker processes (``vrwkv_edge.bench.worker``, task
``vision``) so that the resident memory reported is that of the measured model alone.

* **Tower latency** (:func:`measure_tower`): batch-1 fp32 forward of each tower family VisualRWKV uses, on
  seeded random weights (:func:`~vrwkv_edge.visualrwkv.towers.init_tower_random_`): v6.0's CLIP ViT-L/14-336 + its
  linear projector, v7.00's SAM ViT-B + DINOv2 L/14 + SigLIP SO400M + its MLP projector, and the Vision-RWKV
  backbones (``forward_tokens``, no projector) at several input sizes.  Latency is the median of ``repeats``
  forwards after ``warmup`` forwards; memory is the resident size after the build (weights + runtime) and the
  peak resident size during the forwards (VmHWM reset just before them).
* **Time to first token** (:func:`measure_ttft`): a random-weight VisualRWKV v6 (an RWKV-6 LM + CLIP) answering
  ``question_prompt(tok, QUESTION, "v6")`` (the released models' sandwich template) about a JPEG photo: the
  stages timed one by one (preprocess, tower + projector, text before the image, image prefill with the
  layer-wise bidirectional scan, text after the image, choosing and detokenising the first token), the same
  work end to end through ``VisualRWKV.prefill``, and again with the image state served by
  :class:`~vrwkv_edge.visualrwkv.ImageStateCache`.

Shapes are named (``TOWER_SHAPES``, ``TTFT_LMS``, ``TTFT_CLIPS``) so that a plan stays plain JSON; the ``tiny``
names are the test models of :mod:`vrwkv_edge.visualrwkv.builders` for ``--quick``.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from ..config import preset
from ..generation import Sampler
from ..tokenizer import load_tokenizer
from ..vision_rwkv.backbone import build_vision_rwkv, get_config
from ..visualrwkv import ImageStateCache, VisualConfig, build_random_visual_model, question_prompt
from ..visualrwkv.builders import TINY_CLIP, TINY_V7_TOWERS, TINY_VRWKV, TINY_X060
from ..visualrwkv.model import project, tower_features
from ..visualrwkv.preprocess import image_hash, load_rgb
from ..visualrwkv.prompts import ImageSlot
from ..visualrwkv.runtime import eval_params, token_bytes
from ..visualrwkv.towers import (CLIP_CONFIGS, SamDinoSigLIP, V7TowerConfig, build_clip, build_projector,
                                 init_tower_random_, require_transformers)
from .harness import peak_rss_bytes, reset_peak_rss, rss_bytes

MIB = 2 ** 20
TOWER_SEED = 1
TTFT_SEED = 3
INPUT_SEED = 0
QUESTION = "What is in the picture?"
PHOTO_SIZE = (640, 480)            # width, height: a typical camera/VGA frame, resized by every tower transform
PHOTO_SEED = 0
PHOTO_QUALITY = 90                 # JPEG, so that preprocessing pays a real decode, as it does for a photo


# ---- shapes ------------------------------------------------------------------------------------------------
def _clip_shape(name: str) -> dict:
    if name == "tiny":
        return dict(TINY_CLIP)
    return dict(CLIP_CONFIGS[name])


def _v7_shape(name: str) -> dict:
    if name == "tiny":
        return TINY_V7_TOWERS.to_dict()
    if name != "released":
        raise ValueError(f"unknown v7 tower shape {name!r}; choose released or tiny")
    return V7TowerConfig().to_dict()


def _vrwkv_shape(name: str):
    if name == "tiny":
        return get_config(TINY_VRWKV, num_classes=0)
    return get_config(name, num_classes=0)


TOWER_SHAPES: dict[str, Callable] = {"clip": _clip_shape, "sam_dino_siglip": _v7_shape, "vrwkv": _vrwkv_shape}
TOWER_LABELS = {
    "openai/clip-vit-large-patch14-336": "CLIP ViT-L/14-336 + linear proj (v6.0)",
    "released": "SAM-B + DINOv2-L + SigLIP-SO400M + MLP proj (v7.00)",
    "vrwkv_t": "VRWKV-T", "vrwkv_s": "VRWKV-S", "vrwkv_b": "VRWKV-B",
}


def tower_label(job: dict) -> str:
    if job["shape"] == "tiny":
        return f"tiny {job['family']}"
    return TOWER_LABELS.get(job["shape"], job["shape"])


def ttft_lm_config(name: str):
    """The LM of the TTFT suite: a ``vrwkv_edge.config`` preset of RWKV-6 (VisualRWKV v6 is RWKV-6 + CLIP),
    or ``tiny`` (the LM of :func:`vrwkv_edge.visualrwkv.builders.tiny_v6`)."""
    if name == "tiny":
        return TINY_X060
    cfg = preset(name)
    if cfg.version != "x060":
        raise ValueError(f"the TTFT suite runs VisualRWKV v6 (RWKV-6 + CLIP): {name!r} is {cfg.version}, "
                         "choose an RWKV-6 preset such as rwkv6-0.1b or rwkv6-1.6b")
    return cfg


# ---- helpers -----------------------------------------------------------------------------------------------
def synthetic_photo(path: Path | str, size: tuple[int, int] = PHOTO_SIZE, seed: int = PHOTO_SEED) -> Path:
    """Writes a deterministic photo-like JPEG (sky gradient, a few soft-edged coloured blobs, sensor noise).
    The package ships no photograph and the benchmark must not depend on files outside it; latency does not
    depend on what the picture shows, only on its size and format."""
    w, h = size
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.empty((h, w, 3), np.float32)
    for c, (top, bottom) in enumerate(((90, 200), (150, 170), (230, 90))):         # sky to ground
        img[..., c] = top + (bottom - top) * y / (h - 1)
    for _ in range(6):
        cx, cy = rng.uniform(0, w), rng.uniform(h * 0.3, h)
        r = rng.uniform(0.08, 0.25) * min(w, h)
        alpha = np.clip(1.5 - np.hypot(x - cx, y - cy) / r, 0, 1)[..., None]       # soft edge
        img = img * (1 - alpha) + rng.uniform(0, 255, 3).astype(np.float32) * alpha
    img += rng.normal(0, 6, img.shape).astype(np.float32)
    path = Path(path)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, "JPEG", quality=PHOTO_QUALITY)
    return path


def _timing(times: list[float]) -> dict:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "runs": len(times)}


def _num_params(*modules) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


# ---- towers ------------------------------------------------------------------------------------------------
def _build_tower(job: dict, n_embd: int) -> tuple[Callable, int, int, str]:
    """(forward function on a fixed random input, parameter count, resolution, input description)."""
    family = job["family"]
    cfg = TOWER_SHAPES[family](job["shape"])
    gen = torch.Generator().manual_seed(INPUT_SEED)
    if family == "vrwkv":
        model = init_tower_random_(build_vision_rwkv(cfg).eval(), TOWER_SEED)
        s = int(job["resolution"])
        pixels = torch.randn(1, 3, s, s, generator=gen)
        return (lambda: model.forward_tokens(pixels)), _num_params(model), s, f"{s}"
    if family == "clip":
        vit = init_tower_random_(build_clip(cfg), TOWER_SEED)
        proj = build_projector("linear", cfg["hidden_size"], n_embd)
        vcfg = VisualConfig(version="v6", clip=cfg)
        s = int(cfg["image_size"])
        pixels, size = torch.randn(1, 3, s, s, generator=gen), f"{s}"
    elif family == "sam_dino_siglip":
        towers = V7TowerConfig.from_dict(cfg)
        vit = init_tower_random_(SamDinoSigLIP(towers).eval(), TOWER_SEED)
        proj = build_projector("mlp", towers.feature_dim, n_embd)
        vcfg = VisualConfig(version="v7", towers=cfg, proj_type="mlp")
        pixels = {k: torch.randn(1, 3, c.img_size, c.img_size, generator=gen)
                  for k, c in (("dino", towers.dino), ("siglip", towers.siglip), ("sam", towers.sam))}
        s, size = towers.dino.img_size, f"{towers.dino.img_size} (SAM {towers.sam.img_size})"
    else:
        raise ValueError(f"unknown tower family {family!r}; choose one of {sorted(TOWER_SHAPES)}")
    init_tower_random_(proj, TOWER_SEED + 1)
    # the package's own tower -> pooling -> projector path, as VisualRWKV.embed_pixels runs it
    return (lambda: project(proj, tower_features(vit, vcfg, pixels))), _num_params(vit, proj), s, size


def measure_tower(job: dict, repeats: int, warmup: int, n_embd: int) -> dict:
    """Latency and memory of one tower job (family, shape, resolution) in this process."""
    if job["family"] == "clip":                   # import transformers first: its modules are not the tower's
        require_transformers()
    base_rss = rss_bytes()
    t0 = time.perf_counter()
    forward, params, resolution, size = _build_tower(job, n_embd)
    build_s = time.perf_counter() - t0
    repeats = min(repeats, int(job.get("max_repeats", repeats)))
    with torch.inference_mode():
        loaded = rss_bytes()
        reset = reset_peak_rss()
        out = None
        for _ in range(warmup):
            out = forward()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            out = forward()
            times.append(time.perf_counter() - t)
        peak = peak_rss_bytes()
    return {"tower": tower_label(job), "family": job["family"], "shape": job["shape"], "resolution": resolution,
            "input_px": size, "tokens": int(out.shape[1]), "out_dim": int(out.shape[-1]), "parameters": params,
            "weights_mib": params * 4 / MIB,
            "ms": 1e3 * statistics.median(times), "ms_min": 1e3 * min(times), "ms_max": 1e3 * max(times),
            "repeats": repeats, "warmup": warmup, "build_s": build_s,
            "rss_mib": rss_bytes() / MIB, "model_rss_mib": (loaded - base_rss) / MIB, "peak_rss_mib": peak / MIB,
            "forward_peak_mib": (peak - loaded) / MIB if reset else None}


# ---- time to first token -----------------------------------------------------------------------------------
TTFT_STAGES = ("preprocess", "tower + projector", "text prefill before image", "image prefill (layer-wise scan)",
               "text prefill after image", "first token (sample + detokenize)")


def measure_ttft(spec: dict) -> dict:
    """TTFT of one image question, stage by stage, end to end and with the image state cached (this process)."""

    repeats, warmup = int(spec["repeats"]), int(spec.get("warmup", 1))
    image = spec["image"]
    base_rss = rss_bytes()
    t0 = time.perf_counter()
    lm_cfg = ttft_lm_config(spec["lm"])
    model = build_random_visual_model(lm_cfg, VisualConfig(version="v6", clip=_clip_shape(spec["clip"])),
                                      seed=TTFT_SEED)
    build_s = time.perf_counter() - t0
    tok = load_tokenizer()
    prompt = question_prompt(tok, spec.get("question", QUESTION), "v6", image_position=model.vcfg.image_position)
    slot = next(n for n, it in enumerate(prompt.items) if isinstance(it, ImageSlot))
    before, after = prompt.items[:slot], prompt.items[slot + 1:]
    items = prompt.with_images([image])
    params = eval_params()                       # evaluate.py: greedy

    def first_token(logits) -> int:
        t = int(Sampler(params, 1, logits.shape[-1])(logits)[0])
        token_bytes(tok, t)
        return t

    def staged() -> tuple[dict, int]:
        """The work of ``prefill(items)`` + the first token, one stage at a time."""
        times, state, logits = {}, None, None

        def text(chunks, stage):
            nonlocal state, logits
            t = time.perf_counter()
            for ids in chunks:
                if ids:
                    logits, state = model.prefill([ids], state=state)
            times[stage] = time.perf_counter() - t

        t = time.perf_counter()
        pixels = model.preprocess(image)
        times[TTFT_STAGES[0]] = time.perf_counter() - t
        t = time.perf_counter()
        emb = model.embed_pixels(pixels[None])[0]
        times[TTFT_STAGES[1]] = time.perf_counter() - t
        text(before, TTFT_STAGES[2])
        t = time.perf_counter()
        logits, state = model.prefill([emb], state=state)
        times[TTFT_STAGES[3]] = time.perf_counter() - t
        text(after, TTFT_STAGES[4])
        t = time.perf_counter()
        token = first_token(logits)
        times[TTFT_STAGES[5]] = time.perf_counter() - t
        return times, token

    def end_to_end(cache=None) -> int:
        logits, _ = model.prefill(items, cache=cache)
        return first_token(logits)

    def cache_key():                             # what a cache lookup pays: decoding and hashing the image
        return image_hash(load_rgb(image))

    with torch.inference_mode():
        loaded = rss_bytes()
        reset = reset_peak_rss()
        for _ in range(warmup):
            staged()
            end_to_end(ImageStateCache(1))
        stages = {s: [] for s in TTFT_STAGES}
        sums, e2e, cached, keys, tokens = [], [], [], [], set()
        hits = 0
        for _ in range(repeats):                 # round-robin, so that load changes hit every measurement alike
            times, token = staged()
            tokens.add(token)
            for s in TTFT_STAGES:
                stages[s].append(times[s])
            sums.append(sum(times.values()))
            cache = ImageStateCache(1)
            t = time.perf_counter()
            tokens.add(end_to_end(cache))        # a miss: fills the cache
            e2e.append(time.perf_counter() - t)
            t = time.perf_counter()
            tokens.add(end_to_end(cache))        # the same question about the same image again: a hit
            cached.append(time.perf_counter() - t)
            hits += cache.hits
            t = time.perf_counter()
            cache_key()
            keys.append(time.perf_counter() - t)
        peak = peak_rss_bytes()
    with Image.open(image) as im:
        photo = {"width": im.size[0], "height": im.size[1], "format": im.format}
    return {"lm": spec["lm"], "lm_config": asdict(lm_cfg), "lm_parameters": _num_params(model.rwkv),
            "tower": spec["clip"], "tower_parameters": _num_params(model.vit, model.proj),
            "image": photo, "image_tokens": model.tokens_per_image, "question": spec.get("question", QUESTION),
            "template": prompt.text, "image_position": model.vcfg.image_position,
            "text_tokens_before_image": sum(len(c) for c in before),
            "text_tokens_after_image": sum(len(c) for c in after),
            "repeats": repeats, "warmup": warmup, "build_s": build_s,
            "stages": {s: _timing(v) for s, v in stages.items()},
            "ttft_staged": _timing(sums), "ttft": _timing(e2e), "ttft_cached": _timing(cached),
            "cache_key": _timing(keys), "cache_hits": hits, "first_tokens_agree": len(tokens) == 1,
            "first_token": tokens.pop() if len(tokens) == 1 else sorted(tokens),
            "rss_mib": rss_bytes() / MIB, "model_rss_mib": (loaded - base_rss) / MIB, "peak_rss_mib": peak / MIB,
            "ttft_peak_mib": (peak - loaded) / MIB if reset else None}


def run_vision(spec: dict) -> dict:
    """Worker task ``vision``: ``{"towers": [job, ...], "ttft": {...} | None, "repeats", "warmup", "n_embd"}``."""
    torch.set_grad_enabled(False)
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    rows = [measure_tower(job, int(spec["repeats"]), int(spec.get("warmup", 1)), int(spec["n_embd"]))
            for job in spec.get("towers", [])]
    ttft = measure_ttft({"repeats": spec["repeats"], "warmup": spec.get("warmup", 1), **spec["ttft"]}) \
        if spec.get("ttft") else None
    return {"towers": rows, "ttft": ttft}
