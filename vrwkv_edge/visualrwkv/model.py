"""The VisualRWKV model: an RWKV-6/7 language model, a frozen vision tower and a projector, with the
language-model API plus image calls.

Module tree = checkpoint keys (so ``state_dict()`` is an official VisualRWKV checkpoint)::

    rwkv.*   the language model (vrwkv_edge.models.RWKV6 / RWKV7)
    vit.*    tower "clip" (v6.0): CLIPVisionTower (vit.vision_model.*, HF CLIP names)
             tower "sam_dino_siglip" (v7.00): SamDinoSigLIP (vit.{dino,siglip,sam}_featurizer.*)
             tower "vrwkv" (either version): VRWKVTower (vit.backbone.*, Vision-RWKV names)
    proj.*   Linear(tower dim, C), or (v7 / vrwkv) MLPWithContextGating (proj.gate / o_proj / ln_v)

Public API (besides ``forward`` / ``step`` / ``new_state`` / ``cfg`` / ``version`` of the language model)::

    pixels = model.preprocess(image)              # path / PIL / uint8 array -> tower input (Tensor or dict)
    emb    = model.encode_images([img, ...])      # -> [N, tokens_per_image, C] projected embeddings
    logits, state = model.prefill(prompt, state=None)
        # prompt: a list of token-id chunks (list[int] / 1-D LongTensor) and images (path / PIL / array /
        # precomputed embeddings [T, C] float tensor), in order; returns (last logits [1, V], state)
    logits = model.reference_logits(prompt)      # the training-style full-sequence forward, [T_total, V]

``prefill`` is exact with respect to training: text chunks run as ordinary (chunked) recurrent prefill, each
image runs through :func:`~vrwkv_edge.visualrwkv.scan.scan_prefill` with the model's scan mode, so the state after
the prompt equals the state the training-time full-sequence forward implies.  Batch size is 1.
"""
from __future__ import annotations

import hashlib
import json
import math
import numbers
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from ..state import State
from ..vision_rwkv.backbone import VRWKVConfig
from .cache import ImageStateCache, prefix_key  # noqa: F401  (ImageStateCache: type in the docs)
from .preprocess import (clip_transform, dino_transform, image_hash, load_rgb, sam_transform, siglip_transform,
                         vrwkv_transform)
from .prompts import IMAGE_POSITIONS
from .scan import ImageSpan, check_scan_mode, scan_prefill, training_style_forward
from .towers import (CLIP_CONFIGS, DEFAULT_CLIP, TowerLayout, V7TowerConfig, adaptive_pool, clip_features, grid_pool,
                     grid_pool_layout, vrwkv_tower_config)

VISUAL_VERSIONS = ("v6", "v7")
# Tower families; the released VisualRWKV models use CLIP (v6.0) and SAM+DINOv2+SigLIP (v7.00).
TOWERS = ("clip", "sam_dino_siglip", "vrwkv")
DEFAULT_TOWER = {"v6": "clip", "v7": "sam_dino_siglip"}


@dataclass
class VisualConfig:
    """Everything about the visual side that the weights do not say.

    version: "v6" (VisualRWKV v6.0 prompts and scan) or "v7" (v7.00).
    tower: "clip" (v6.0's, the default for v6), "sam_dino_siglip" (v7.00's, the default for v7) or "vrwkv"
        (a Vision-RWKV backbone, with either version).
    scan: image scan in the LM ("bidirectional" for v6.0, "unidirectional" for v7.00, or "multidirectional").
    grid_size (clip): -1 (576 patches + CLS, the released models), 0, 1 or g >= 2.
    num_token_per_image (sam_dino_siglip, vrwkv): tokens after adaptive pooling; None = the tower's whole grid
        (1024 for the released v7.00 models, where the pool is the identity).
    proj_type: "linear" (v6.0) or "mlp" (v7.00 released); clip takes linear only.
    image_position (v6 prompts): "middle" (sandwich, the released fine-tuned models), "first" or "last".
    clip: CLIPVisionConfig fields; towers: V7TowerConfig as a dict; vrwkv: VRWKVConfig fields.
    image_size (vrwkv): input pixels (square); None = the backbone's construction size.  Any size works: the
        position embedding is resized, and the token count grows with the image.
    """
    version: str = "v6"
    scan: Optional[str] = None
    grid_size: int = -1
    num_token_per_image: Optional[int] = None
    proj_type: str = "linear"
    image_position: str = "middle"
    clip: dict = field(default_factory=lambda: dict(CLIP_CONFIGS[DEFAULT_CLIP]))
    towers: dict = field(default_factory=lambda: V7TowerConfig().to_dict())
    tower: Optional[str] = None
    vrwkv: dict = field(default_factory=lambda: asdict(vrwkv_tower_config()))
    image_size: Optional[int] = None


    def __post_init__(self):
        if self.version not in VISUAL_VERSIONS:
            raise ValueError(f"VisualConfig.version must be one of {VISUAL_VERSIONS}, got {self.version!r}")
        if self.tower is None:
            self.tower = DEFAULT_TOWER[self.version]
        if self.tower not in TOWERS:
            raise ValueError(f"VisualConfig.tower must be one of {TOWERS}, got {self.tower!r}")
        if self.tower != "vrwkv" and self.tower != DEFAULT_TOWER[self.version]:
            raise ValueError(f"VisualConfig: the {self.tower!r} tower belongs to VisualRWKV "
                             f"{'v6' if self.version == 'v7' else 'v7'}, not {self.version}")
        if self.scan is None:
            self.scan = "bidirectional" if self.version == "v6" else "unidirectional"
        check_scan_mode(self.scan)
        if self.image_position not in IMAGE_POSITIONS:
            raise ValueError(f"VisualConfig.image_position must be one of {IMAGE_POSITIONS}")
        if self.proj_type not in ("linear", "mlp"):
            raise ValueError(f"VisualConfig.proj_type must be linear or mlp, got {self.proj_type!r}")
        if self.tower == "clip" and self.proj_type != "linear":
            raise ValueError("VisualRWKV v6 (CLIP tower) has a linear projector")
        if self.num_token_per_image is not None:
            n = int(self.num_token_per_image)
            if n < 1 or math.isqrt(n) ** 2 != n:
                raise ValueError(f"num_token_per_image must be a positive square number, got {n}")
        if int(self.grid_size) < -1:
            raise ValueError(f"VisualConfig.grid_size must be -1, 0, 1 or >= 2, got {self.grid_size}")
        if self.image_size is not None and int(self.image_size) < 1:
            raise ValueError(f"VisualConfig.image_size must be positive, got {self.image_size}")

    def v7_towers(self) -> V7TowerConfig:
        return V7TowerConfig.from_dict(self.towers)

    def vrwkv_tower(self) -> VRWKVConfig:
        return VRWKVConfig(**self.vrwkv)

    @property
    def vrwkv_image_size(self) -> int:
        return int(self.image_size or self.vrwkv["img_size"])

    def tower_grid(self) -> int:
        """Side of the square token grid the tower itself gives (sam_dino_siglip, vrwkv)."""
        if self.tower == "sam_dino_siglip":
            return self.v7_towers().grid
        if self.tower == "vrwkv":
            return -(-self.vrwkv_image_size // int(self.vrwkv["patch_size"]))   # the patch embed pads the edge
        raise ValueError("tower_grid: the clip tower's layout is set by grid_size")

    @property
    def pooled_tokens(self) -> int:
        """Tokens per image after adaptive pooling (sam_dino_siglip, vrwkv)."""
        return int(self.num_token_per_image or self.tower_grid() ** 2)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, s: str) -> "VisualConfig":
        """Parses and checks a stored configuration: a JSON object with known fields of the right types (the
        nested tower dicts are checked when the tower is built).  Raises ValueError naming what is wrong."""
        try:
            d = json.loads(s)
        except (json.JSONDecodeError, RecursionError) as e:
            raise ValueError(f"not JSON: {e}") from None
        if not isinstance(d, dict):
            raise ValueError(f"expected a JSON object, got a {type(d).__name__}")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ValueError(f"unknown fields {unknown}")
        for name, value in d.items():
            want = CONFIG_FIELD_TYPES[name]
            if value is not None and not (isinstance(value, want) and not isinstance(value, bool)):
                raise ValueError(f"field {name!r} is a {type(value).__name__}, expected {want.__name__}")
        return cls(**d)


# The JSON type of every VisualConfig field (None is accepted where the field is Optional).
CONFIG_FIELD_TYPES = {"version": str, "scan": str, "grid_size": int, "num_token_per_image": int, "proj_type": str,
                      "image_position": str, "clip": dict, "towers": dict, "tower": str, "vrwkv": dict,
                      "image_size": int}


def tower_features(vit: nn.Module, vcfg: VisualConfig, pixels) -> Tensor:
    """Tower features after pooling, before the projector, from a stacked tower input."""
    if vcfg.tower == "clip":
        return grid_pool(clip_features(vit, pixels), vcfg.grid_size)
    return adaptive_pool(vit(pixels), vcfg.pooled_tokens)


def project(proj: nn.Module, features: Tensor) -> Tensor:
    return proj(features.to(next(proj.parameters()).dtype))


def is_text_item(item) -> bool:
    """A prompt item is text when it is a list of ints or an integer tensor (else an image)."""
    if isinstance(item, (list, tuple)):
        return all(isinstance(t, numbers.Integral) for t in item)
    return isinstance(item, Tensor) and not item.is_floating_point()


class ImagePromptMixin:
    """``prefill`` of a prompt of token-id chunks and images, shared by every backend (PyTorch
    :class:`VisualRWKV`, the ONNX Runtime backend).  A backend implements
    :class:`vrwkv_edge.protocol.VisionLanguageModel`: besides the language-model methods, ``transforms``,
    ``tokens_per_image``, ``encode_images`` and the two public hooks :meth:`prefill_text` and
    :meth:`prefill_image`, each returning ``(every position's logits or None, last logits [1, V], state)``."""

    _is_text = staticmethod(is_text_item)

    @property
    def visual_version(self) -> str:
        return self.vcfg.version

    @property
    def tokens_per_image(self) -> int:
        return self.image_layout.num_tokens

    def preprocess(self, image) -> Any:
        """One image -> the tower input: a [3, S, S] tensor (clip, vrwkv), or a dict of them (sam_dino_siglip)."""
        img = load_rgb(image)
        out = {k: t(img) for k, t in self.transforms.items()}
        return next(iter(out.values())) if len(out) == 1 else out

    def _stack_pixels(self, images: Sequence) -> Any:
        pix = [p if isinstance(p, (Tensor, dict)) else self.preprocess(p) for p in images]
        dev = self.device
        if len(self.transforms) == 1:
            return torch.stack([p for p in pix]).to(dev)
        return {k: torch.stack([p[k] for p in pix]).to(dev) for k in self.transforms}

    def _embed_item(self, item) -> Tensor:
        if isinstance(item, Tensor) and item.is_floating_point() and item.dim() != 3:
            if item.dim() != 2 or item.shape != (self.tokens_per_image, self.cfg.n_embd):
                raise ValueError(f"precomputed image embeddings must be [{self.tokens_per_image}, "
                                 f"{self.cfg.n_embd}], got {tuple(item.shape)}")
            return item.to(self.device, self.dtype)
        return self.encode_images([item])[0]

    def _image_key(self, item) -> str:
        if isinstance(item, Tensor):          # embeddings [T, C] or preprocessed pixels [3, H, W]
            return "tensor:" + image_hash_tensor(item)
        if isinstance(item, dict):            # preprocessed v7 pixels
            return "pixels:" + ",".join(f"{k}={image_hash_tensor(item[k])}" for k in sorted(item))
        return "img:" + image_hash(load_rgb(item))

    def _item_key(self, item) -> str:
        if self._is_text(item):
            ids = item.tolist() if isinstance(item, Tensor) else list(item)
            return "tok:" + ",".join(map(str, ids))
        return self._image_key(item)

    def _model_key(self) -> str:
        return f"{id(self)}:{self.vcfg.to_json()}"

    @torch.no_grad()
    def prefill(self, prompt: Sequence, state: Optional[State] = None, *, cache: Optional[ImageStateCache] = None,
                all_logits: bool = False, text_mode: str = "chunk",
                chunk_size: Optional[int] = None) -> tuple[Tensor, State]:
        """Runs ``prompt`` (token-id chunks and images, in order) from ``state`` (zeros if None).

        Returns ``(logits, state)``: logits [1, V] after the last item, or with ``all_logits`` [T, V] for every
        position of the prompt (image tokens in canonical order).  ``text_mode``: "chunk" (chunked prefill) or
        "step" (one token at a time; same result).  ``cache``: an :class:`ImageStateCache`; the state right
        after each image is stored under (every item so far, image content hash) and reused when the same
        prefix and image come again (only from a zero start state).
        Images: paths / PIL images / uint8 arrays, preprocessed pixels, or precomputed embeddings [T, C]."""
        if text_mode not in ("chunk", "step"):
            raise ValueError(f"text_mode must be 'chunk' or 'step', got {text_mode!r}")
        items = list(prompt)
        if not items:
            raise ValueError("prefill: the prompt is empty")
        use_cache = cache is not None and state is None and not all_logits
        state = self.state_or_new(state, 1)
        logits_out: list[Tensor] = []
        last = None
        keys: list[str] = []
        start = 0
        if use_cache:                                   # resume from the longest cached image prefix
            items = [it if self._is_text(it) or isinstance(it, (Tensor, dict)) else load_rgb(it) for it in items]
            keys = [self._item_key(it) for it in items]
            image_positions = [n for n, it in enumerate(items) if not self._is_text(it)]
            for n in reversed(image_positions):
                hit = cache.peek(prefix_key(self._model_key(), keys[: n + 1]))
                if hit is not None:
                    last, state = hit
                    start = n + 1
                    break
            if image_positions:
                cache.record(hit=start > 0)
        for n in range(start, len(items)):
            item = items[n]
            if self._is_text(item):
                ids = torch.as_tensor(list(item) if isinstance(item, (list, tuple)) else item, dtype=torch.long)
                ids = ids.reshape(-1).to(self.device)
                if ids.numel() == 0:
                    continue
                every, last, state = self.prefill_text(ids, state, all_logits, text_mode, chunk_size)
            else:
                every, last, state = self.prefill_image(item, state, all_logits, chunk_size)
                if use_cache:
                    cache.put(prefix_key(self._model_key(), keys[: n + 1]), (last, state))
            if all_logits:
                logits_out.append(every)
        if last is None and start == 0:
            raise ValueError("prefill: the prompt holds no tokens and no image")
        if all_logits:
            return torch.cat(logits_out, 0), state
        return last, state


class VisualRWKV(ImagePromptMixin, nn.Module):
    def __init__(self, rwkv: nn.Module, vit: nn.Module, proj: nn.Module, vcfg: VisualConfig):
        super().__init__()
        self.rwkv = rwkv
        self.vit = vit
        self.proj = proj
        self.vcfg = vcfg
        if vcfg.tower == "clip":
            self.transforms = {"clip": clip_transform(int(vcfg.clip["image_size"]))}
        elif vcfg.tower == "vrwkv":
            self.transforms = {"vrwkv": vrwkv_transform(vcfg.vrwkv_image_size)}
        else:
            t = vcfg.v7_towers()
            self.transforms = {"dino": dino_transform(t.dino.img_size), "siglip": siglip_transform(t.siglip.img_size),
                               "sam": sam_transform(t.sam.img_size)}
        self._layout = self._compute_layout()

    # ---- language-model API (delegates to ``self.rwkv``; see vrwkv_edge.protocol) ---------------------------
    @property
    def lm(self):
        return self.rwkv

    @property
    def cfg(self):
        return self.rwkv.cfg

    @property
    def version(self) -> str:
        return self.rwkv.version

    @property
    def dtype(self) -> torch.dtype:
        return self.rwkv.dtype

    @property
    def device(self) -> torch.device:
        return self.rwkv.device

    def new_state(self, batch_size: int = 1) -> State:
        return self.rwkv.new_state(batch_size)

    def state_or_new(self, state: Optional[State], batch_size: int) -> State:
        return self.rwkv.state_or_new(state, batch_size)

    def set_wkv_impl(self, name: str) -> "VisualRWKV":
        self.rwkv.set_wkv_impl(name)
        return self

    def check_state(self, state: State, name: str = "state") -> None:
        self.rwkv.check_state(state, name)

    def forward(self, ids: Optional[Tensor] = None, state: Optional[State] = None, **kw):
        return self.rwkv.forward(ids, state, **kw)

    def step(self, ids: Optional[Tensor] = None, state: Optional[State] = None, **kw):
        return self.rwkv.step(ids, state, **kw)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def info(self) -> dict:
        return {**self.rwkv.info(), "visual": asdict(self.vcfg), "parameters": self.num_parameters(),
                "tokens_per_image": self._layout.num_tokens}

    # ---- images ------------------------------------------------------------------------------------------
    def _compute_layout(self) -> TowerLayout:
        c = self.vcfg
        if c.tower == "clip":
            side = int(c.clip["image_size"]) // int(c.clip["patch_size"])
            n, g = grid_pool_layout(side * side, c.grid_size)
            return TowerLayout(n, g, g, num_extra=1)
        side = math.isqrt(c.pooled_tokens)
        if side > c.tower_grid():
            raise ValueError(f"num_token_per_image {c.pooled_tokens} is more than the tower's "
                             f"{c.tower_grid()}x{c.tower_grid()} token grid")
        return TowerLayout(side * side, side, side, num_extra=0)

    @property
    def image_layout(self) -> TowerLayout:
        """Tokens per image: ``num_patches`` scanned ones on a ``grid_h x grid_w`` grid, then ``num_extra``
        unscanned ones (v6's CLS)."""
        return self._layout

    @torch.no_grad()
    def image_features(self, images: Sequence) -> Tensor:
        """Tower features after pooling, before the projector: [N, tokens, D] (D = 1024 for CLIP L/14, 3200 for
        v7.00's towers, the backbone width for Vision-RWKV).  ``images``: paths / PIL images / arrays, or
        already preprocessed pixels."""
        return self.pixel_features(self._stack_pixels(images))

    def pixel_features(self, pixels) -> Tensor:
        """:meth:`image_features` from a stacked tower input (the traced part of the exported vision graph)."""
        return tower_features(self.vit, self.vcfg, pixels)

    @torch.no_grad()
    def encode_images(self, images: Sequence) -> Tensor:
        """Projected image embeddings [N, tokens_per_image, C], the LM's input for each image (block 0's
        ``ln0`` is applied to them inside the LM, as in training)."""
        if not isinstance(images, (list, tuple)):
            images = [images]
        return self.embed_pixels(self._stack_pixels(images))

    def embed_pixels(self, pixels) -> Tensor:
        """Stacked tower input -> projected embeddings [N, tokens_per_image, C]: tower, pooling, projector
        (what the exported vision graph computes)."""
        return project(self.proj, self.pixel_features(pixels)).to(self.dtype)

    # ---- prompts -----------------------------------------------------------------------------------------
    def image_span(self, start: int) -> ImageSpan:
        L = self._layout
        return ImageSpan(start, L.grid_h, L.grid_w)

    def prefill_text(self, ids: Tensor, state: State, all_logits: bool, text_mode: str,
                  chunk_size: Optional[int]) -> tuple[Optional[Tensor], Tensor, State]:
        if text_mode == "step":
            steps = []
            for t in range(ids.numel()):
                lg, state = self.rwkv.step(ids[t:t + 1], state)
                steps.append(lg)
            return (torch.cat(steps, 0) if all_logits else None), lg, state
        lg, state = self.rwkv.forward(ids[None], state, last_only=not all_logits, chunk_size=chunk_size)
        return (lg[0], lg[0, -1:], state) if all_logits else (None, lg, state)

    def prefill_image(self, item, state: State, all_logits: bool,
                   chunk_size: Optional[int]) -> tuple[Optional[Tensor], Tensor, State]:
        emb = self._embed_item(item)[None]
        hidden, state = scan_prefill(self.rwkv, emb, state, [self.image_span(0)], self.vcfg.scan, chunk_size)
        if all_logits:
            lg = self.rwkv.logits(hidden[0])
            return lg, lg[-1:], state
        return None, self.rwkv.logits(hidden[:, -1]), state

    @torch.no_grad()
    def embed_prompt(self, prompt: Sequence) -> tuple[Tensor, list[ImageSpan]]:
        """The whole prompt as one embedding sequence [1, T, C] and its image spans (training layout)."""
        parts, spans, pos = [], [], 0
        for item in prompt:
            if self._is_text(item):
                ids = torch.as_tensor(list(item) if isinstance(item, (list, tuple)) else item, dtype=torch.long)
                ids = ids.reshape(-1).to(self.device)
                if ids.numel() == 0:
                    continue
                parts.append(self.rwkv.emb(ids))
                pos += ids.numel()
            else:
                e = self._embed_item(item)
                parts.append(e)
                spans.append(self.image_span(pos))
                pos += e.shape[0]
        return torch.cat(parts, 0)[None], spans

    @torch.no_grad()
    def reference_logits(self, prompt: Sequence, chunk_size: Optional[int] = None) -> Tensor:
        """Training-style full-sequence forward of the whole prompt (patch spans permuted per layer exactly as
        training did); logits [T, V].  The reference :meth:`prefill` is tested against."""
        x, spans = self.embed_prompt(prompt)
        return training_style_forward(self.rwkv, x, spans, self.vcfg.scan, chunk_size)[0]


def image_hash_tensor(t: Tensor) -> str:
    h = hashlib.sha256(f"{tuple(t.shape)}:{t.dtype}:".encode())
    h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
