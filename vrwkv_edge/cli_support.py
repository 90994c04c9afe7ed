"""What every ``vrwkv-edge`` sub-command shares: the error contract, sampling flags, tokenizer choice.

The error contract: bad input (a missing, unreadable or malformed file, a bad argument) prints one line
``error: ...`` naming the file, key or argument on stderr and exits 2; never a traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import re
import sys
from dataclasses import fields
from pathlib import Path

from .generation import SamplingParams
from .tokenizer import tokenizer_for_vocab

EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2
# What bad input raises anywhere in the package (CheckpointError, ArtefactError, ImageLoadError are ValueErrors;
# IsADirectoryError and PermissionError are OSErrors; UnicodeDecodeError is a ValueError).
INPUT_ERRORS = (OSError, ValueError, KeyError)


def text_argument(value: str, name: str) -> str:
    """A command-line text argument as valid Unicode: Python hands undecodable argv bytes over as lone
    surrogates, which would fail deep inside a tokenizer with a message that names nothing."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{name} is not valid UTF-8 text (byte {value[e.start]!r} at position {e.start})") from None
    return value


def read_text_file(path, name: str) -> str:
    """A UTF-8 text file given as ``name``, with errors that name the argument and the file."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{name} {path}: is a directory, expected a file")
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{name} {path}: no such file") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{name} {path}: not UTF-8 text (byte {e.start}: {e.reason})") from None


@contextlib.contextmanager
def flag_names():
    """Re-raises a ``SamplingParams.<field>`` error under the command-line flag the user typed."""
    try:
        yield
    except ValueError as e:
        text = re.sub(r"SamplingParams\.(\w+)", lambda m: "--" + m.group(1).replace("_", "-"), str(e))
        raise ValueError(text) from None


def run_command(args) -> int:
    """Runs a parsed sub-command (``args.func(args)``) under the error contract."""
    try:
        return args.func(args) or EXIT_OK
    except INPUT_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def add_sampling_args(p: argparse.ArgumentParser, **overrides) -> None:
    """One flag per SamplingParams field; the defaults come from the dataclass (defined once)."""
    defaults = {**{f.name: f.default for f in fields(SamplingParams)}, **overrides}
    g = p.add_argument_group("sampling")
    g.add_argument("--temperature", type=float, default=defaults["temperature"], help="0 = greedy")
    g.add_argument("--top-p", type=float, default=defaults["top_p"])
    g.add_argument("--top-k", type=int, default=defaults["top_k"], help="0 = off")
    g.add_argument("--presence-penalty", type=float, default=defaults["presence_penalty"])
    g.add_argument("--frequency-penalty", type=float, default=defaults["frequency_penalty"])
    g.add_argument("--penalty-decay", type=float, default=defaults["penalty_decay"])
    g.add_argument("--max-new-tokens", type=int, default=defaults["max_new_tokens"])
    g.add_argument("--stop-token", type=int, action="append", dest="stop_tokens",
                   help=f"repeatable; default {list(defaults['stop_tokens'])}")
    g.add_argument("--no-stop", action="store_true", help="ignore stop tokens (generate max-new-tokens)")
    g.add_argument("--seed", type=int, default=defaults["seed"])


def sampling_from_args(args) -> SamplingParams:
    stops = () if args.no_stop else tuple(args.stop_tokens or SamplingParams.stop_tokens)
    with flag_names():
        return SamplingParams(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                              presence_penalty=args.presence_penalty, frequency_penalty=args.frequency_penalty,
                              penalty_decay=args.penalty_decay, max_new_tokens=args.max_new_tokens,
                              stop_tokens=stops, seed=args.seed)


def tokenizer_for(model, name: str = "auto"):
    """``--tokenizer auto|world|bytes|FILE`` for ``model`` (see :func:`vrwkv_edge.tokenizer.tokenizer_for_vocab`)."""
    return tokenizer_for_vocab(name, model.cfg.vocab_size)[0]
