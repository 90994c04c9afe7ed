"""The ONNX Runtime custom-op library for custom-flavour exports (``vrwkv-edge export --wkv custom``).

A custom-flavour graph has one node per WKV in ONNX domain ``vrwkv`` (:mod:`vrwkv_edge.ops.custom_op_contract`),
which ONNX Runtime runs only with ``libvrwkv_ort_ops.so`` (``csrc/ort_ops``) registered on the session options.
:func:`register_for_artefact` does that from an export's metadata (``metadata["wkv"] = {"flavour": "custom",
"domain": "vrwkv", "op_version": N}``; no ``wkv`` section, or the standard flavour, needs nothing):

* the library: ``library=`` if given, else ``$VRWKV_ORT_OPS_LIBRARY``, else the one ``vrwkv-edge build-native``
  built for this checkout (:func:`vrwkv_edge.native.ort_ops.library_path`);
* its version: the library says which op versions of which domain it implements (``vrwkv_ort_ops_domain`` /
  ``_min_op_version`` / ``_max_op_version``, read with ctypes before ONNX Runtime sees it); an export needing
  another version is refused with a message naming both.

:class:`~vrwkv_edge.runtime.ort.OrtModel` calls it when it creates its session options, so a custom-flavour
export loads with no user action once the library is built.
"""
from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from vrwkv_edge.fileio import PathLike
from vrwkv_edge.native import ort_ops
from vrwkv_edge.ops.custom_op_contract import DOMAIN
from vrwkv_edge.runtime.artefact import ArtefactError

LIBRARY_ENV = "VRWKV_ORT_OPS_LIBRARY"
BUILD_COMMAND = "vrwkv-edge build-native --ort-ops-only --ort-include DIR"


class CustomOpsError(ArtefactError):
    """A custom-flavour export cannot run here: the op library is missing or unloadable, or implements another
    op version than the export needs (an ArtefactError, so command lines report it as ``error: ...``)."""


@dataclass(frozen=True)
class OpLibrary:
    """A custom-op library and what it says it implements."""
    path: Path
    domain: str
    min_version: int
    max_version: int
    providers: tuple

    def implements(self, domain: str, version: int) -> bool:
        return domain == self.domain and self.min_version <= version <= self.max_version

    def versions(self) -> str:
        v = self.min_version, self.max_version
        return f"{self.domain} version {v[0]}" if v[0] == v[1] else f"{self.domain} versions {v[0]}..{v[1]}"


def required_op_version(meta: dict) -> Optional[int]:
    """The ``vrwkv`` op version an export's graphs need, or None for the standard flavour (also when the
    metadata predates the ``wkv`` section)."""
    wkv = meta.get("wkv") or {}
    if wkv.get("flavour", "standard") != "custom":
        return None
    if wkv.get("domain") != DOMAIN:
        raise CustomOpsError(f"metadata wkv.domain {wkv.get('domain')!r}: custom-flavour exports use domain "
                             f"{DOMAIN!r}")
    version = wkv.get("op_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise CustomOpsError(f"metadata wkv.op_version {version!r} is not an integer")
    return version


def library_path(library: Optional[PathLike] = None) -> Path:
    """The library to load: ``library``, else $VRWKV_ORT_OPS_LIBRARY, else this checkout's build (which must
    exist: the error says how to build it)."""
    if library is not None or os.environ.get(LIBRARY_ENV):
        given = Path(library if library is not None else os.environ[LIBRARY_ENV])
        source = "library" if library is not None else f"${LIBRARY_ENV}"
        if not given.is_file():
            raise CustomOpsError(f"{source} {given}: no such file (the vrwkv ONNX Runtime custom-op library, "
                                 f"libvrwkv_ort_ops.so)")
        return given
    built = ort_ops.library_path()
    if not built.is_file():
        raise CustomOpsError(f"the vrwkv ONNX Runtime custom-op library is not built (no {built}): run "
                             f"`{BUILD_COMMAND}` (DIR: ONNX Runtime's headers, see csrc/ort_ops/README.md), or set "
                             f"${LIBRARY_ENV} to a built libvrwkv_ort_ops.so")
    return built


def inspect(path: PathLike) -> OpLibrary:
    """Loads the library (not into ONNX Runtime) and asks it what it implements."""
    path = Path(path)
    try:
        lib = ctypes.CDLL(str(path.resolve()))
        for name, restype in (("vrwkv_ort_ops_domain", ctypes.c_char_p), ("vrwkv_ort_ops_min_op_version", ctypes.c_int),
                              ("vrwkv_ort_ops_max_op_version", ctypes.c_int), ("vrwkv_ort_ops_providers", ctypes.c_char_p)):
            getattr(lib, name).restype = restype
            getattr(lib, name).argtypes = []
    except (OSError, AttributeError) as e:
        raise CustomOpsError(f"{path}: not a vrwkv ONNX Runtime custom-op library ({e})") from None
    return OpLibrary(path, lib.vrwkv_ort_ops_domain().decode(), lib.vrwkv_ort_ops_min_op_version(),
                     lib.vrwkv_ort_ops_max_op_version(), tuple(lib.vrwkv_ort_ops_providers().decode().split(",")))


def check_version(lib: OpLibrary, version: int, where: str = "this export") -> None:
    if not lib.implements(DOMAIN, version):
        raise CustomOpsError(f"{where} needs {DOMAIN} op version {version}, but {lib.path} implements "
                             f"{lib.versions()}; rebuild the library from the vrwkv_edge that wrote the export "
                             f"(`{BUILD_COMMAND}`) or re-export the model with this one")


def register_for_artefact(session_options, meta: dict, library: Optional[PathLike] = None,
                          where: str = "this export") -> Optional[OpLibrary]:
    """Registers the custom-op library on ``session_options`` (an ``onnxruntime.SessionOptions``) when the
    export's metadata says the custom flavour; returns the library, or None for a standard-flavour export.
    Raises :class:`CustomOpsError` for a missing library or a version mismatch (before ONNX Runtime sees
    either)."""
    version = required_op_version(meta)
    if version is None:
        return None
    lib = inspect(library_path(library))
    check_version(lib, version, where)
    session_options.register_custom_ops_library(str(lib.path))
    return lib
