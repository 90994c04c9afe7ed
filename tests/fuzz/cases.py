"""Seeded hostile inputs for every way a user hands the package something: checkpoints (.pth and .safetensors),
a VisualRWKV's stored configuration, images, prompts, sampling flags, CLI arguments, export directories and
question files.  Each case is a command line for ``vrwkv-edge`` plus what a correct answer must look like:

* ``expect="refuse"``: the input is broken for sure; the command must exit 2 with one ``error:`` line;
* ``expect="any"``: the input may or may not be usable (a random mutation can be benign); the command must
  either succeed or refuse cleanly.

Either way the error line must name something the user gave: the file, the key or the argument (``names``).
"""
from __future__ import annotations

import io
import json
import os
import random
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tests.helpers import random_model
from vrwkv_edge.checkpoint import save_checkpoint
from vrwkv_edge.export import export_model
from vrwkv_edge.vision_rwkv import build_vision_rwkv
from vrwkv_edge.visualrwkv import VISUAL_CONFIG_KEY, save_visual_checkpoint, tiny_vrwkv

# Written by the pickled payload if a checkpoint ever runs code: the fuzzer's "code execution" detector.
MARKER_NAME = "CODE_WAS_EXECUTED"
KINDS = ("checkpoint", "visual_config", "image", "prompt", "sampling", "cli", "export_dir", "eval_file")


@dataclass
class Case:
    kind: str
    seed: int
    argv: list[str]
    expect: str = "any"                                # "refuse" or "any"
    names: list[str] = field(default_factory=list)     # an error must mention one of these
    note: str = ""


class CodeExecution:
    """Unpickling this runs a command: a checkpoint must never be loaded that way (weights_only=True)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class Fixtures:
    """Valid inputs the mutations start from, made once per run in ``root``."""

    def __init__(self, root: Path):
        self.root = root
        self.marker = root / MARKER_NAME
        torch.manual_seed(0)
        lm = random_model("x070", n_layer=2, n_embd=64, head_size=32, vocab_size=256, seed=1)
        self.lm_sd = {k: v.clone() for k, v in lm.state_dict().items()}
        self.lm = save_checkpoint(self.lm_sd, root / "lm.pth")
        vlm = tiny_vrwkv("x070", seed=2)
        self.visual = save_visual_checkpoint(vlm, root / "visual.pth")[0]
        self.visual_sd = dict(torch.load(self.visual, weights_only=True))
        vr = build_vision_rwkv("vrwkv_t", num_classes=5)      # a preset's shapes: classify infers the arch
        self.vrwkv = root / "vrwkv.pth"
        torch.save({"state_dict": vr.state_dict()}, self.vrwkv)
        self.image = root / "image.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(self.image)
        self.export = export_model(lm, root / "export", embeds=False, progress=False)
        self.export_files = {p.name: p.read_bytes() for p in self.export.iterdir()}
        other = random_model("x070", n_layer=2, n_embd=64, head_size=32, vocab_size=256, seed=9)
        self.other_export = export_model(other, root / "other_export", embeds=False, progress=False)


def make_case(kind: str, seed: int, fx: Fixtures, work: Path) -> Case:
    rng = random.Random(f"{kind}:{seed}")
    work.mkdir(parents=True, exist_ok=True)
    return GENERATORS[kind](rng, seed, fx, work)


# ---- checkpoints ----------------------------------------------------------------------------------------------
def _flip_bytes(data: bytes, rng: random.Random, n: int) -> bytes:
    b = bytearray(data)
    for _ in range(n):
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)
    return bytes(b)


def _pth_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _weights_region(data: bytes) -> tuple[int, int]:
    """Byte range of the first stored tensor's data inside a torch zip (a flip there must fail the CRC)."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        info = next(i for i in zf.infolist() if "/data/" in i.filename)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    return start, start + info.compress_size


def checkpoint_case(rng: random.Random, seed: int, fx: Fixtures, work: Path) -> Case:
    sd = dict(fx.lm_sd)
    keys = sorted(sd)
    path = work / rng.choice(["m.pth", "m.safetensors", "m.pt"])
    mutation = rng.choice(["rename_key", "far_layer", "drop_key", "non_string_key", "reshape", "int_dtype", "nan",
                           "fp16_overflow", "expanded", "sparse", "meta", "empty_row", "truncate", "flip_weights",
                           "flip_any", "pickle_code", "not_a_dict", "nested", "garbage", "zero_bytes", "directory"])
    expect, extra = "refuse", []
    key = rng.choice(keys)
    if mutation == "rename_key":
        sd[key + rng.choice(["_x", ".y", ""]) + "z"] = sd.pop(key)
    elif mutation == "far_layer":
        sd[f"blocks.{rng.choice([2, 7, 100000, 10 ** 9])}.att.r_k"] = sd.pop("blocks.1.att.r_k")
    elif mutation == "drop_key":
        del sd[key]
    elif mutation == "non_string_key":
        sd[rng.choice([7, (1, 2), None, 3.5])] = torch.zeros(2)
    elif mutation == "reshape":
        sd[key] = sd[key].reshape(-1)[: max(1, sd[key].numel() - rng.randrange(1, 3))].clone()
    elif mutation == "int_dtype":
        sd[key] = torch.zeros(sd[key].shape, dtype=rng.choice([torch.int64, torch.uint8, torch.bool]))
    elif mutation == "nan":
        t = sd[key].clone().reshape(-1)
        t[rng.randrange(t.numel())] = rng.choice([float("nan"), float("inf"), -float("inf")])
        sd[key] = t.reshape(sd[key].shape)
    elif mutation == "fp16_overflow":
        sd[key] = sd[key].clone().fill_(1e6)
        extra = ["--dtype", "fp16"]                   # only `generate` loads in fp16; info and export read fp32
        expect = "any"
    elif mutation == "expanded":
        sd[key] = torch.zeros(1).expand(*sd[key].shape[:-1], 10 ** 9)
    elif mutation == "sparse":
        sd[key] = sd[key].to_sparse() if sd[key].dim() >= 1 else sd[key]
    elif mutation == "meta":
        sd[key] = torch.empty(sd[key].shape, device="meta")
    elif mutation == "empty_row":
        sd["emb.weight" if rng.random() < 0.5 else "head.weight"] = torch.zeros(0, 64)
    if mutation in ("expanded", "sparse", "meta", "non_string_key", "pickle_code", "not_a_dict", "nested") \
            and path.suffix == ".safetensors":
        path = path.with_suffix(".pth")                  # safetensors cannot hold these; test them as .pth
    if mutation == "pickle_code":
        path.write_bytes(_pth_bytes({"emb.weight": CodeExecution(fx.marker)}))
    elif mutation == "not_a_dict":
        path.write_bytes(_pth_bytes(rng.choice([[torch.zeros(2)], torch.zeros(3), 42, "weights"])))
    elif mutation == "nested":
        path.write_bytes(_pth_bytes({"model": {"module": {"state_dict": sd}}, "x": [1, 2]}))
        expect = "any"
    elif mutation == "garbage":
        path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.choice([1, 30, 3000]))))
    elif mutation == "zero_bytes":
        path.write_bytes(b"")
    elif mutation == "directory":
        path.mkdir()
    elif mutation in ("truncate", "flip_weights", "flip_any"):
        if path.suffix == ".safetensors" and mutation == "flip_weights":
            path = path.with_suffix(".pth")
        save_checkpoint(sd, path)
        data = path.read_bytes()
        if mutation == "truncate":
            data = data[: rng.randrange(1, len(data))]
        elif mutation == "flip_weights":
            lo, hi = _weights_region(data)
            i = rng.randrange(lo, hi)
            data = data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1:]
        else:
            data = _flip_bytes(data, rng, rng.choice([1, 4, 64]))
            expect = "any"
        path.write_bytes(data)
    else:
        _save_state_dict(sd, path)
    command = rng.choice([["info", "--model", str(path)],
                          ["generate", "--model", str(path), "--prompt", "The", "--max-new-tokens", "2"] + extra,
                          ["export", "--model", str(path), "--out", str(work / "exported"), "--quiet"]])
    if mutation == "fp16_overflow" and command[0] == "generate" and not key.endswith(("time_decay", "w0")):
        expect = "refuse"                             # fp32 weights beyond fp16's range, loaded as fp16
    return Case("checkpoint", seed, command, expect, [path.name], mutation)


def _save_state_dict(sd: dict, path: Path) -> None:
    """Writes even what ``save_checkpoint`` would refuse (non-string keys, views), as a hostile file would be."""
    if path.suffix == ".safetensors":
        try:
            save_checkpoint(sd, path)
        except Exception:                                # e.g. a dtype safetensors cannot hold: write raw junk
            path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    else:
        path.write_bytes(_pth_bytes(sd))


# ---- a VisualRWKV's stored configuration -----------------------------------------------------------------------
def visual_config_case(rng: random.Random, seed: int, fx: Fixtures, work: Path) -> Case:
    sd = dict(fx.visual_sd)
    cfg = json.loads(bytes(sd[VISUAL_CONFIG_KEY].tolist()).decode())
    mutation = rng.choice(["unknown_field", "list", "two_d", "negative", "wrong_type", "non_utf8", "non_json",
                           "deep", "bad_tower", "huge_size", "float_tensor"])
    payload = None
    if mutation == "unknown_field":
        cfg[rng.choice(["colour", "x", "tower_config"])] = 1
    elif mutation == "list":
        payload = b"[1, 2, 3]"
    elif mutation == "two_d":
        sd[VISUAL_CONFIG_KEY] = sd[VISUAL_CONFIG_KEY].reshape(1, -1)
    elif mutation == "negative":
        target = rng.choice(["grid_size", "num_token_per_image", "image_size", "vrwkv.embed_dims", "vrwkv.depth"])
        if "." in target:
            cfg["vrwkv"][target.split(".")[1]] = -rng.randrange(1, 100)
        else:
            cfg[target] = -rng.randrange(2, 100)
    elif mutation == "wrong_type":
        cfg[rng.choice(list(cfg))] = rng.choice([[1], {"a": 1}, "s", 3.5, True])
    elif mutation == "non_utf8":
        payload = b"\xff\xfe{" + bytes(rng.randrange(256) for _ in range(10))
    elif mutation == "non_json":
        payload = b"{version: v6"
    elif mutation == "deep":
        payload = b"[" * 200000
    elif mutation == "bad_tower":
        cfg["vrwkv"] = {"variant": "vrwkv", "nonsense": 1}
    elif mutation == "huge_size":
        cfg["vrwkv"]["embed_dims"] = 10 ** 12
    elif mutation == "float_tensor":
        sd[VISUAL_CONFIG_KEY] = sd[VISUAL_CONFIG_KEY].float()
    if mutation not in ("two_d", "float_tensor"):
        data = payload if payload is not None else json.dumps(cfg).encode()
        sd[VISUAL_CONFIG_KEY] = torch.tensor(list(data), dtype=torch.uint8)
    path = work / "visual.pth"
    torch.save(sd, path)
    return Case("visual_config", seed, ["chat", "--model", str(path), "--image", str(fx.image), "--prompt", "hi",
                                        "--greedy", "--max-new-tokens", "1"], "refuse", [path.name], mutation)


# ---- images ------------------------------------------------------------------------------------------------------
def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width x height`` and holds one tiny IDAT: what a decompression bomb looks like."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + \
        chunk(b"IEND", b"")


def image_case(rng: random.Random, seed: int, fx: Fixtures, work: Path) -> Case:
    mutation = rng.choice(["thin", "bomb", "garbage", "truncated", "mode", "empty_file", "directory", "missing",
                           "tiny", "wrong_extension"])
    path = work / "img.png"
    expect = "refuse"
    if mutation == "thin":
        w, h = rng.choice([(1, 50000), (50000, 1), (3, 4000), (2, 100)])
        Image.new("L", (w, h)).save(path)
    elif mutation == "bomb":
        path.write_bytes(_png_header_only(rng.choice([60000, 100000, 2 ** 20]), rng.choice([60000, 100000])))
    elif mutation == "garbage":
        path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 2000))))
    elif mutation == "truncated":
        data = fx.image.read_bytes()
        path.write_bytes(data[: rng.randrange(8, len(data) - 1)])
    elif mutation == "mode":
        mode = rng.choice(["RGBA", "LA", "P", "I;16", "1", "CMYK", "F", "I"])
        img = Image.new(mode, (rng.randrange(8, 80), rng.randrange(8, 80)))
        path = work / ("img.tiff" if mode in ("F", "CMYK", "I;16", "I") else "img.png")
        img.save(path)
        expect = "any"
    elif mutation == "empty_file":
        path.write_bytes(b"")
    elif mutation == "directory":
        path.mkdir()
    elif mutation == "missing":
        path = work / "no_such_image.png"
    elif mutation == "tiny":
        Image.new("RGB", (1, 1)).save(path)
        expect = "any"
    elif mutation == "wrong_extension":
        path = work / "img.jpg"
        Image.new("RGB", (20, 20)).save(path, format="PNG")
        expect = "any"
    command = rng.choice([["classify", "--model", str(fx.vrwkv), "--image", str(path)],
                          ["chat", "--model", str(fx.visual), "--image", str(path), "--prompt", "what?", "--greedy",
                           "--max-new-tokens", "1"]])
    return Case("image", seed, command, expect, [path.name], mutation)


# ---- prompts and sampling ---------------------------------------------------------------------------------------
def prompt_case(rng: random.Random, seed: int, fx: Fixtures, work: Path) -> Case:
    raw = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40)))
    prompt = rng.choice([os.fsdecode(raw), "", " ", "\x00", "a" * rng.randrange(1, 3000), "\n\n", "é✓😀"])
    chat = rng.random() < 0.5
    # generate conditions on any non-empty text (a space is a token); a chat question must say something
    broken = _not_utf8(prompt) or not (prompt.strip() if chat else prompt)
    command = (["chat", "--model", str(fx.visual), "--image", str(fx.image), "--greedy", "--max-new-tokens", "1",
                "--prompt", prompt] if chat else
               ["generate", "--model", str(fx.lm), "--max-new-tokens", "2", "--prompt", prompt])
    return Case("prompt", seed, command, "refuse" if broken else "any", ["--prompt"], repr(prompt[:20]))


def _not_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


SAMPLING_VALUES = {
    "--temperature": ["0", "1e-300", "0.01", "0.03", "-1", "nan", "inf", "1e308", "x"],
    "--top-p": ["-1", "2", "nan", "0", "1", "1e-30"],
    "--top-k": ["-5", "0", "1", "1000000000", "1.5"],
    "--presence-penalty": ["1e308", "-1e308", "nan", "0.5", "-inf"],
    "--frequency-penalty": ["-1e308", "1e308", "inf", "2"],
    "--penalty-decay": ["2", "-1", "nan", "1", "0"],
    "--max-new-tokens": ["-1", "0", "3", "abc"],
    "--seed": ["99999999999999999999999", "-5", "0", "1.5"],
    "--stop-token": ["99999999999", "-1", "0"],
}


def sampling_case(rng: random.Random, seed: int, fx: Fixtures, work: Path) -> Case:
    flags = rng.sample(sorted(SAMPLING_VALUES), rng.randrange(1, 4))
    argv = ["generate", "--model", str(fx.lm), "--prompt", "The", "--max-new-tokens", "3"]
    for flag in flags:
        argv += [flag, rng.choice(SAMPLING_VALUES[flag])]
    return Case("sampling", seed, argv, "any", flags, " ".join(argv[7:]))


# ---- CLI arguments ------------------------------------------------------------------------------------------------
def cli_case(rng: random.Random, seed: int, fx: Fixtures, work: Path) -> Case:
    a_dir = work / "a_dir"
    a_dir.mkdir(exist_ok=True)
    missing = str(work / "missing.pth")
    templates = [
        (["generate", "--model", str(fx.lm), "--prompt", "x", "--tokenizer", str(a_dir)], ["a_dir", "--tokenizer"]),
        (["generate", "--model", str(fx.lm), "--prompt", "x", "--tokenizer", missing], ["missing", "--tokenizer"]),
        (["generate", "--model", str(a_dir), "--prompt", "x"], ["a_dir"]),
        (["info", "--model", missing], ["missing"]),
        (["info", str(fx.lm), "--model", missing], ["info", "--model"]),
        (["eval", "--model", str(fx.visual), "--question-file", str(a_dir), "--answers-file", str(work / "a.jsonl")],
         ["a_dir", "--question-file"]),
        (["chat", "--model", str(fx.lm), "--image", str(fx.image), "--prompt", "x"], ["lm.pth"]),
        (["classify", "--model", str(fx.lm), "--image", str(fx.image)], ["lm.pth"]),
        (["classify", "--model", str(fx.vrwkv), "--image", str(fx.image), "--labels", str(a_dir)], ["a_dir"]),
        (["validate", str(a_dir), "--model", str(fx.lm)], ["a_dir"]),
        (["validate", str(fx.export), "--model", str(fx.lm), "--prompt-ids", "1,9999999"], ["9999999", "token"]),
        (["validate", str(fx.export), "--model", str(fx.lm), "--prompt-ids", "a,b"], ["--prompt-ids"]),
        (["export", "--model", str(fx.lm), "--out", str(fx.lm)], ["lm.pth"]),
        (["assemble", "--lm", str(fx.visual), "--tower", str(fx.vrwkv), "--out", str(work / "o.pth")], ["visual.pth"]),
        (["generate", "--model", str(fx.lm), "--prompt", "x", "--dtype", "fp8"], ["--dtype"]),
    ]
    argv, names = rng.choice(templates)
    return Case("cli", seed, list(argv), "refuse", names, argv[0])


# ---- export directories ------------------------------------------------------------------------------------------
def export_dir_case(rng: random.Random, seed: int, fx: Fixtures, work: Path) -> Case:
    d = work / "export"
    d.mkdir(exist_ok=True)
    for name, data in fx.export_files.items():
        (d / name).write_bytes(data)
    meta = json.loads((d / "metadata.json").read_text())
    mutation = rng.choice(["delete", "truncate_graph", "flip_graph", "n_layer_huge", "deep_json", "wrong_type",
                           "swap_graph", "not_json", "non_utf8", "drop_key", "negative"])
    expect = "refuse"
    if mutation == "delete":
        (d / rng.choice(sorted(fx.export_files))).unlink()
    elif mutation == "truncate_graph":
        g = d / "decode.onnx"
        g.write_bytes(g.read_bytes()[: rng.randrange(1, g.stat().st_size)])
    elif mutation == "flip_graph":
        g = d / rng.choice(["decode.onnx", "prefill.onnx"])
        g.write_bytes(_flip_bytes(g.read_bytes(), rng, rng.choice([1, 16])))
    elif mutation == "n_layer_huge":
        meta["model"]["n_layer"] = rng.choice([10 ** 8, 10 ** 18, 2 ** 63])
    elif mutation == "deep_json":
        (d / "metadata.json").write_text("[" * 100000)
    elif mutation == "wrong_type":
        meta[rng.choice(["opset", "dtype", "graphs", "state", "model", "chunk_size"])] = rng.choice([[], "x", 1.5, None])
    elif mutation == "swap_graph":
        name = rng.choice(["decode.onnx", "prefill.onnx"])
        other = (fx.other_export / name).read_bytes()
        (d / name).write_bytes(other)
        meta["files"][name]["bytes"] = len(other)           # the size alone cannot tell the swap
    elif mutation == "not_json":
        (d / "metadata.json").write_text("{\"format\": ")
    elif mutation == "non_utf8":
        (d / "metadata.json").write_bytes(b"\xff\xfe\x00{")
    elif mutation == "drop_key":
        meta.pop(rng.choice(sorted(meta)))
    elif mutation == "negative":
        meta["model"][rng.choice(["n_embd", "vocab_size", "head_size"])] = -rng.randrange(1, 10)
    if mutation in ("n_layer_huge", "wrong_type", "swap_graph", "drop_key", "negative"):
        (d / "metadata.json").write_text(json.dumps(meta))
    return Case("export_dir", seed, ["validate", str(d), "--model", str(fx.lm), "--n-tokens", "2"], expect,
                [d.name, "metadata.json", ".onnx"], mutation)


# ---- eval question files -------------------------------------------------------------------------------------------
def eval_file_case(rng: random.Random, seed: int, fx: Fixtures, work: Path) -> Case:
    path = work / rng.choice(["q.jsonl", "q.json"])
    good = {"question_id": 1, "image": fx.image.name, "text": "what is it?"}
    mutation = rng.choice(["image_int", "image_list_int", "not_object", "no_id", "no_text", "bad_json", "non_utf8",
                           "deep", "text_int", "empty_image"])
    q = dict(good)
    lines = None
    if mutation == "image_int":
        q["image"] = rng.choice([5, 3.5, True, {"a": 1}])
    elif mutation == "image_list_int":
        q["image"] = [fx.image.name, 7]
    elif mutation == "not_object":
        q = rng.choice([[1, 2], "question", 4])
    elif mutation == "no_id":
        q.pop("question_id")
    elif mutation == "no_text":
        q.pop("text")
    elif mutation == "text_int":
        q["text"] = 12
    elif mutation == "empty_image":
        q["image"] = ""
    elif mutation == "bad_json":
        lines = b'{"question_id": 1, "text": '
    elif mutation == "non_utf8":
        lines = b'{"question_id": 1, "text": "\xff\xfe"}\n'
    elif mutation == "deep":
        lines = b"[" * 100000
    if lines is None:
        lines = (json.dumps([q]) if path.suffix == ".json" else json.dumps(q) + "\n").encode()
    path.write_bytes(lines)
    return Case("eval_file", seed, ["eval", "--model", str(fx.visual), "--question-file", str(path), "--answers-file",
                                    str(work / "answers.jsonl"), "--image-folder", str(fx.root), "--no-progress",
                                    "--max-new-tokens", "1"], "refuse", [path.name], mutation)


GENERATORS = {"checkpoint": checkpoint_case, "visual_config": visual_config_case, "image": image_case,
              "prompt": prompt_case, "sampling": sampling_case, "cli": cli_case, "export_dir": export_dir_case,
              "eval_file": eval_file_case}
