"""Files written whole or not at all, and the one path type every module accepts.

Everything the package writes for people or programs to read later (checkpoints, graphs, metadata, benchmark
results, plots) goes through :func:`atomic_write`: the data lands in a temporary file beside the target and is
renamed over it only when complete, so an interrupted run never leaves a half-written file under the real name.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Union

PathLike = Union[str, os.PathLike]


@contextlib.contextmanager
def atomic_write(path: PathLike, suffix: str = ".tmp") -> Iterator[str]:
    """Yields a temporary file name in ``path``'s directory; on a clean exit the file is renamed to ``path``,
    on an exception it is removed.  ``suffix`` matters to writers that pick a format by extension
    (matplotlib, safetensors)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)                 # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: PathLike, data: Any) -> Path:
    """``data`` as indented JSON with a final newline, atomically."""
    with atomic_write(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    return Path(path)
