"""Helpers shared by the tests: where the test data is, seeded random models, one comparison function."""
import importlib.util
from pathlib import Path
from typing import Optional

import torch

from vrwkv_edge.config import RWKVConfig
from vrwkv_edge.models import build_model

REPO = Path(__file__).resolve().parents[1]
TESTDATA = REPO.parent / "shared" / "testdata"          # ../shared beside the repository (CI has it)
IMAGES = TESTDATA / "images"
TINY = TESTDATA / "rwkv-cpp-tiny"
TINY_MODELS = {  # checkpoint -> expected logits after tokens 34, 105, 110 (rwkv.cpp fixtures)
    "x060": (TINY / "derived" / "tiny-rwkv-6v0-1m-FP32.pth", TINY / "expected-logits-6v0-1m.bin"),
    "x070": (TINY / "derived" / "tiny-rwkv-7v0-834K-FP32.pth", TINY / "expected-logits-7v0-834K.bin"),
}


def random_model(version="x070", n_layer=2, n_embd=128, head_size=64, vocab_size=512, dim_ffn=None, seed=0,
                 lora=None):
    lora = lora or ({"w": 32, "a": 32, "v": 16, "g": 32} if version == "x070" else {"mix": 16, "decay": 32})
    cfg = RWKVConfig(version, n_layer, n_embd, head_size, vocab_size, dim_ffn or 4 * n_embd, lora)
    return build_model(cfg).init_random_(seed).eval()


def max_abs(a, b) -> float:
    return (a.float() - b.float()).abs().max().item()


def assert_close(name, ref, out, atol):
    assert ref.shape == out.shape, f"{name}: shape {tuple(out.shape)} != reference {tuple(ref.shape)}"
    assert torch.isfinite(out).all(), f"{name}: non-finite values"
    err = max_abs(ref, out)
    assert err <= atol, f"{name}: max-abs error {err:.3g} > {atol:g}"


# Optional extras (setup.py) and the modules that make them; a test that needs one is marked with its name.
EXTRA_MODULES = {"export": ("onnx", "onnxscript", "onnxruntime"), "vision": ("transformers",),
                 "bench": ("matplotlib", "psutil"), "reference": ("rwkv",), "serving": ("tritonclient",)}


def missing_extra(extra: str) -> Optional[str]:
    """Why tests marked ``extra`` cannot run here, or None when every module of the extra imports."""
    missing = [m for m in EXTRA_MODULES[extra] if importlib.util.find_spec(m) is None]
    if not missing:
        return None
    return f"needs the '{extra}' extra (pip install -e '.[{extra}]'): {', '.join(missing)} not installed"


def require_extra(extra: str) -> None:
    """For a test module that imports an extra's modules at the top: skip it with the reason (fail in CI)."""
    import os

    import pytest
    reason = missing_extra(extra)
    if reason and os.environ.get("VRWKV_EDGE_REQUIRE_EXTRAS") == "1":
        pytest.fail(f"{reason} (VRWKV_EDGE_REQUIRE_EXTRAS=1)", pytrace=False)
    if reason:
        pytest.skip(reason, allow_module_level=True)
