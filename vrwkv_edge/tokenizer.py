"""RWKV World tokenizer (vocabulary ``rwkv_vocab_v20230424``), pure Python.

Vocabulary file
---------------
One token per line: ``<id> <Python str or bytes literal> <byte length>``, ids 1..65529 (the bundled
``data/rwkv_vocab_v20230424.txt``).  A ``str`` literal stands for its UTF-8 bytes, a ``bytes`` literal for
itself; the last column must equal the token's length in bytes.  Literals are read with
:func:`ast.literal_eval` (never ``eval``); plain quoted literals without escapes take a fast path that gives the
same result.  Ids 1..256 are the 256 single bytes (id = byte + 1), so every byte string can be encoded.
Id 0 is not in the file: it is the end-of-text token (:data:`END_OF_TEXT`) and decodes to empty bytes.  The
model's embedding has 65536 rows (:attr:`WorldTokenizer.vocab_size`); ids 65530..65535 have no token.
LF or CRLF line endings are accepted and blank lines are skipped; anything else that does not parse raises
:class:`ValueError` naming the file and the line number.

Encoding algorithm
------------------
Greedy longest match over the UTF-8 bytes: at each position take the longest vocabulary entry that is a
prefix of the remaining bytes, emit its id and move past it.  This is exactly what the reference
``rwkv.rwkv_tokenizer.TRIE_TOKENIZER`` (and rwkv.cpp's ``WorldTokenizer``) compute; there are no merges and no
pre-tokenisation, so tokens can span word boundaries.

The vocabulary is held as a byte trie made of plain dicts: ``node[byte] -> (child, (id, length))``, where
``(id, length)`` is the longest *token* that is a prefix of the node's bytes (the node's own token if it is
one, else its parent's answer).  The longest match at a position is then one ``dict.get`` per byte while the
walk stays in the trie, and the answer is the entry of the deepest node reached: no backtracking, no per-node
objects with 256-slot child arrays.  The input is walked as a list of ints (converted in blocks of
:data:`ENCODE_BLOCK` bytes, each with enough look-ahead for the longest token) that ends in a sentinel
(256) no node has a child for, so the inner loop needs no bounds check.

(A word-level memo in front of the walk was tried and dropped: on realistic text it was no faster than the
plain walk, which costs about as much per token as a memo lookup.)

Loading parses about 65 000 lines and builds the trie (~116 000 nodes) in roughly 0.2-0.3 s; the result is
cached per process (see :func:`load_tokenizer`).

Decoding and invalid UTF-8
--------------------------
:meth:`WorldTokenizer.decode_bytes` concatenates the tokens' bytes.  :meth:`WorldTokenizer.decode` then decodes
them as UTF-8 exactly like the reference ``TRIE_TOKENIZER.decode`` (which ``rwkv.utils.PIPELINE.decode``
calls): if the bytes are not valid UTF-8 *anywhere* -- a token sequence that stops in the middle of a
multi-byte character, a stray continuation byte, ... -- the result is the single character ``"\\ufffd"`` for
the *whole* call, not the text with a replacement character in place of the bad bytes.  ``PIPELINE.generate``
relies on this: it streams text only once a decoded slice contains no ``"\\ufffd"``.  Pass ``errors=`` (e.g.
``"replace"``, ``"strict"``, ``"ignore"``) to use Python's own per-byte handling instead.

Differences from the reference, on purpose: an id that has no token (negative, or not in the vocabulary, i.e.
anything but 0..65529 for the bundled file) raises :class:`ValueError` naming the id and its position, where
the reference's bare ``except`` turns it into ``"\\ufffd"``; and id 0 decodes to empty bytes where the
reference (which has no id 0) also returns ``"\\ufffd"``.

Text is encoded with strict UTF-8, like the reference: a ``str`` holding lone surrogates raises
:class:`UnicodeEncodeError`.
"""
from __future__ import annotations

import ast
import contextlib
import gc
import operator
import os
import re
import threading
from pathlib import Path
from typing import Iterable

__all__ = [
    "WorldTokenizer",
    "load_tokenizer",
    "END_OF_TEXT",
    "DOUBLE_NEWLINE",
    "DEFAULT_VOCAB_PATH",
    "ENCODE_BLOCK",
    "MAX_TOKEN_ID",
]

END_OF_TEXT = 0
"""End-of-text / document separator id; not in the vocabulary file, decodes to ``b""``."""
DOUBLE_NEWLINE = 261
"""The token ``"\\n\\n"``."""

DEFAULT_VOCAB_PATH = Path(__file__).resolve().parent / "data" / "rwkv_vocab_v20230424.txt"

ENCODE_BLOCK = 1 << 13
"""Bytes converted to a list of ints at a time by :meth:`WorldTokenizer.encode_bytes` (bounds its memory and
keeps the list cache-resident; 2-64 KiB all measure alike, much smaller or larger is slower)."""
MAX_TOKEN_ID = (1 << 24) - 1
"""Largest id accepted in a vocabulary file (the id table is a list indexed by id)."""

_MODEL_ROWS_MULTIPLE = 64  # RWKV pads its embedding to a multiple of 64 rows: 65530 ids -> 65536 rows.

from .fileio import PathLike

# <id> <literal> <byte length>; the literal is everything between the first and the last space.
_LINE_RE = re.compile(r"([0-9]+) (.+) ([0-9]+)", re.ASCII | re.DOTALL)


class _Vocab:
    """Parsed vocabulary shared by all tokenizers loaded from the same file (immutable after build)."""

    __slots__ = ("path", "id_to_bytes", "bytes_to_id", "root", "max_token_len", "n_tokens", "max_id")

    def __init__(self, path: Path, entries: list[tuple[int, bytes]]):
        self.path = path
        self.n_tokens = len(entries)
        self.max_id = max(i for i, _ in entries)
        table: list = [None] * (self.max_id + 1)
        table[END_OF_TEXT] = b""
        b2i: dict[bytes, int] = {}
        for i, tok in entries:
            table[i] = tok
            b2i[tok] = i
        self.id_to_bytes = table
        self.bytes_to_id = b2i
        trie = _build_trie(entries)
        self.root = [trie[b] for b in range(256)]  # list indexing beats dict lookup for the first byte
        self.max_token_len = max(len(t) for t in b2i)


def _build_trie(entries: list[tuple[int, bytes]]) -> dict:
    """Byte trie: ``node[byte] = (child_node, (id, length))``.

    ``(id, length)`` describes the longest *token* that is a prefix of the node's byte string (the node's own
    token if it is one, else its parent's answer), so a walk only has to remember the entry of the deepest node
    it reached.  The root holds all 256 single bytes.
    """
    root: dict = {}
    with _gc_paused():  # ~116k small dicts and tuples, no cycles: collector passes would only cost time
        # Shortest first: a token's proper prefixes that are tokens are then already in the trie, and a node
        # created here for a proper prefix is not a token, so it inherits its parent's answer.
        for i, tok in sorted(entries, key=lambda e: len(e[1])):
            node = root
            best = None
            k = 0
            last = len(tok) - 1
            while k < last:
                ent = node.get(tok[k])
                if ent is None:
                    break
                node, best = ent
                k += 1
            while k < last:
                child: dict = {}
                node[tok[k]] = (child, best)
                node = child
                k += 1
            node[tok[last]] = ({}, (i, last + 1))
    return root


@contextlib.contextmanager
def _gc_paused():
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _bad_line(path: Path, lineno: int, line: str, why: str) -> ValueError:
    shown = line if len(line) <= 120 else line[:117] + "..."
    return ValueError(f"{path}:{lineno}: bad vocabulary line ({why}): {shown!r}")


def _parse_literal(lit: str) -> bytes | None:
    """The token bytes of one str/bytes literal (via ``ast.literal_eval``), or None if it is not one."""
    try:
        value = ast.literal_eval(lit)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError:  # e.g. a lone surrogate escape
            return None
    if isinstance(value, bytes):
        return value
    return None


def _parse_vocab_file(path: Path) -> list[tuple[int, bytes]]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"RWKV World vocabulary file not found: {path}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        lineno = raw.count(b"\n", 0, e.start) + 1
        raise ValueError(f"{path}:{lineno}: vocabulary file is not valid UTF-8 ({e.reason})") from None
    ids: list[int] = []
    toks: list[bytes] = []
    linenos: list[int] = []
    fullmatch = _LINE_RE.fullmatch
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    lines = text.split("\n")
    for lineno, line in enumerate(lines, 1):
        m = fullmatch(line)
        if m is None:
            if not line or line.isspace():
                continue
            raise _bad_line(path, lineno, line, "expected '<id> <str or bytes literal> <byte length>'")
        id_s, lit, n_s = m.groups()
        q = lit[0]
        inner = lit[1:-1]
        if (q == "'" or q == '"') and lit[-1] == q and len(lit) >= 2 and "\\" not in inner and q not in inner:
            tok = inner.encode("utf-8")  # no escapes and no implicit concatenation: the value is ``inner``
        else:
            tok = _parse_literal(lit)
            if tok is None:
                raise _bad_line(path, lineno, line, "the token is not a Python str or bytes literal")
        if len(tok) != int(n_s):
            raise _bad_line(path, lineno, line, f"byte length column says {n_s} but the token has {len(tok)} bytes")
        ids.append(int(id_s))
        toks.append(tok)
        linenos.append(lineno)
    if not ids:
        raise ValueError(f"{path}: vocabulary file has no tokens")
    # Whole-file checks in C; only on failure find the offending lines.
    if END_OF_TEXT in ids:
        k = ids.index(END_OF_TEXT)
        raise _bad_line(path, linenos[k], lines[linenos[k] - 1], "id 0 is reserved for end-of-text")
    if max(ids) > MAX_TOKEN_ID:
        k = ids.index(max(ids))
        raise _bad_line(path, linenos[k], lines[linenos[k] - 1], f"id is larger than {MAX_TOKEN_ID}")
    for column, what in ((ids, "id {} already defined on line {}"), (toks, "token bytes {!r} already on line {}")):
        if len(set(column)) != len(column):
            first: dict = {}
            for k, v in enumerate(column):
                if v in first:
                    raise _bad_line(path, linenos[k], lines[linenos[k] - 1], what.format(v, linenos[first[v]]))
                first[v] = k
    single = {t for t in toks if len(t) == 1}
    if len(single) != 256:
        missing = [b for b in range(256) if bytes((b,)) not in single]
        raise ValueError(
            f"{path}: vocabulary lacks single-byte tokens for {len(missing)} byte value(s), e.g. {missing[0]:#04x}; "
            "every byte needs a token so that any input can be encoded"
        )
    return list(zip(ids, toks))


_CACHE_LOCK = threading.Lock()
_VOCAB_CACHE: dict[tuple, _Vocab] = {}
_TOKENIZER_CACHE: dict[tuple, "WorldTokenizer"] = {}


def _resolve(path: PathLike | None) -> tuple[Path, tuple]:
    p = DEFAULT_VOCAB_PATH if path is None else Path(os.fspath(path))
    p = p.expanduser().resolve()
    try:
        st = p.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"RWKV World vocabulary file not found: {p}") from None
    if not p.is_file():
        raise ValueError(f"{p}: is not a file (expected an RWKV World vocabulary file)")
    return p, (str(p), st.st_mtime_ns, st.st_size)


def _get_vocab(p: Path, key: tuple) -> _Vocab:
    with _CACHE_LOCK:
        vocab = _VOCAB_CACHE.get(key)
        if vocab is None:
            with _gc_paused():
                vocab = _Vocab(p, _parse_vocab_file(p))
            _VOCAB_CACHE[key] = vocab
        return vocab


class WorldTokenizer:
    """RWKV World tokenizer: greedy longest match over UTF-8 bytes (see the module docstring).

    ``WorldTokenizer()`` uses the bundled vocabulary.  Parsed vocabularies are cached per process (keyed by the
    file's resolved path, modification time and size); :func:`load_tokenizer` also caches the tokenizer.
    Instances are safe to share between threads.
    """

    def __init__(self, path: PathLike | None = None):
        p, key = _resolve(path)
        v = _get_vocab(p, key)
        self.path: Path = p
        self._vocab = v
        self._id_to_bytes: list = v.id_to_bytes
        self._bytes_to_id = v.bytes_to_id
        self._root = v.root
        self._max_token_len = v.max_token_len
        # The model's embedding rows: ids padded up to a multiple of 64 (65536 for the World vocabulary).
        self.vocab_size: int = -(-(v.max_id + 1) // _MODEL_ROWS_MULTIPLE) * _MODEL_ROWS_MULTIPLE

    # ------------------------------------------------------------------ sizes and lookups
    def __len__(self) -> int:
        """Number of ids that decode: the file's tokens plus end-of-text (65530 for the World vocabulary)."""
        return self._vocab.n_tokens + 1

    def __repr__(self) -> str:
        return f"WorldTokenizer({str(self.path)!r}, tokens={len(self)}, vocab_size={self.vocab_size})"

    def id_to_token(self, i: int) -> bytes:
        """The bytes of token ``i`` (``b""`` for :data:`END_OF_TEXT`)."""
        return self._token_or_raise(i, None)

    def token_to_id(self, token: bytes | str) -> int:
        """The id of a token given as bytes (or as str, meaning its UTF-8 bytes); KeyError if it is none."""
        b = token.encode("utf-8") if isinstance(token, str) else bytes(token)
        try:
            return self._bytes_to_id[b]
        except KeyError:
            raise KeyError(f"{b!r} is not a token of {self.path.name}") from None

    # ------------------------------------------------------------------ encoding
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (strict UTF-8, then :meth:`encode_bytes`)."""
        if not isinstance(text, str):
            raise TypeError(f"encode() expects str, got {type(text).__name__}; use encode_bytes() for bytes")
        return self.encode_bytes(text.encode("utf-8"))

    def encode_bytes(self, data: bytes | bytearray | memoryview) -> list[int]:
        """Token ids of arbitrary bytes (greedy longest match)."""
        if isinstance(data, str):
            raise TypeError("encode_bytes() expects bytes; use encode() for str")
        src = data if type(data) is bytes else bytes(data)
        n = len(src)
        if n == 0:
            return []
        root = self._root
        depth = self._max_token_len
        block = max(1, ENCODE_BLOCK)
        out: list[int] = []
        append = out.append
        pos = 0
        while pos < n:
            # Tokens starting in [pos, stop) are found in this block.  A walk from p reads at most
            # ``depth`` bytes past p, so ``depth`` bytes of look-ahead past ``stop`` make the block's end
            # invisible; at the real end of the input the sentinel stops the walk.
            stop = min(n, pos + block)
            arr = list(src[pos:stop + depth])
            arr.append(256)  # sentinel: no trie node has a child for 256
            limit = stop - pos
            p = 0
            while p < limit:
                node, best = root[arr[p]]
                i = p + 1
                while (ent := node.get(arr[i])) is not None:
                    node, best = ent
                    i += 1
                tid, length = best
                append(tid)
                p += length
            pos += p
        return out

    # ------------------------------------------------------------------ decoding
    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Concatenated bytes of the tokens; :data:`END_OF_TEXT` (0) contributes nothing.

        Raises ValueError naming the id and its position for an id with no token, TypeError for a non-integer.
        Accepts lists, tuples, any iterable of ints, and numpy arrays / torch tensors (via ``tolist()``).
        """
        ids = self._as_list(ids)
        table = self._id_to_bytes
        try:
            if ids and min(ids) < 0:
                raise IndexError
            return b"".join(map(table.__getitem__, ids))
        except (IndexError, TypeError):
            pass
        for pos, i in enumerate(ids):  # slow path: find the first offending id and say which
            self._token_or_raise(i, pos)
        raise AssertionError("unreachable")  # pragma: no cover

    def decode(self, ids: Iterable[int], errors: str | None = None) -> str:
        """Text of the tokens.

        With ``errors=None`` (default) this matches the reference ``TRIE_TOKENIZER.decode``: if the bytes are not
        valid UTF-8 anywhere, the whole result is the single character ``"\\ufffd"``.  Otherwise ``errors`` is
        passed to :meth:`bytes.decode` (``"replace"``, ``"strict"``, ``"ignore"``, ...).
        """
        data = self.decode_bytes(ids)
        if errors is None:
            try:
                return data.decode("utf-8")
            except UnicodeDecodeError:
                return "\ufffd"
        return data.decode("utf-8", errors)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _as_list(ids) -> list:
        if isinstance(ids, list):
            return ids
        if isinstance(ids, (int, bytes, str)):
            raise TypeError(f"expected a sequence of token ids, got {type(ids).__name__}")
        tolist = getattr(ids, "tolist", None)
        if tolist is not None:  # numpy arrays, torch tensors
            ids = tolist()
            return ids if isinstance(ids, list) else [ids]
        return list(ids)

    def _token_or_raise(self, i, pos: int | None) -> bytes:
        where = "" if pos is None else f" at position {pos}"
        try:
            k = operator.index(i)
        except TypeError:
            raise TypeError(f"token id {i!r}{where} is not an integer") from None
        table = self._id_to_bytes
        if 0 <= k < len(table):
            tok = table[k]
            if tok is not None:
                return tok
        raise ValueError(
            f"token id {k}{where} is out of range: {self.path.name} defines ids 0..{len(table) - 1}"
            + ("" if len(self) == len(table) else " (with gaps)")
            + f" (0 = end-of-text; the model's {self.vocab_size} rows include unused ids)"
        )


def load_tokenizer(path: PathLike | None = None) -> WorldTokenizer:
    """The World tokenizer for ``path`` (default: the bundled ``rwkv_vocab_v20230424.txt``).

    Cached per process: calling it again with the same (unchanged) file returns the same instance.
    Raises FileNotFoundError naming the path if the file does not exist, ValueError for a malformed line.
    """
    p, key = _resolve(path)
    tok = _TOKENIZER_CACHE.get(key)
    if tok is None:
        tok = WorldTokenizer(p)
        with _CACHE_LOCK:
            tok = _TOKENIZER_CACHE.setdefault(key, tok)
    return tok


class ByteTokenizer:
    """Byte-level tokenizer of models with a 256-row embedding (token id = byte value), such as the tiny
    rwkv.cpp test models.  Same interface as :class:`WorldTokenizer`."""

    vocab_size = 256

    def __len__(self) -> int:
        return 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_bytes(self, data: bytes) -> list[int]:
        return list(bytes(data))

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        ids = list(ids)
        for pos, i in enumerate(ids):
            if not 0 <= int(i) < 256:
                raise ValueError(f"token id {i} at position {pos} is out of range for a byte-level model (0..255)")
        return bytes(int(i) for i in ids)

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        return self.decode_bytes(ids).decode("utf-8", errors=errors)


def tokenizer_for_vocab(name: str, vocab_size: int):
    """The tokenizer a model with ``vocab_size`` embedding rows uses: ``"auto"`` (bytes for 256-row byte-level
    models such as rwkv.cpp's tiny test models, else World), ``"world"`` (the bundled vocabulary), ``"bytes"``, or a vocabulary
    file.  Returns ``(tokenizer, vocabulary path or None)``; refuses a tokenizer with more tokens than rows."""
    if name == "auto":
        if vocab_size != 256 and vocab_size < 65536:
            raise ValueError(f"a model with {vocab_size} embedding rows is neither byte-level (256) nor World "
                             f"(65536): name its tokenizer (world, bytes or a vocabulary file)")
        name = "bytes" if vocab_size == 256 else "world"
    if name == "bytes":
        if vocab_size < 256:
            raise ValueError(f"a byte-level tokenizer needs 256 embedding rows, the model has {vocab_size}")
        return ByteTokenizer(), None
    path = DEFAULT_VOCAB_PATH if name == "world" else Path(name)
    tok = load_tokenizer(path)
    if vocab_size < len(tok):
        raise ValueError(f"the tokenizer {path.name} has {len(tok)} tokens but the model only {vocab_size} "
                         f"embedding rows; use the byte tokenizer ('bytes') or a matching vocabulary file")
    return tok, path

