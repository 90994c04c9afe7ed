"""LLaVA-format training data: records -> token ids, targets and images, in the exact VisualRWKV templates.

A data file is a JSON list of records ``{"id": str, "image": "rel/path.png" | [paths...] (optional),
"conversations": [{"from": "human" | "gpt", "value": str}, ...]}`` (spec §7.3); images are read from
``image_folder / image``.  Each record is rendered with :mod:`vrwkv_edge.visualrwkv.prompts` (v6
``image_position`` / v7 images-first), every turn tokenized on its own and split on ``<image>``, each image
expanded to the model's ``tokens_per_image`` positions, and labelled as the original ``mask_targets``: human
turns, images and each answer's leading ``"Assistant:"`` tokens are not targets; the rest of every gpt turn
(answer + the ``"\\n\\n"`` stop token) is.

Every record is checked when the dataset is built, before any training step: a missing or unreadable image, a
malformed conversation (not a list of human/gpt turns, ``<image>`` tags that do not match the images, no answer
to learn) or a sample longer than ``ctx_len`` raises :class:`DataError` naming the file, the record's index and
id; with ``on_bad_sample="skip"`` such records are left out and counted per reason instead
(:attr:`TrainingDataset.skipped`).

Order: :func:`batch_indices` gives the records of step ``s`` for one rank, a pure function of (seed, step), so a
resumed run continues at exactly the sample where it stopped.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from PIL import Image

from ..fileio import PathLike
from ..visualrwkv.prompts import IMAGE_TAG, process_v6, process_v7, render_turn
from ..visualrwkv.scan import ImageSpan
from ..visualrwkv.towers import TowerLayout
from ..visualrwkv.training_forward import IGNORE_INDEX, IMAGE_POSITION, TrainingBatch

BAD_SAMPLE_POLICIES = ("error", "skip")
ANSWER_PREFIX = "Assistant:"          # masked at the start of every gpt turn, as the original mask_targets


class DataError(ValueError):
    """A training record that cannot be used; the message names the file, the record index and its id."""


@dataclass
class Sample:
    ids: list              # input ids with IMAGE_POSITION at image positions
    labels: list           # target at each position or IGNORE_INDEX
    images: list           # image paths, in prompt order
    spans: list            # ImageSpan per image
    record: int            # index in the data file
    record_id: str


def _record_id(rec, index: int) -> str:
    return str(rec.get("id", f"#{index}")) if isinstance(rec, dict) else f"#{index}"


def _image_list(rec: dict) -> list:
    img = rec.get("image")
    if img is None:
        return []
    if isinstance(img, str):
        return [img]
    if isinstance(img, list) and all(isinstance(p, str) for p in img):
        return list(img)
    raise ValueError(f"'image' must be a path or a list of paths, got {type(img).__name__}")


def encode_record(rec, tokenizer, version: str, image_position: str, layout: TowerLayout) -> tuple:
    """(ids, labels, image paths, spans) of one record; raises ValueError saying what is malformed."""
    if not isinstance(rec, dict):
        raise ValueError(f"a record must be a JSON object, got {type(rec).__name__}")
    conv = rec.get("conversations")
    if not isinstance(conv, list) or not conv:
        raise ValueError("'conversations' must be a non-empty list of turns")
    images = _image_list(rec)
    turns = process_v6(conv, image_position) if version == "v6" else process_v7(conv, len(images))
    if version == "v6" and len(images) > 1:
        raise ValueError("VisualRWKV v6 takes one image per conversation")
    n_tags = sum(t["value"].count(IMAGE_TAG) for t in turns)
    if n_tags != len(images):
        raise ValueError(f"the conversation holds {n_tags} <image> tag(s) but the record names {len(images)} "
                         f"image(s)")
    n_prefix = len(tokenizer.encode(ANSWER_PREFIX))
    ids: list = []
    labels: list = []
    spans: list = []
    has_target = False
    for t in turns:
        is_answer = t["from"] == "gpt"
        if is_answer and IMAGE_TAG in t["value"]:
            raise ValueError("an <image> tag in a gpt turn")
        if is_answer and not t["value"]:
            raise ValueError("an empty gpt turn (nothing to learn; drop it or fill it)")
        turn_ids: list = []
        for j, piece in enumerate(render_turn(t).split(IMAGE_TAG)):
            if j:
                spans.append(ImageSpan(len(ids) + len(turn_ids), layout.grid_h, layout.grid_w))
                turn_ids += [IMAGE_POSITION] * layout.num_tokens
            turn_ids += tokenizer.encode(piece)
        if is_answer:
            turn_labels = [IGNORE_INDEX] * n_prefix + turn_ids[n_prefix:]
            has_target = has_target or len(turn_ids) > n_prefix
        else:
            turn_labels = [IGNORE_INDEX] * len(turn_ids)
        ids += turn_ids
        labels += turn_labels
    if not has_target:
        raise ValueError("no gpt turn with an answer: nothing to learn")
    return ids, labels, images, spans


def check_image(path: Path) -> Optional[str]:
    """Why ``path`` cannot be read as an image, or None (reads the header only)."""
    if not path.is_file():
        return "missing image"
    try:
        with Image.open(path) as im:
            im.size
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        return f"unreadable image ({e})"
    return None


class TrainingDataset:
    """The usable records of a LLaVA-format JSON file, tokenized and checked.

    ``preprocess``: image path -> tower input tensor (``VisualRWKV.preprocess``); ``layout``: the model's
    ``image_layout``; ``on_bad_sample``: "error" (raise :class:`DataError`) or "skip" (count in ``skipped``)."""

    def __init__(self, path: PathLike, image_folder: Optional[PathLike], tokenizer, version: str,
                 layout: TowerLayout, preprocess: Callable, ctx_len: int, image_position: str = "middle",
                 on_bad_sample: str = "error"):
        if on_bad_sample not in BAD_SAMPLE_POLICIES:
            raise ValueError(f"on_bad_sample must be one of {BAD_SAMPLE_POLICIES}, got {on_bad_sample!r}")
        self.path = Path(path)
        self.image_folder = Path(image_folder) if image_folder is not None else self.path.parent
        self.preprocess = preprocess
        self.ctx_len = int(ctx_len)
        self.skipped: Counter = Counter()
        try:
            records = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"{self.path}: data file not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"{self.path}: not a JSON file: {e}") from None
        if not isinstance(records, list):
            raise DataError(f"{self.path}: expected a JSON list of LLaVA records, got a {type(records).__name__}")
        self.samples: list[Sample] = []
        for index, rec in enumerate(records):
            where = f"{self.path}: record {index} (id {_record_id(rec, index)!r})"
            try:
                ids, labels, images, spans = encode_record(rec, tokenizer, version, image_position, layout)
            except ValueError as e:
                self._bad(where, "malformed conversation", str(e), on_bad_sample)
                continue
            if len(ids) > self.ctx_len:
                self._bad(where, "too long", f"{len(ids)} positions (text + image tokens) > ctx_len "
                          f"{self.ctx_len}", on_bad_sample)
                continue
            paths = [self.image_folder / p for p in images]
            problem = next(((p, why) for p in paths if (why := check_image(p)) is not None), None)
            if problem is not None:
                self._bad(where, problem[1].split(" (")[0], f"{problem[1]}: {problem[0]}", on_bad_sample)
                continue
            self.samples.append(Sample(ids, labels, paths, spans, index, _record_id(rec, index)))
        if not self.samples:
            raise DataError(f"{self.path}: no usable records (skipped: {dict(self.skipped) or 'none'})")

    def _bad(self, where: str, reason: str, detail: str, policy: str) -> None:
        if policy == "error":
            raise DataError(f"{where}: {detail} (set on_bad_sample: skip to leave such records out)")
        self.skipped[reason] += 1

    def __len__(self) -> int:
        return len(self.samples)

    def collate(self, indices: Sequence[int]) -> TrainingBatch:
        """The samples at ``indices`` as one right-padded :class:`TrainingBatch`."""
        samples = [self.samples[i] for i in indices]
        T = max(len(s.ids) for s in samples)
        ids = torch.zeros(len(samples), T, dtype=torch.long)
        labels = torch.full((len(samples), T), IGNORE_INDEX, dtype=torch.long)
        pixels = []
        for b, s in enumerate(samples):
            ids[b, : len(s.ids)] = torch.tensor(s.ids)
            labels[b, : len(s.labels)] = torch.tensor(s.labels)
            for p in s.images:
                try:
                    pixels.append(self.preprocess(p))
                except (OSError, ValueError) as e:
                    raise DataError(f"{self.path}: record {s.record} (id {s.record_id!r}): cannot read image "
                                    f"{p}: {e}") from None
        return TrainingBatch(ids, labels, torch.stack(pixels) if pixels else None, [s.spans for s in samples])


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def batch_indices(n: int, step: int, global_batch: int, seed: int, rank: int = 0, world_size: int = 1) -> list:
    """Record indices of optimizer step ``step`` for ``rank``: epoch ``e`` visits a seeded permutation in
    consecutive global batches (the last partial batch is dropped, as the original DataLoader's drop_last);
    rank r takes the r-th of the ``world_size`` equal slices of the global batch."""
    per_epoch = n // global_batch
    if per_epoch < 1:
        raise ValueError(f"the data has {n} usable records, fewer than one global batch of {global_batch}")
    epoch, j = divmod(step, per_epoch)
    micro = global_batch // world_size
    start = j * global_batch + rank * micro
    return epoch_permutation(n, seed, epoch)[start:start + micro].tolist()
