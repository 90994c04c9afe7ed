"""The metadata's ``wkv`` section (issue #12, custom-op flavour) and int4 quantization record: both flavours
round-trip through the schema and the checks, exports written before the section existed load as standard, and
an artefact whose ``vrwkv`` op version this package does not implement is refused naming both versions."""
import copy
import json

import pytest

from tests.helpers import random_model
from vrwkv_edge.ops.custom_op_contract import DOMAIN, OP_VERSION
from vrwkv_edge.runtime.artefact import ArtefactError, artefact_wkv, check_metadata, wkv_metadata

pytestmark = pytest.mark.export


def _metadata(wkv="standard", quantize=None) -> dict:
    from vrwkv_edge.export.artefact import build_metadata

    model = random_model("x070", n_layer=1, n_embd=64, head_size=32, vocab_size=256, seed=2)
    meta = build_metadata(model.cfg, dtype="fp32", quantize=quantize, opset=18, chunk_size=16,
                          graphs=["decode", "prefill"], tokenizer={"kind": "bytes", "file": None},
                          prompt_template="raw", source={"file": None}, parameters=model.num_parameters(),
                          wkv=wkv)
    meta["files"] = {"decode.onnx": {"bytes": 1, "sha256": "0" * 64}}
    return json.loads(json.dumps(meta))                     # what a reader gets back from metadata.json


@pytest.mark.parametrize("flavour", ["standard", "custom"])
def test_both_flavours_round_trip(flavour):
    meta = check_metadata(_metadata(flavour))
    assert meta["wkv"] == wkv_metadata(flavour) == artefact_wkv(meta)
    if flavour == "custom":
        assert meta["wkv"] == {"flavour": "custom", "domain": DOMAIN, "op_version": OP_VERSION}
    else:
        assert meta["wkv"] == {"flavour": "standard", "domain": None, "op_version": None}


@pytest.mark.parametrize("version", [1, 2])
def test_metadata_without_wkv_loads_as_standard(version):
    old = _metadata("standard")
    del old["wkv"]
    if version == 1:                                     # what vrwkv_edge 0.1 wrote
        old["format_version"] = 1
        old["tokenizer"] = "rwkv_vocab_v20230424.txt"
        del old["model"]["source_sha256"]
    meta = check_metadata(old)
    assert "wkv" not in meta and artefact_wkv(meta) == wkv_metadata("standard")


@pytest.mark.parametrize("other", [OP_VERSION + 1, OP_VERSION + 41])
def test_an_op_version_this_package_does_not_implement_is_refused(other):
    meta = _metadata("custom")
    meta["wkv"]["op_version"] = other
    with pytest.raises(ArtefactError, match=rf"wkv.op_version {other}: .* version {other}, .* implements "
                                            rf"{DOMAIN} version {OP_VERSION}"):
        check_metadata(meta, "DIR/metadata.json")


@pytest.mark.parametrize("wkv, match", [
    ({"flavour": "custom", "domain": None, "op_version": None}, r"wkv .* is not a WKV flavour"),
    ({"flavour": "standard", "domain": DOMAIN, "op_version": OP_VERSION}, r"wkv .* is not a WKV flavour"),
    ({"flavour": "fused", "domain": DOMAIN, "op_version": OP_VERSION}, r"wkv.flavour: must be one of"),
    ({"flavour": "custom", "domain": "other", "op_version": OP_VERSION}, r"wkv.domain"),
    ({"flavour": "custom", "domain": DOMAIN}, r"wkv: missing key 'op_version'"),
])
def test_inconsistent_wkv_sections_are_refused(wkv, match):
    meta = _metadata("custom")
    meta["wkv"] = wkv
    with pytest.raises(ArtefactError, match=match):
        check_metadata(meta)


def test_int4_is_recorded_and_checked():
    from vrwkv_edge.export.artefact import INT4_BLOCK_SIZE

    meta = check_metadata(_metadata("custom", quantize="int4"))
    q = meta["quantization"]
    assert meta["quantize"] == "int4" and meta["precision"]["weights"] == "int4"
    assert q["precision"] == "int4" and q["bits"] == 4 and q["block_size"] == INT4_BLOCK_SIZE == 32
    assert q["symmetric"] is False and q["accuracy_level"] == 4 and "MatMulNBits" in q["node"]
    assert all(meta["precision"][k] == "float32" for k in ("state", "wkv", "decay", "norms"))
    broken = copy.deepcopy(meta)
    broken["quantization"]["precision"] = "int8"
    with pytest.raises(ArtefactError, match=r"quantize 'int4' needs dtype fp32 and a matching"):
        check_metadata(broken)
    broken = copy.deepcopy(meta)
    broken["quantization"] = None
    with pytest.raises(ArtefactError, match=r"quantize 'int4' and quantization None disagree"):
        check_metadata(broken)
