"""Fixtures of the serving tests: one small random RWKV-7 and its ONNX export, made once per session."""
import pytest

from tests.helpers import random_model


@pytest.fixture(scope="session")
def serving_model():
    # 3 layers (RWKV-7's first layer differs), 2 heads of 32: small, but every state tensor has a real shape
    return random_model("x070", n_layer=3, n_embd=64, head_size=32, vocab_size=256, seed=7)


@pytest.fixture(scope="session")
def serving_export(serving_model, tmp_path_factory):
    """The export directory of ``serving_model`` (fp32, opset 18, no embeds graphs)."""
    pytest.importorskip("onnxruntime")
    from vrwkv_edge.export import export_model  # needs onnx: only tests marked 'export' use this fixture

    return export_model(serving_model, tmp_path_factory.mktemp("export") / "rwkv7", embeds=False, progress=False)
