"""The export metadata schema: every export validates, hostile metadata is refused naming the JSON path, and
the package's small validator agrees with the reference ``jsonschema`` implementation (Draft 2020-12)."""
import copy
import json
import random

import pytest

from tests.helpers import random_model
from vrwkv_edge.runtime.schema import SCHEMA_FILE, SchemaError, metadata_schema, validate

pytestmark = pytest.mark.export


@pytest.fixture(scope="module")
def metadata(tmp_path_factory):
    from vrwkv_edge.export import export_model
    model = random_model("x070", n_layer=1, n_embd=64, head_size=32, vocab_size=256, seed=2)
    d = export_model(model, tmp_path_factory.mktemp("m") / "e", embeds=False, progress=False)
    return json.loads((d / "metadata.json").read_text())


def test_the_schema_ships_in_the_package_and_an_export_follows_it(metadata):
    assert SCHEMA_FILE.is_file() and SCHEMA_FILE.parent.name == "data"
    validate(metadata)
    assert metadata["format_version"] == 2
    assert metadata["tokenizer"] == {"kind": "bytes", "file": None}      # a 256-row model is byte-level


def _edit(meta, path, value):
    doc = copy.deepcopy(meta)
    *parents, last = path.split(".")
    cur = doc
    for p in parents:
        cur = cur[p]
    if value is KeyError:
        del cur[last]
    else:
        cur[last] = value
    return doc


BROKEN = [
    ("model.n_layer", 10 ** 8, r"model.n_layer: 100000000 is more than the maximum 1024"),
    ("model.n_layer", True, r"model.n_layer: must be integer"),
    ("model.n_embd", -4, r"model.n_embd: -4 is less than the minimum 1"),
    ("model.vocab_size", KeyError, r"model: missing key 'vocab_size'"),
    ("opset", 21, r"opset: must be one of"),
    ("colour", "blue", r"colour: unknown key"),
    ("tokenizer.kind", "sentencepiece", r"tokenizer.kind: must be one of"),
    ("tokenizer.file", "../../etc/passwd", r"tokenizer.file: matches none"),
    ("files", {"decode.onnx": {"bytes": 1, "sha256": "xyz"}}, r"files.decode.onnx.sha256"),
    ("state.inputs", ["ok"] * 5000, r"state.inputs: 5000 items"),
    ("graphs", {"decoder": {"file": "d.onnx", "inputs": [], "outputs": []}}, r"graphs.decoder \(key\)"),
    ("state.shapes.wkv", ["batch", "heads?", 3], r"state.shapes.wkv\[1\]"),
]


@pytest.mark.parametrize("path, value, match", BROKEN)
def test_broken_metadata_is_refused_naming_the_path(metadata, path, value, match):
    with pytest.raises(SchemaError, match=match):
        validate(_edit(metadata, path, value))


def test_agrees_with_the_reference_implementation(metadata):
    jsonschema = pytest.importorskip("jsonschema")
    reference = jsonschema.Draft202012Validator(metadata_schema())
    jsonschema.Draft202012Validator.check_schema(metadata_schema())
    rng = random.Random(0)
    docs = [metadata] + [_edit(metadata, p, v) for p, v, _ in BROKEN]
    values = [None, 0, -1, 1.5, True, "x", [], {}, [1], {"a": 1}, 10 ** 20, "a" * 300]
    for _ in range(300):                       # random one-value edits of valid metadata
        path = rng.choice(["opset", "dtype", "batch", "chunk_size", "model.n_head", "model.kind", "model.source",
                           "tokenizer", "tokenizer.file", "quantize", "state.dtype", "files", "prompt_template"])
        docs.append(_edit(metadata, path, rng.choice(values)))
    for doc in docs:
        ours = True
        try:
            validate(doc)
        except SchemaError:
            ours = False
        assert ours == reference.is_valid(doc), json.dumps(doc)[:300]


def test_format_1_metadata_is_upgraded(metadata):
    from vrwkv_edge.runtime.artefact import check_metadata
    old = copy.deepcopy(metadata)
    old["format_version"] = 1
    old["tokenizer"] = "rwkv_vocab_v20230424.txt"              # what 0.1 wrote, even for byte-level models
    del old["model"]["source_sha256"]
    new = check_metadata(old)
    assert new["format_version"] == 2 and new["tokenizer"] == {"kind": "bytes", "file": None}
