"""The C++ World tokenizer (vrwkv-tokenize) against the published vectors and the Python tokenizer."""
from __future__ import annotations

import json
import random
import subprocess

import pytest

from vrwkv_edge.tokenizer import load_tokenizer

from .conftest import TESTDATA

VECTORS = TESTDATA / "world-tokenizer" / "world_tokenizer_vectors.json"
VOCAB = TESTDATA / "world-tokenizer" / "rwkv_vocab_v20230424.txt"


def _tool(cpp_build, vocab, mode: str, lines: list[str]) -> list[str]:
    r = subprocess.run([str(cpp_build["tokenize"]), str(vocab), mode], input="".join(l + "\n" for l in lines),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = r.stdout.split("\n")
    assert len(out) == len(lines) + 1 and out[-1] == ""
    return out[:-1]


def _ids(line: str) -> list[int]:
    return [int(x) for x in line.split()]


def test_every_published_vector(cpp_build):
    d = json.loads(VECTORS.read_text(encoding="utf-8"))
    text = [v for k in ("published_vectors", "generated_vectors", "random_vectors") for v in d[k]]
    assert len(text) > 100
    got = _tool(cpp_build, VOCAB, "encode", [v["text"].encode().hex() for v in text])
    assert [_ids(g) for g in got] == [v["ids"] for v in text]
    raw = d["raw_byte_vectors"]
    got = _tool(cpp_build, VOCAB, "encode-bytes", [v["bytes_hex"] for v in raw])
    assert [_ids(g) for g in got] == [v["ids"] for v in raw]
    dec = _tool(cpp_build, VOCAB, "decode", [" ".join(map(str, v["ids"])) for v in text + raw])
    assert dec == [v["text"].encode().hex() for v in text] + [v["bytes_hex"] for v in raw]


def _random_strings(n: int, seed: int) -> list[str]:
    """Mixed scripts, whitespace runs, vocabulary fragments glued together (long matches across word
    boundaries), emoji and rare planes."""
    rng = random.Random(seed)
    tok = load_tokenizer(VOCAB)
    pieces = [tok.id_to_token(i) for i in rng.sample(range(1, len(tok)), 4000)]
    pieces = [p.decode("utf-8") for p in pieces if _utf8(p)]
    alphabets = [" \t\n\r", "abcdefghijklmnopqrstuvwxyzABCXYZ0123456789", ".,;:!?'\"()[]{}<>-_=+*/\\|@#$%^&~`",
                 "абвгдежзийклмнопрстуфхцчшщ", "的一是不了人我在有他这中大来上国个到说们为子和你", "ひらがなカタカナ",
                 "αβγδεζηθ", "😀🚀👍🏽‍♀️", "\u200b\ufeff\u0301\u00a0", "".join(map(chr, range(0x80, 0x100)))]
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(0, 12)):
            r = rng.random()
            if r < 0.45:
                parts.append(rng.choice(pieces))
            elif r < 0.9:
                a = rng.choice(alphabets)
                parts.append("".join(rng.choice(a) for _ in range(rng.randint(1, 6))))
            else:
                parts.append(chr(rng.choice([rng.randint(0x20, 0xD7FF), rng.randint(0xE000, 0x10FFFF)])))
        out.append("".join(parts))
    return out


def _utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def test_3000_random_strings_match_python(cpp_build):
    tok = load_tokenizer(VOCAB)
    texts = _random_strings(3000, seed=12)
    want = [tok.encode(t) for t in texts]
    got = [_ids(g) for g in _tool(cpp_build, VOCAB, "encode", [t.encode().hex() for t in texts])]
    bad = [(t, g, w) for t, g, w in zip(texts, got, want) if g != w]
    assert not bad, f"{len(bad)} mismatches, first: {bad[0]!r}"
    # decode: the ids of each string, and random id sequences (bytes need not be valid UTF-8)
    rng = random.Random(5)
    seqs = want + [[rng.randrange(0, len(tok)) for _ in range(rng.randint(0, 20))] for _ in range(500)]
    dec = _tool(cpp_build, VOCAB, "decode", [" ".join(map(str, s)) for s in seqs])
    assert dec == [tok.decode_bytes(s).hex() for s in seqs]


def test_invalid_input_and_bad_vocabularies(cpp_build, tmp_path):
    out = _tool(cpp_build, VOCAB, "encode", ["c328", "eda080", "f4908080", "e282", "68656c6c6f"])
    assert [o.startswith("! the text is not valid UTF-8") for o in out] == [True, True, True, True, False]
    assert "byte offset 0" in out[0] and _ids(out[4]) == load_tokenizer(VOCAB).encode("hello")
    assert _tool(cpp_build, VOCAB, "decode", ["1 65530"])[0].startswith("! token id 65530 at position 1 is out of range")
    assert _tool(cpp_build, "bytes", "encode-bytes", ["00ff41"]) == ["0 255 65"]
    bad = tmp_path / "vocab.txt"
    bad.write_text("1 '\\x00' 1\n2 'ab 2\n", encoding="utf-8")
    r = subprocess.run([str(cpp_build["tokenize"]), str(bad), "encode"], input="", capture_output=True, text=True)
    assert r.returncode == 2 and f"{bad}:2: bad vocabulary line" in r.stderr
    r = subprocess.run([str(cpp_build["tokenize"]), str(tmp_path / "none.txt"), "encode"], input="",
                       capture_output=True, text=True)
    assert r.returncode == 2 and "not found" in r.stderr
