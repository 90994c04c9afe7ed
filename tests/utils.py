"""Helpers shared by the tests: seeded random models and one comparison function."""
import torch

from vrwkv_edge.config import RWKVConfig
from vrwkv_edge.models import build_model


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
