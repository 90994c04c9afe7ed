"""Tests for vrwkv_edge.tokenizer (RWKV World tokenizer).

Vectors: ../shared/testdata/world-tokenizer/world_tokenizer_vectors.json beside the repository root.
Reference: the ``rwkv`` package's TRIE_TOKENIZER (rwkv==0.8.32) with the vocabulary its wheel ships.
"""
from __future__ import annotations

import gc
import json
import random
from pathlib import Path

import pytest

from tests.helpers import TESTDATA, require_extra  # noqa: E402
from vrwkv_edge import tokenizer as tokmod
from vrwkv_edge.tokenizer import DOUBLE_NEWLINE, END_OF_TEXT, WorldTokenizer, load_tokenizer

VECTORS_PATH = TESTDATA / "world-tokenizer" / "world_tokenizer_vectors.json"


def _load_vectors() -> dict:
    if not VECTORS_PATH.is_file():
        pytest.fail(f"tokenizer vectors not found at {VECTORS_PATH}: ../shared/testdata must sit beside the repo")
    with open(VECTORS_PATH, encoding="utf-8") as f:
        return json.load(f)


VECTORS = _load_vectors() if VECTORS_PATH.is_file() else {}
TEXT_VECTORS = [
    pytest.param(v["text"], v["ids"], id=f"{group}-{k}")
    for group in ("published_vectors", "generated_vectors", "random_vectors")
    for k, v in enumerate(VECTORS.get(group, []))
]
RAW_VECTORS = [
    pytest.param(bytes.fromhex(v["bytes_hex"]), v["ids"], id=f"raw-{k}")
    for k, v in enumerate(VECTORS.get("raw_byte_vectors", []))
]


@pytest.fixture(scope="module")
def tok() -> WorldTokenizer:
    return load_tokenizer()


@pytest.fixture(scope="module")
def ref():
    require_extra("reference")
    import rwkv
    import rwkv.rwkv_tokenizer as mod

    # Its trie is ~116k objects holding 256-slot lists: every full collection would walk all of them (~0.5 s),
    # so build it with the collector off and keep it out of collections while this module's tests run.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        ref = mod.TRIE_TOKENIZER(str(Path(rwkv.__file__).parent / "rwkv_vocab_v20230424.txt"))
        gc.freeze()
    finally:
        if gc_was_enabled:
            gc.enable()
    yield ref
    gc.unfreeze()


# ----------------------------------------------------------------------------------------------- vectors
def test_vector_file_has_every_group():
    vec = _load_vectors()
    for group in ("published_vectors", "generated_vectors", "raw_byte_vectors", "random_vectors"):
        assert vec[group], group
    assert len(TEXT_VECTORS) == sum(len(vec[g]) for g in ("published_vectors", "generated_vectors", "random_vectors"))


@pytest.mark.parametrize("text,ids", TEXT_VECTORS)
def test_text_vectors_exact(tok, text, ids):
    assert tok.encode(text) == ids
    assert tok.decode(ids) == text
    assert tok.decode_bytes(ids) == text.encode("utf-8")


@pytest.mark.parametrize("data,ids", RAW_VECTORS)
def test_raw_byte_vectors_exact(tok, ref, data, ids):
    assert tok.encode_bytes(data) == ids
    assert tok.encode_bytes(bytearray(data)) == ids
    assert tok.encode_bytes(memoryview(data)) == ids
    assert tok.decode_bytes(ids) == data
    assert tok.decode(ids) == ref.decode(ids)


# ----------------------------------------------------------------------------------------------- round trips
EXTRA_TEXTS = [
    "",
    "\n\n",
    "Hello\n\nWorld\n\n\n\n",
    " " * 200 + "x" + "\t" * 50,
    "a" * 1000,
    "abc" * 333 + "日本語" * 100,
    "emoji 👨‍👩‍👧‍👦 flags 🇯🇵🇫🇷 skin 👍🏿 and text after",
    "\x00\x01\x02\x1b[31mred\x1b[0m\x7f",
    "mixed: English, 中文，日本語、한국어, русский, العربية, हिन्दी, ελληνικά.",
    "line1\r\nline2\rline3\n",
    "\ufeffBOM then text\u2028\u2029",
    "User: Describe the image.\n\nAssistant: It shows a cat sitting on a mat.\n\n",
    "💩" * 40,
    "ab\u0300c\u0301 (combining marks) Z̤͔ͧ̑̓",
]


@pytest.mark.parametrize("text", EXTRA_TEXTS + [p.values[0] for p in TEXT_VECTORS])
def test_round_trip(tok, text):
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert all(0 < i < 65530 for i in ids)


def test_extra_texts_match_reference(tok, ref):
    for text in EXTRA_TEXTS:
        assert tok.encode(text) == ref.encode(text), text


# ----------------------------------------------------------------------------------------------- reference
_ALPHABETS = [
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
    " .,;:!?'\"()[]{}<>-_=+*/\\|@#$%^&~`",
    " \t\n\r\n\n  \x0b\x0c",
    "".join(chr(c) for c in range(0, 32)) + "\x7f",
    (
        "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后"
        "小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长"
        "知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己话儿者向情部正名定女问力机给等几很业最"
        "间新什打便位因重被走电四第门相次东政海口使教西再平真听世气信北少关并内加化由却代军产入先山五太水万市"
        "眼体别处总才场师书比住员九笑性通目华报立马命张活难神数件安表原车白应路期叫死常提感金何更反合放做系计"
        "或司利受光王果亲界及今京务制解各任至清物台象记边共风战干接它许八特觉望直服毛林题建南度统色字请交爱让"
        "认算论百吃义科怎元社术结六功指思非流每青管夫连远资队跟带花快条院变联言权往展该领传近留红治决周保达办"
        "运武半候七必城父强步完革深区即求品士转量空甚众技轻程告江语英基派满式李息写呢识极令黄德收脸钱党倒未持"
        "取设始版双历越史商千片容研像找友孩站广改议形委早房音火际则首单据导影失拿网香似斯专石若兵弟谁校读志飞"
        "观争究包组造落视济喜离虽坏兴"
    ),
    (
        "ぁあぃいぅうぇえぉおかがきぎくぐけげこごさざしじすずせぜそぞただちぢっつづてでとどなにぬねのはばぱひ"
        "びぴふぶぷへべぺほぼぽまみむめもゃやゅゆょよらりるれろゎわゐゑをんアイウエオカキクケコサシスセソタチ"
        "ツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワヲン"
    ),
    (
        "😀😁😂🤣😃😄😅😆😉😊😋😎😍😘🥰😗😙🙂🤗🤩🤔🤨😐😑😶🙄😏😣😥😮🤐😯😪😫🥱😴😌😛😜😝🤤😒😓😔😕🙃🤑😲☹🙁"
        "😖😞😟😤😢😭😦😧😨😩🤯😬😰😱🥵🥶😳🤪😵🥴😠😡🤬😷🤒🤕🤢🤮🤧😇🥳🥺🤠🤡🤥🤫🤭🧐🤓😈👿👹👺💀👻👽🤖💩😺🏽"
        "🏿\u200d\ufe0f🇺🇸"
    ),
    "абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВГДЕЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯ",
    "àáâãäåæçèéêëìíîïðñòóôõöøùúûüýþÿßœŒ€£¥©®°±²³µ¶·¹º¼½¾×÷",
    "αβγδεζηθικλμνξοπρστυφχψωأبتثجحخدذرزسشصضطظعغفقكلمنهوي한국어텍스트",
]


def _random_text(rng: random.Random, vocab_strs: list[str]) -> str:
    parts = []
    for _ in range(rng.randint(1, 12)):
        r = rng.random()
        if r < 0.25:  # whole vocabulary tokens glued together: exercises long and cross-boundary matches
            parts.append(rng.choice(vocab_strs))
        elif r < 0.35:
            parts.append(rng.choice([" ", "\n", "\n\n", "  ", "\t", "\r\n", " \n", "    "]) * rng.randint(1, 4))
        else:
            alphabet = rng.choice(_ALPHABETS)
            parts.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))))
    return "".join(parts)


def test_matches_reference_on_random_strings(tok, ref):
    rng = random.Random(20240424)
    vocab_strs = []
    for i in range(257, 65530):
        try:
            vocab_strs.append(tok.id_to_token(i).decode("utf-8"))
        except UnicodeDecodeError:
            pass
    texts = [_random_text(rng, vocab_strs) for _ in range(3000)]
    for text in texts:
        ids = tok.encode(text)
        assert ids == ref.encode(text), text
        assert tok.decode(ids) == text
    # Once more as one long text.
    big = "".join(texts[:500])
    assert tok.encode(big) == ref.encode(big)


def test_matches_reference_on_random_bytes(tok, ref):
    rng = random.Random(7)
    for _ in range(1500):
        n = rng.randint(1, 40)
        if rng.random() < 0.5:
            data = bytes(rng.randrange(256) for _ in range(n))
        else:  # mostly text with a few corrupted bytes
            data = bytearray(_random_text(rng, ["the", " and", "ing"]).encode("utf-8"))
            for _ in range(rng.randint(1, 3)):
                data[rng.randrange(len(data))] = rng.randrange(128, 256)
            data = bytes(data)
        ids = tok.encode_bytes(data)
        assert ids == ref.encodeBytes(data), data
        assert tok.decode_bytes(ids) == data
        assert tok.decode(ids) == ref.decode(ids)


@pytest.mark.parametrize("block", [1, 2, 3, 7, 64, 129])
def test_small_encode_blocks_match_reference(tok, ref, monkeypatch, block):
    # encode_bytes converts the input in blocks with look-ahead; block edges must never change the result.
    monkeypatch.setattr(tokmod, "ENCODE_BLOCK", block)
    rng = random.Random(block)
    long_tokens = [t.decode("utf-8") for t in (tok.id_to_token(i) for i in range(257, 65530)) if len(t) >= 16
                   and t.isascii()]
    for _ in range(60):
        text = _random_text(rng, long_tokens + [" the", "ing", "\n\n", "你好", "    return"])
        assert tok.encode(text) == ref.encode(text), text
    spaces = " " * 300 + "x" + "=" * 200  # runs longer than the longest token
    assert tok.encode(spaces) == ref.encode(spaces)


# ----------------------------------------------------------------------------------------------- invalid UTF-8
INVALID_UTF8_CASES = [
    [196],  # 0xc3: lead byte with nothing after it
    [129],  # 0x80: lone continuation byte
    [74, 196],  # valid text, then a truncated character
    [196, 74],  # truncated character, then valid text
    [256, 255],  # 0xff 0xfe
    [6891, 3030],  # "abc" + the first two bytes of a 3-byte character
    [33, 196, 33, DOUBLE_NEWLINE],
    [166, 230, 190],  # the three bytes of "好" (e5 a5 bd) as separate tokens, but in the wrong order
    [238, 161],  # an overlong encoding of "/" (0xc0 0xaf)
    [238, 175, 129, 182],  # an encoded surrogate U+D800 (ed a0 80)
]


@pytest.mark.parametrize("ids", INVALID_UTF8_CASES)
def test_invalid_utf8_decode_matches_reference(tok, ref, ids):
    data = tok.decode_bytes(ids)
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    # The reference replaces the *whole* result with a single U+FFFD, not just the bad bytes.
    assert ref.decode(ids) == "\ufffd"
    assert tok.decode(ids) == "\ufffd"
    # Opt-in per-byte handling.
    assert tok.decode(ids, errors="replace") == data.decode("utf-8", "replace")
    with pytest.raises(UnicodeDecodeError):
        tok.decode(ids, errors="strict")


def test_split_character_decodes_once_complete(tok, ref):
    ids = tok.encode_bytes("好".encode("utf-8")[:2]) + tok.encode_bytes("好".encode("utf-8")[2:])
    assert tok.decode(ids[:-1]) == ref.decode(ids[:-1]) == "\ufffd"
    assert tok.decode(ids) == ref.decode(ids) == "好"


def test_random_token_sequences_decode_like_reference(tok, ref):
    rng = random.Random(3)
    for _ in range(2000):
        ids = [rng.choice([rng.randrange(1, 257), rng.randrange(1, 65530)]) for _ in range(rng.randint(1, 6))]
        assert tok.decode(ids) == ref.decode(ids), ids


# ----------------------------------------------------------------------------------------------- API
def test_constants_and_sizes(tok):
    assert END_OF_TEXT == 0
    assert DOUBLE_NEWLINE == 261
    assert tok.encode("\n\n") == [DOUBLE_NEWLINE]
    assert tok.id_to_token(DOUBLE_NEWLINE) == b"\n\n"
    assert tok.vocab_size == 65536
    assert len(tok) == 65530
    assert tok.id_to_token(END_OF_TEXT) == b""
    assert tok.decode_bytes([END_OF_TEXT]) == b""
    assert tok.decode([5229, END_OF_TEXT, 274]) == tok.decode([5229, 274])
    for b in range(256):
        assert tok.id_to_token(b + 1) == bytes([b])
        assert tok.encode_bytes(bytes([b])) == [b + 1]
    assert tok.token_to_id("\n\n") == DOUBLE_NEWLINE
    assert tok.token_to_id(b"\x00") == 1
    with pytest.raises(KeyError):
        tok.token_to_id(b"\xff\xff\xff not a token")
    assert tok.encode("") == [] and tok.decode([]) == "" and tok.decode_bytes([]) == b""


def test_bundled_vocab_equals_reference_vocab(tok, ref):
    assert len(ref.idx2token) == len(tok) - 1
    for i, b in ref.idx2token.items():
        assert tok.id_to_token(i) == b


def test_load_tokenizer_is_cached(tok):
    assert load_tokenizer() is tok
    assert load_tokenizer(str(tokmod.DEFAULT_VOCAB_PATH)) is tok
    assert load_tokenizer(tokmod.DEFAULT_VOCAB_PATH) is tok
    assert WorldTokenizer()._root is tok._root  # parsed table shared


def test_decode_accepts_sequences_and_arrays(tok):
    import numpy as np
    ids = tok.encode("Hello, 世界")
    assert tok.decode(tuple(ids)) == "Hello, 世界"
    assert tok.decode(iter(ids)) == "Hello, 世界"
    assert tok.decode(np.array(ids, dtype=np.int64)) == "Hello, 世界"
    assert tok.decode(np.array(ids, dtype=np.int32)) == "Hello, 世界"
    assert tok.decode([np.int64(i) for i in ids]) == "Hello, 世界"


def test_encode_type_errors(tok):
    with pytest.raises(TypeError, match="encode_bytes"):
        tok.encode(b"bytes")
    with pytest.raises(TypeError, match="encode"):
        tok.encode_bytes("text")
    with pytest.raises(UnicodeEncodeError):
        tok.encode("lone surrogate \ud800")


@pytest.mark.parametrize("bad,pos", [(70000, 2), (-1, 2), (65530, 2), (65535, 2), (1 << 40, 2)])
def test_decode_bad_id(tok, bad, pos):
    ids = [74, 5229, bad, 274]
    with pytest.raises(ValueError, match=rf"token id {bad} at position {pos}\b"):
        tok.decode(ids)
    with pytest.raises(ValueError, match=rf"token id {bad} at position {pos}\b"):
        tok.decode_bytes(ids)
    with pytest.raises(ValueError, match=rf"token id {bad}\b"):
        tok.id_to_token(bad)


def test_decode_non_integer_id(tok):
    with pytest.raises(TypeError, match="position 1"):
        tok.decode([74, 1.5])
    with pytest.raises(TypeError, match="position 0"):
        tok.decode(["a"])
    with pytest.raises(TypeError):
        tok.decode(74)


def test_missing_vocab_file(tmp_path):
    missing = tmp_path / "nope" / "vocab.txt"
    with pytest.raises(FileNotFoundError, match="vocab.txt"):
        load_tokenizer(missing)
    with pytest.raises(FileNotFoundError, match=str(missing.name)):
        WorldTokenizer(str(missing))


# ----------------------------------------------------------------------------------------------- custom files
def _byte_lines() -> list[str]:
    return [f"{b + 1} {bytes([b])!r} 1" for b in range(256)]


def _write_vocab(path: Path, extra: list[str], newline: str = "\n", reverse: bool = False) -> Path:
    lines = _byte_lines() + extra
    if reverse:  # the file need not be sorted by id or by length
        lines.reverse()
    path.write_bytes((newline.join(lines) + newline).encode("utf-8"))
    return path


@pytest.mark.parametrize(
    "line,why",
    [
        ("257 'ab' 3", "byte length"),
        ("257 'ab'", "expected"),
        ("257 ab 2", "literal"),
        ("257 __import__('os') 2", "literal"),
        ("257 ['a', 'b'] 2", "literal"),
        ("257 12 2", "literal"),
        ("x 'ab' 2", "expected"),
        ("257 'ab 2", "literal"),
        ("257 '\\ud800' 3", "literal"),
        ("0 'ab' 2", "reserved"),
        ("5 'ab' 2", "already defined on line 5"),
        ("257 '\\x00' 1", "already on line 1"),
        ("99999999 'ab' 2", "larger than"),
    ],
)
def test_malformed_vocab_line(tmp_path, line, why):
    path = _write_vocab(tmp_path / "bad_vocab.txt", ["258 'cd' 2", line, "260 'ef' 2"])
    with pytest.raises(ValueError, match=rf"bad_vocab\.txt:258: .*{why}"):
        load_tokenizer(path)


def test_vocab_missing_single_bytes(tmp_path):
    path = tmp_path / "v.txt"
    path.write_text("1 'a' 1\n", encoding="utf-8")
    with pytest.raises(ValueError, match="single-byte"):
        WorldTokenizer(path)


def test_vocab_not_utf8(tmp_path):
    path = tmp_path / "v.txt"
    path.write_bytes(b"1 '\\x00' 1\n2 '\xff' 1\n")
    with pytest.raises(ValueError, match=r"v\.txt:2: .*UTF-8"):
        WorldTokenizer(path)


def test_custom_vocab_matches_reference(tmp_path):
    require_extra("reference")
    import rwkv.rwkv_tokenizer as mod

    # Not prefix-closed on purpose: "abcd" without "abc", long token behind short ones, bytes literals.
    extra = [
        "257 'ab' 2",
        "258 'abcd' 4",
        "259 'abcdefgh' 8",
        "260 ' the' 4",
        "261 '\\n\\n' 2",
        "262 b'\\xe4\\xbd' 2",
        "263 '你好' 6",
        "264 \"it's\" 4",
        "265 'a b' 3",
    ]
    for k, (newline, reverse) in enumerate((("\n", False), ("\r\n", False), ("\n", True))):
        path = _write_vocab(tmp_path / f"custom{k}.txt", extra, newline, reverse)
        ours = WorldTokenizer(path)
        ref = mod.TRIE_TOKENIZER(str(path))
        assert len(ours) == 266 and ours.vocab_size == 320
        rng = random.Random(11)
        pieces = ["a", "b", "c", "d", "e", "f", "g", "h", " ", "the", "\n", "你", "好", "'", "s", "it"]
        for _ in range(500):
            text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 30)))
            assert ours.encode(text) == ref.encode(text), text
            assert ours.decode(ours.encode(text)) == text
        assert ours.encode("abcx") == [257, 100, 121]
        assert ours.encode("abcdefg") == [258, 102, 103, 104]
        assert ours.encode("\n\n\n") == [261, 11]
