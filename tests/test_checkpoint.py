"""Checkpoint loading: formats, the VisualRWKV prefix, and a clear error for every kind of bad file."""
import pytest
import torch

from tests.helpers import TINY_MODELS, random_model
from vrwkv_edge import load_model
from vrwkv_edge.checkpoint import CheckpointError, read_state_dict, save_checkpoint


@pytest.fixture(scope="module")
def model():
    return random_model("x070", 2, 64, 16, vocab_size=100)


def same_output(a, b):
    ids = torch.tensor([[1, 2, 3, 4]])
    return torch.equal(a.forward(ids)[0], b.forward(ids)[0])


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_round_trip(model, tmp_path, suffix):
    path = save_checkpoint(model.state_dict(), tmp_path / f"m{suffix}")
    assert not list(tmp_path.glob("*.tmp"))
    assert same_output(model, load_model(path))


def test_visualrwkv_language_model_prefix(model, tmp_path):
    sd = {f"rwkv.{k}": v for k, v in model.state_dict().items()}
    sd["proj.weight"] = torch.zeros(64, 1024)
    assert same_output(model, load_model(save_checkpoint(sd, tmp_path / "visual.pth")))


def test_squeezed_vectors_are_accepted(model, tmp_path):
    sd = {k: (v.reshape(-1) if v.shape[:2] == (1, 1) else v) for k, v in model.state_dict().items()}
    assert same_output(model, load_model(save_checkpoint(sd, tmp_path / "squeezed.pth")))


def test_bfloat16_load(testdata):
    m = load_model(TINY_MODELS["x070"][0], dtype="bf16")
    assert m.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype 'fp8'"):
        load_model(TINY_MODELS["x070"][0], dtype="fp8")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_model(tmp_path / "nope.pth")


def test_not_a_checkpoint(tmp_path):
    p = tmp_path / "notes.pth"
    p.write_text("hello, this is not a model\n")
    with pytest.raises(CheckpointError, match="notes.pth"):
        load_model(p)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pth: file is empty"):
        load_model(empty)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_file(model, tmp_path, suffix):
    path = save_checkpoint(model.state_dict(), tmp_path / f"m{suffix}")
    data = path.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=f"cut{suffix}.*(corrupt or truncated)"):
        load_model(cut)


class Evil:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_pickled_code_is_refused(tmp_path, capsys):
    p = tmp_path / "evil.pth"
    torch.save({"emb.weight": torch.zeros(2, 2), "payload": Evil()}, p)
    with pytest.raises(CheckpointError, match="evil.pth: refused to load"):
        load_model(p)
    assert "pickled code ran" not in capsys.readouterr().out


def test_not_a_dict(tmp_path):
    p = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), p)
    with pytest.raises(CheckpointError, match="tensor.pth: holds a Tensor"):
        load_model(p)


def test_unknown_layout(tmp_path):
    p = save_checkpoint({"blocks.0.att.time_mix_k": torch.zeros(1, 1, 8), "emb.weight": torch.zeros(4, 8)},
                        tmp_path / "rwkv4.pth")
    with pytest.raises(CheckpointError, match="rwkv4.pth: unknown key layout"):
        load_model(p)


def test_missing_and_unexpected_keys_are_listed(model, tmp_path):
    sd = dict(model.state_dict())
    del sd["blocks.1.att.a2"]
    sd["blocks.1.att.extra"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"missing keys \['blocks.1.att.a2'\]; unexpected keys "
                                              r"\['blocks.1.att.extra'\]"):
        load_model(save_checkpoint(sd, tmp_path / "keys.pth"))


def test_inconsistent_shapes(model, tmp_path):
    sd = dict(model.state_dict())
    sd["blocks.1.ffn.value.weight"] = torch.zeros(64, 100)
    with pytest.raises(CheckpointError, match=r"blocks.1.ffn.value.weight has shape \(64, 100\), expected \(64, 256\)"):
        load_model(save_checkpoint(sd, tmp_path / "shape.pth"))


def test_non_finite_weights(model, tmp_path):
    sd = dict(model.state_dict())
    sd["blocks.0.att.w0"] = torch.full_like(sd["blocks.0.att.w0"], float("nan"))
    with pytest.raises(CheckpointError, match=r"nan.pth: non-finite values .*blocks.0.att.w0"):
        load_model(save_checkpoint(sd, tmp_path / "nan.pth"))


def test_read_state_dict_unwraps_trainer_checkpoints(model, tmp_path):
    p = tmp_path / "wrapped.pth"
    torch.save({"state_dict": model.state_dict()}, p)
    assert set(read_state_dict(p)) == set(model.state_dict())
