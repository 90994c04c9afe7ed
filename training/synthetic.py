"""The synthetic visual question-answering task the embedded default model is trained on.

Each image is a 64 px canvas divided into a 2x2 grid of cells; 1 to 4 cells hold one shape each, with a shape
(circle, square, triangle), a colour (six), a size (small, large) and a small random offset inside its cell.
Questions, all answered by one short word, are asked only where the answer is well defined:

* counts: "How many shapes are there?", "How many red shapes are there?", "How many circles are there?";
* colour: "What color is the circle?" (exactly one circle);
* shape: "What shape is the red object?" (exactly one red shape);
* position: "Where is the blue square?" -> "top left" ... (exactly one such shape);
* size: "Is the triangle small or large?" (exactly one triangle);
* presence: "Is there a green circle?" -> "yes" / "no".

Conversations are LLaVA-format records (``{"id", "image", "conversations"}``) whose first human turn carries the
``<image>`` tag; training conversations hold 1 to 3 question/answer turns about one image, validation and test
records one question each.  Everything derives from a seed, and the three splits use disjoint image seeds, so a
generated directory is reproducible and its splits never share an image.

    python -m vrwkv_edge.training.synthetic OUT_DIR --train 20000 --val 300 --test 600 --seed 0
"""
from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from PIL import Image, ImageDraw

from ..fileio import atomic_write, write_json

IMAGE_SIZE = 64
SHAPES = ("circle", "square", "triangle")
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles"}
COLORS = {"red": (220, 30, 30), "green": (30, 170, 50), "blue": (40, 70, 220), "yellow": (235, 200, 20),
          "purple": (140, 50, 180), "orange": (245, 130, 20)}
SIZES = {"small": 9, "large": 13}                   # half the shape's extent in pixels
CELLS = {(0, 0): "top left", (0, 1): "top right", (1, 0): "bottom left", (1, 1): "bottom right"}
NUMBERS = ("zero", "one", "two", "three", "four")
SPLIT_SEED_OFFSET = {"train": 0, "val": 10_000_000, "test": 20_000_000}    # disjoint image seeds per split
MAX_TURNS = {"train": 3, "val": 1, "test": 1}


@dataclass(frozen=True)
class Shape:
    kind: str
    color: str
    size: str
    cell: tuple


def random_scene(rng: random.Random) -> list[Shape]:
    cells = rng.sample(sorted(CELLS), rng.randint(1, 4))
    return [Shape(rng.choice(SHAPES), rng.choice(sorted(COLORS)), rng.choice(sorted(SIZES)), c) for c in cells]


def draw_scene(shapes: list[Shape], rng: random.Random) -> Image.Image:
    """A light, slightly noisy background with each shape drawn in its cell (centre jittered by up to 3 px)."""
    shade = rng.randint(225, 255)
    img = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (shade, shade, shade))
    d = ImageDraw.Draw(img)
    cell = IMAGE_SIZE // 2
    for s in shapes:
        r = SIZES[s.size]
        cy = s.cell[0] * cell + cell // 2 + rng.randint(-3, 3)
        cx = s.cell[1] * cell + cell // 2 + rng.randint(-3, 3)
        color = tuple(max(0, min(255, c + rng.randint(-15, 15))) for c in COLORS[s.color])
        if s.kind == "circle":
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
        elif s.kind == "square":
            d.rectangle([cx - r + 1, cy - r + 1, cx + r - 1, cy + r - 1], fill=color)
        else:
            d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=color)
    return img


def _unique(shapes, **match) -> Optional[Shape]:
    hits = [s for s in shapes if all(getattr(s, k) == v for k, v in match.items())]
    return hits[0] if len(hits) == 1 else None


def questions(shapes: list[Shape], rng: random.Random) -> list[tuple[str, str]]:
    """Every well-defined (question, answer) of one kind per question family, in a random order."""
    qa = [("How many shapes are there?", NUMBERS[len(shapes)])]
    color = rng.choice(sorted(COLORS))
    qa.append((f"How many {color} shapes are there?", NUMBERS[sum(s.color == color for s in shapes)]))
    kind = rng.choice(SHAPES)
    qa.append((f"How many {PLURAL[kind]} are there?", NUMBERS[sum(s.kind == kind for s in shapes)]))
    target = rng.choice(shapes)
    if _unique(shapes, kind=target.kind):
        qa.append((f"What color is the {target.kind}?", target.color))
        qa.append((f"Is the {target.kind} small or large?", target.size))
    if _unique(shapes, color=target.color):
        qa.append((f"What shape is the {target.color} object?", target.kind))
    if _unique(shapes, kind=target.kind, color=target.color):
        qa.append((f"Where is the {target.color} {target.kind}?", CELLS[target.cell]))
    probe_kind, probe_color = rng.choice(SHAPES), rng.choice(sorted(COLORS))
    if rng.random() < 0.5:                       # half the presence questions ask about a shape that is there
        probe_kind, probe_color = target.kind, target.color
    present = any(s.kind == probe_kind and s.color == probe_color for s in shapes)
    qa.append((f"Is there a {probe_color} {probe_kind}?", "yes" if present else "no"))
    rng.shuffle(qa)
    return qa


def make_split(out_dir: Path, split: str, count: int, seed: int) -> Path:
    """Writes ``count`` images under ``out_dir/images/{split}`` and the records to ``out_dir/{split}.json``."""
    records = []
    image_dir = out_dir / "images" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        rng = random.Random(seed * 100_000_003 + SPLIT_SEED_OFFSET[split] + n)
        shapes = random_scene(rng)
        name = f"images/{split}/{n:06d}.png"
        with atomic_write(out_dir / name, suffix=".png") as tmp:
            draw_scene(shapes, rng).save(tmp, format="PNG")
        qa = questions(shapes, rng)[: rng.randint(1, MAX_TURNS[split])]
        turns = []
        for i, (q, a) in enumerate(qa):
            turns.append({"from": "human", "value": ("<image>\n" if i == 0 else "") + q})
            turns.append({"from": "gpt", "value": a})
        records.append({"id": f"{split}-{n:06d}", "image": name, "conversations": turns,
                        "scene": [vars(s) | {"cell": list(s.cell)} for s in shapes]})
    path = out_dir / f"{split}.json"
    write_json(path, records)
    return path


def generate(out_dir, train: int, val: int, test: int, seed: int = 0) -> dict:
    """All three splits (and a ``manifest.json`` saying how they were made); returns the manifest."""
    out_dir = Path(out_dir)
    manifest = {"task": "vrwkv_edge synthetic shapes VQA", "seed": seed, "image_size": IMAGE_SIZE,
                "splits": {}}
    for split, count in (("train", train), ("val", val), ("test", test)):
        make_split(out_dir, split, count, seed)
        manifest["splits"][split] = {"file": f"{split}.json", "records": count}
    write_json(out_dir / "manifest.json", manifest)
    return manifest


def ensure_generated(out_dir, train: int, val: int, test: int, seed: int = 0) -> bool:
    """Generates the splits unless ``out_dir/manifest.json`` already describes exactly these; True if it did."""
    out_dir = Path(out_dir)
    manifest = out_dir / "manifest.json"
    if manifest.is_file():
        try:
            m = json.loads(manifest.read_text(encoding="utf-8"))
            have = {k: v["records"] for k, v in m["splits"].items()}
            if m.get("seed") == seed and have == {"train": train, "val": val, "test": test}:
                return False
        except (ValueError, KeyError, TypeError):
            pass
    generate(out_dir, train, val, test, seed)
    return True


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir", type=Path)
    p.add_argument("--train", type=int, default=20000)
    p.add_argument("--val", type=int, default=300)
    p.add_argument("--test", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    print(json.dumps(generate(a.out_dir, a.train, a.val, a.test, a.seed), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
