"""Training data: the exact templates and target masks, and clear errors (file, record, id) for bad records,
or skipping and counting them."""
import json

import pytest

from tests.training.common import config, dataset, tiny_model, two_image_record, write_data
from vrwkv_edge.cli import main
from vrwkv_edge.tokenizer import load_tokenizer
from vrwkv_edge.training.config import ConfigError, load_config
from vrwkv_edge.training.data import DataError
from vrwkv_edge.visualrwkv.prompts import question_prompt
from vrwkv_edge.visualrwkv.training_forward import IGNORE_INDEX, IMAGE_POSITION


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def test_templates_and_targets(tmp_path, model):
    data = write_data(tmp_path, records=2, extra=[two_image_record(tmp_path)])
    ds = dataset(model, data)
    tok = load_tokenizer()
    s = ds.samples[2]                                          # two images, two turns
    assert s.ids.count(IMAGE_POSITION) == 2 * model.tokens_per_image
    # the prompt part equals the inference template (v7: images first, one per line)
    p = question_prompt(tok, "How many shapes are there?", "v7", num_images=2)
    text_ids = [t for t in s.ids if t != IMAGE_POSITION]
    assert text_ids[: len(p.token_ids())] == p.token_ids()
    targets = [t for t in s.labels if t != IGNORE_INDEX]
    assert targets == tok.encode(" three\n\n") + tok.encode(" two\n\n")
    assert targets[-1] == 261 and [sp.start for sp in s.spans] == [s.ids.index(IMAGE_POSITION),
                                                                  s.ids.index(IMAGE_POSITION) + 16 + 1]


@pytest.mark.parametrize("record,reason", [
    ({"id": "gone", "image": "nope.png", "conversations": [{"from": "human", "value": "<image>\nQ"},
                                                            {"from": "gpt", "value": "A"}]}, "missing image"),
    ({"id": "tags", "image": "images/train/000000.png",
      "conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]}, "0 <image> tag"),
    ({"id": "speaker", "conversations": [{"from": "robot", "value": "Q"}]}, "unknown speaker"),
    ({"id": "no-answer", "conversations": [{"from": "human", "value": "Q"}]}, "nothing to learn"),
    ({"id": "long", "conversations": [{"from": "human", "value": "word " * 400},
                                      {"from": "gpt", "value": "A"}]}, "ctx_len"),
])
def test_bad_records_name_file_and_record(tmp_path, model, record, reason):
    data = write_data(tmp_path, records=2, extra=[record])
    with pytest.raises(DataError, match=reason) as e:
        dataset(model, data)
    assert str(data) in str(e.value) and "record 2" in str(e.value) and repr(record["id"]) in str(e.value)
    ds = dataset(model, data, on_bad_sample="skip")
    assert len(ds) == 2 and sum(ds.skipped.values()) == 1


def test_bad_files_and_config(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="not a JSON file"):
        dataset(tiny_model(), tmp_path / "bad.json")
    cfg = tmp_path / "run.yaml"
    cfg.write_text("out_dir: out\ntrain_data: d.json\nsteps: 3\nlearning_rate: 1\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['learning_rate'\]"):
        load_config(cfg)
    cfg.write_text("out_dir: out\ntrain_data: d.json\nsteps: many\n")
    with pytest.raises(ConfigError, match="steps must be int"):
        load_config(cfg)
    cfg.write_text(json.dumps({"out_dir": "o", "train_data": "missing.json", "steps": 1, "lm": {"n_layer": 1}}))
    assert main(["train", "--config", str(cfg), "--no-progress"]) == 2       # error: ..., exit 2, no traceback


def test_config_paths_are_relative_to_the_file(tmp_path):
    data = write_data(tmp_path, records=1)
    c = config(tmp_path, data)
    assert c.train_data == str(data)
    (tmp_path / "c.json").write_text(json.dumps({"out_dir": "o", "train_data": "train.json", "steps": 2}))
    assert load_config(tmp_path / "c.json").train_data == str(tmp_path / "train.json")


def test_synthetic_task_is_reproducible_and_well_defined(tmp_path):
    from vrwkv_edge.training.synthetic import ensure_generated
    assert ensure_generated(tmp_path / "a", 6, 2, 5, seed=3)
    assert not ensure_generated(tmp_path / "a", 6, 2, 5, seed=3)          # already there: nothing redone
    ensure_generated(tmp_path / "b", 6, 2, 5, seed=3)
    for split in ("train", "val", "test"):
        assert (tmp_path / "a" / f"{split}.json").read_text() == (tmp_path / "b" / f"{split}.json").read_text()
        assert (tmp_path / "a" / "images" / split / "000001.png").read_bytes() == \
            (tmp_path / "b" / "images" / split / "000001.png").read_bytes()
    train = json.loads((tmp_path / "a" / "train.json").read_text())
    test = json.loads((tmp_path / "a" / "test.json").read_text())
    images = {split: {(tmp_path / "a" / "images" / split / f"{n:06d}.png").read_bytes() for n in range(2)}
              for split in ("train", "val", "test")}
    assert images["train"].isdisjoint(images["test"]) and images["val"].isdisjoint(images["test"])
    assert all(len(r["conversations"]) == 2 for r in test)              # one question per test record
    for r in train + test:                                              # answers are single short words
        for turn in r["conversations"][1::2]:
            assert turn["value"] in {"zero", "one", "two", "three", "four", "yes", "no", "small", "large",
                                     "circle", "square", "triangle", "red", "green", "blue", "yellow", "purple",
                                     "orange", "top left", "top right", "bottom left", "bottom right"}
