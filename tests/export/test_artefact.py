"""The exported directory as an artefact: atomic writing, broken artefacts, the CLI."""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.helpers import TINY  # noqa: E402
from vrwkv_edge.export import ArtefactError  # noqa: E402
from vrwkv_edge.export import artefact as artefact_mod  # noqa: E402
from vrwkv_edge.export import export_model, load_onnx_model, read_metadata
from vrwkv_edge.export.cli import add_export_cli, main  # noqa: E402
from vrwkv_edge.protocol import LanguageModel, VisionLanguageModel  # noqa: E402
from vrwkv_edge.runtime.artefact import verify_hashes  # noqa: E402

TESTDATA = TINY / "derived"
CKPT = TESTDATA / "tiny-rwkv-6v0-1m-FP32.pth"


pytestmark = [pytest.mark.usefixtures("quiet_torch"), pytest.mark.export]      # one thread, no autograd (conftest)


@pytest.fixture(scope="module")
def good_dir(tmp_path_factory):
    if not CKPT.exists():
        pytest.fail(f"test data missing (../shared/testdata must sit beside the repository): {CKPT}")
    return export_model(str(CKPT), tmp_path_factory.mktemp("good") / "v6", embeds=False, progress=False)


@pytest.fixture
def copy_dir(good_dir, tmp_path):
    d = tmp_path / "copy"
    shutil.copytree(good_dir, d)
    return d


def _meta(d: Path) -> dict:
    return json.loads((d / "metadata.json").read_text())


def _write_meta(d: Path, meta: dict) -> None:
    (d / "metadata.json").write_text(json.dumps(meta, indent=2))


# ---- writing ---------------------------------------------------------------------------------------------
def test_good_directory_loads_and_verifies(good_dir):
    meta = read_metadata(good_dir)
    assert sorted(meta["graphs"]) == ["decode", "prefill"]
    assert set(meta["files"]) == {"decode.onnx", "prefill.onnx"}       # a byte-level model ships no vocabulary
    assert meta["tokenizer"] == {"kind": "bytes", "file": None}
    verify_hashes(good_dir)
    om = load_onnx_model(good_dir, verify=True)
    assert om.cfg.n_layer == meta["model"]["n_layer"]
    assert isinstance(om, LanguageModel) and not isinstance(om, VisionLanguageModel)   # the shared protocol


def test_failed_export_leaves_nothing(tmp_path, monkeypatch, good_dir):
    calls = []
    real = artefact_mod.assemble_graph

    def failing(model, kind, **kw):
        calls.append(kind)
        if kind == "prefill":
            raise RuntimeError("boom while building prefill")
        return real(model, kind, **kw)
    monkeypatch.setattr(artefact_mod, "assemble_graph", failing)
    out = tmp_path / "never"
    with pytest.raises(RuntimeError, match="boom"):
        export_model(str(CKPT), out, embeds=False, progress=False)
    assert calls == ["decode", "prefill"]
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []                      # no half-written temporary directory either


def test_existing_directory_needs_overwrite(tmp_path, good_dir):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="overwrite"):
        export_model(str(CKPT), out, embeds=False, progress=False)
    assert (out / "keep.txt").exists()
    export_model(str(CKPT), out, embeds=False, progress=False, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "decode.onnx").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


# ---- broken artefacts ------------------------------------------------------------------------------------
def test_missing_directory_and_metadata(tmp_path, copy_dir):
    with pytest.raises(ArtefactError, match="no such directory"):
        load_onnx_model(tmp_path / "nope")
    (copy_dir / "metadata.json").unlink()
    with pytest.raises(ArtefactError, match="metadata.json is missing"):
        load_onnx_model(copy_dir)


def test_missing_graph_file(copy_dir):
    (copy_dir / "decode.onnx").unlink()
    with pytest.raises(ArtefactError, match="decode.onnx is missing"):
        load_onnx_model(copy_dir)


def test_truncated_graph_file(copy_dir):
    p = copy_dir / "prefill.onnx"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(ArtefactError, match=r"prefill.onnx: \d+ bytes, metadata.json records"):
        load_onnx_model(copy_dir)
    meta = _meta(copy_dir)                              # with the size "fixed", the digest still tells
    meta["files"]["prefill.onnx"]["bytes"] = p.stat().st_size
    _write_meta(copy_dir, meta)
    with pytest.raises(ArtefactError, match="prefill.onnx: SHA-256 .* does not match metadata.json"):
        load_onnx_model(copy_dir)
    with pytest.raises(ArtefactError, match="prefill.onnx: ONNX Runtime cannot load"):   # and without it, ORT's
        load_onnx_model(copy_dir, verify=False)                                          # error is wrapped


def test_invalid_json_metadata(copy_dir):
    text = (copy_dir / "metadata.json").read_text()
    (copy_dir / "metadata.json").write_text(text[:-20])
    with pytest.raises(ArtefactError, match=r"metadata.json: invalid JSON at line \d+"):
        load_onnx_model(copy_dir)


@pytest.mark.parametrize("edit, pattern", [
    (lambda m: m["model"].pop("n_layer"), r"model: missing key 'n_layer'"),
    (lambda m: m["model"].__setitem__("n_layer", "12"), r"model.n_layer: must be integer, got str"),
    (lambda m: m.__setitem__("format", "something-else"), r"not a vrwkv_edge ONNX export"),
    (lambda m: m.__setitem__("format_version", 99), r"format_version 99 is newer"),
    (lambda m: m.__setitem__("dtype", "int4"), r'dtype: must be one of \["fp32", "fp16"\], got "int4"'),
    (lambda m: m["model"].__setitem__("n_embd", 96), r"n_head|model sizes|do not match"),
    (lambda m: m["state"].__setitem__("inputs", m["state"]["inputs"][:-1]), r"state.inputs"),
    (lambda m: m["graphs"].pop("decode"), r"graphs.decode is missing"),
])
def test_edited_metadata_is_refused(copy_dir, edit, pattern):
    meta = _meta(copy_dir)
    edit(meta)
    _write_meta(copy_dir, meta)
    with pytest.raises(ArtefactError, match=pattern):
        load_onnx_model(copy_dir)


def test_metadata_inconsistent_with_the_graphs(copy_dir):
    # a self-consistent edit that contradicts what the graphs carry: the embedded copy catches it
    original = _meta(copy_dir)
    meta = _meta(copy_dir)
    meta["prompt_template"] = "something-else"
    _write_meta(copy_dir, meta)
    with pytest.raises(ArtefactError, match=r"does not match the metadata embedded in decode.onnx: prompt_template"):
        load_onnx_model(copy_dir)
    # a consistent change of the model shape (one layer fewer): sizes fit the metadata but not the graph
    meta = original
    n = meta["model"]["n_layer"] - 1
    meta["model"]["n_layer"] = n
    meta["state"]["inputs"] = meta["state"]["inputs"][:3 * n]
    meta["state"]["outputs"] = meta["state"]["outputs"][:3 * n]
    for g in meta["graphs"].values():
        g["inputs"] = g["inputs"][:1 + 3 * n]
        g["outputs"] = g["outputs"][:1 + 3 * n]
    _write_meta(copy_dir, meta)
    with pytest.raises(ArtefactError, match=r"does not match the metadata embedded"):
        load_onnx_model(copy_dir)


def test_graph_swapped_for_another(copy_dir):
    shutil.copyfile(copy_dir / "prefill.onnx", copy_dir / "decode.onnx")
    meta = _meta(copy_dir)
    meta["files"]["decode.onnx"] = meta["files"]["prefill.onnx"]
    _write_meta(copy_dir, meta)
    with pytest.raises(ArtefactError, match=r"holds the 'prefill' graph"):
        load_onnx_model(copy_dir)


def test_corrupted_bytes_fail_the_hash_check(copy_dir):
    p = copy_dir / "decode.onnx"
    data = bytearray(p.read_bytes())
    data[-100] ^= 1                                                  # same size, one bit flipped
    p.write_bytes(bytes(data))
    with pytest.raises(ArtefactError, match="decode.onnx: SHA-256"):
        verify_hashes(copy_dir)
    with pytest.raises(ArtefactError, match="SHA-256"):
        load_onnx_model(copy_dir, verify=True)


def test_missing_embeds_graph_is_a_clear_error(good_dir):
    om = load_onnx_model(good_dir)
    with pytest.raises(ArtefactError, match="no decode_embeds graph"):
        om.step(None, None, inputs_embeds=torch.zeros(1, om.cfg.n_embd))


# ---- CLI -------------------------------------------------------------------------------------------------
def test_add_export_cli_registers_subcommands():
    parser = argparse.ArgumentParser(prog="vrwkv-edge")
    sub = parser.add_subparsers(dest="command")
    add_export_cli(sub)
    a = parser.parse_args(["export", "--model", "m.pth", "--out", "d", "--dtype", "fp16", "--validate"])
    assert a.command == "export" and a.dtype == "fp16" and a.validate and a.quantize is None and callable(a.func)
    a = parser.parse_args(["export", "--model", "m.pth", "--out", "d", "--quantize", "int8"])
    assert a.quantize == "int8" and a.wkv == "standard"
    a = parser.parse_args(["export", "--model", "m.pth", "--out", "d", "--quantize", "int4", "--wkv", "custom"])
    assert a.quantize == "int4" and a.wkv == "custom"
    for bad in (["--wkv", "fused"], ["--quantize", "int3"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["export", "--model", "m.pth", "--out", "d", *bad])
    a = parser.parse_args(["validate", "d", "--model", "m.pth", "--tolerance", "0.5"])
    assert a.command == "validate" and a.dir == "d" and a.tolerance == 0.5 and callable(a.func)


def test_cli_export_validate_and_exit_codes(tmp_path, good_dir, capsys):
    out = tmp_path / "cli"
    assert main(["export", "--model", str(CKPT), "--out", str(out), "--no-embeds", "--quiet", "--validate",
                 "--n-tokens", "16"]) == 0
    assert "[PASS]" in capsys.readouterr().out
    assert main(["validate", str(out), "--model", str(CKPT), "--n-tokens", "8"]) == 0
    # beyond tolerance -> exit 1
    assert main(["validate", str(out), "--model", str(CKPT), "--n-tokens", "8", "--tolerance", "0"]) == 1
    assert "[FAIL]" in capsys.readouterr().out
    # broken inputs -> exit 2 with a message
    assert main(["validate", str(tmp_path / "missing"), "--model", str(CKPT)]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert main(["validate", str(out), "--model", str(tmp_path / "missing.pth")]) == 2
    assert main(["export", "--model", str(CKPT), "--out", str(out), "--quiet"]) == 2      # exists
    assert "overwrite" in capsys.readouterr().err
    # a checkpoint of another model
    other = TESTDATA / "tiny-rwkv-7v0-834K-FP32.pth"
    if other.exists():
        assert main(["validate", str(out), "--model", str(other), "--n-tokens", "4"]) == 2
        assert "is not the model exported" in capsys.readouterr().err


def test_external_data_for_big_graphs(tmp_path, good_dir, monkeypatch):
    # the >2 GiB path, exercised on a tiny model by lowering the threshold
    monkeypatch.setattr(artefact_mod, "EXTERNAL_DATA_THRESHOLD", 1000)
    d = export_model(str(CKPT), tmp_path / "ext", embeds=False, progress=False)
    meta = read_metadata(d)
    assert {"decode.onnx.data", "prefill.onnx.data"} <= set(meta["files"])
    assert (d / "decode.onnx").stat().st_size < 300_000 < 1_000_000 < (d / "decode.onnx.data").stat().st_size
    import onnx
    onnx.checker.check_model(str(d / "decode.onnx"))
    ext, ref = load_onnx_model(d), load_onnx_model(good_dir)
    ids = torch.tensor([[3, 1, 4, 1, 5]])
    l1, s1 = ext.forward(ids, None, last_only=True)
    l2, s2 = ref.forward(ids, None, last_only=True)
    assert torch.equal(l1, l2)
    (d / "decode.onnx.data").unlink()
    with pytest.raises(ArtefactError, match="decode.onnx.data is missing"):
        load_onnx_model(d)
