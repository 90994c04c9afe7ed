"""Old import paths kept for one release (0.2.x), each a warning and an alias of its new home (CHANGELOG.md)."""
from __future__ import annotations

import importlib
import pkgutil
import sys
import warnings
from typing import Optional


def alias_module(old: str, new: str, renamed: Optional[dict[str, str]] = None) -> None:
    """Makes ``old`` (and, for a package, ``old.<sub>`` for each submodule of ``new`` plus ``renamed``
    ``{old_sub: new_sub}``) the very module objects of ``new``, with one DeprecationWarning."""
    warnings.warn(f"{old} is deprecated and will be removed in 0.3; import {new}", DeprecationWarning, stacklevel=3)
    target = importlib.import_module(new)
    sys.modules[old] = target
    subs = {}
    if hasattr(target, "__path__"):
        subs = {info.name: info.name for info in pkgutil.iter_modules(target.__path__)}
    subs.update(renamed or {})
    for old_sub, new_sub in subs.items():
        sys.modules[f"{old}.{old_sub}"] = importlib.import_module(f"{new}.{new_sub}")
