"""vrwkv-chat on custom-flavour exports (``export --wkv custom``) of the rwkv.cpp tiny models: the runtime finds the
op library ($VRWKV_ORT_OPS_LIBRARY here), registers it, and its greedy tokens and logits equal those of the
standard-flavour export of the same checkpoint; a library of another op version or a missing one is refused with
a message, never a crash."""
from __future__ import annotations

import json
import shutil

import pytest

from .conftest import TINY_CKPT
from .test_errors import _edit, _fails
from .test_text import TOL, _chat_json


@pytest.fixture(scope="session")
def op_library_path():
    from tests.ort_ops.conftest import ort_include_dir
    from vrwkv_edge.native import ort_ops
    return ort_ops.build(str(ort_include_dir()), cuda=False)


@pytest.fixture(scope="session")
def custom_exports(tmp_path_factory) -> dict:
    import torch

    from vrwkv_edge.export import export_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {v: export_model(ckpt, tmp_path_factory.mktemp("custom") / v, wkv="custom", embeds=False,
                                progress=False) for v, ckpt in TINY_CKPT.items()}
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("version", ["x060", "x070"])
def test_custom_flavour_matches_standard(version, text_exports, custom_exports, op_library_path, run_chat, tmp_path,
                                         monkeypatch):
    monkeypatch.setenv("VRWKV_ORT_OPS_LIBRARY", str(op_library_path))
    (tmp_path / "s").mkdir(), (tmp_path / "c").mkdir()
    standard, standard_logits = _chat_json(run_chat, text_exports[version], tmp_path / "s")
    custom, custom_logits = _chat_json(run_chat, custom_exports[version], tmp_path / "c")
    assert custom["tokens"] == standard["tokens"]
    assert abs(custom_logits - standard_logits).max() < TOL


def test_op_library_refusals(custom_exports, op_library_path, run_chat, tmp_path, monkeypatch):
    d = tmp_path / "export"
    shutil.copytree(custom_exports["x070"], d)
    chat = lambda: run_chat("--model", d, "--prompt", "hi", check=False)  # noqa: E731
    monkeypatch.setenv("VRWKV_ORT_OPS_LIBRARY", str(tmp_path / "missing.so"))
    _fails(chat(), 2, "$VRWKV_ORT_OPS_LIBRARY", "missing.so: no such file")
    monkeypatch.setenv("VRWKV_ORT_OPS_LIBRARY", str(op_library_path))
    _edit(d, lambda m: m["wkv"].update(op_version=m["wkv"]["op_version"] + 1))
    version = json.loads((d / "metadata.json").read_text())["wkv"]["op_version"]
    _fails(chat(), 2, f"this export needs vrwkv op version {version}, but {op_library_path} implements vrwkv version "
                      f"{version - 1}")
