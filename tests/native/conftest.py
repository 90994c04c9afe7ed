"""Fixtures of the native-kernel tests: the kernels' C ABI library (emulated CUDA, C++ CPU, scalar reference),
the built torch extension, and seeded random WKV inputs covering the edge cases the kernels must handle."""
from __future__ import annotations

import pytest
import torch


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: longer native-kernel checks (CI runs them)")


@pytest.fixture(scope="session")
def capi():
    from tests.native.capi import build_capi
    return build_capi()


@pytest.fixture(scope="session")
def native():
    """The built torch extension, loaded and registered (builds it into the cache on first use, ~1 min)."""
    from vrwkv_edge.native import build
    build.build(cuda=False)
    import vrwkv_edge.native as native
    if native.UNAVAILABLE:                      # imported before the build in this process: load it now
        import importlib
        native = importlib.reload(native)
    native.require()
    return native


DECAYS = ("mixed", "near0", "near1", "neginf")


def log_decay(shape, kind: str, g: torch.Generator, bounded: bool) -> torch.Tensor:
    """Log decays: ``mixed`` (x060-like -exp(N(0, 1.5)), or x070's (-0.6065, 0) when ``bounded``), ``near0`` (decay
    e^-12 .. e^-6), ``near1`` (|log decay| < 1e-4), ``neginf`` (mixed with some -inf: full forgetting, RWKV-6)."""
    u = torch.rand(shape, generator=g)
    if kind == "near0":
        return -6 - 6 * u
    if kind == "near1":
        return -1e-4 * u
    w = -0.6065 * u if bounded else -torch.exp(1.5 * torch.randn(shape, generator=g))
    if kind == "neginf":
        w = torch.where(torch.rand(shape, generator=g) < 0.1, float("-inf"), w)
    return w


def wkv6_inputs(B, T, H, N, decay="mixed", seed=0):
    """(r, k, v, w_log, u, state), fp32, the state non-zero."""
    g = torch.Generator().manual_seed(seed)
    r, k, v = (torch.randn(B, T, H, N, generator=g) for _ in range(3))
    k = k * 0.5
    return (r, k, v, log_decay((B, T, H, N), decay, g, bounded=False), 0.5 * torch.randn(H, N, generator=g),
            0.5 * torch.randn(B, H, N, N, generator=g))


def wkv7_inputs(B, T, H, N, decay="mixed", seed=0):
    """(r, w_log, k, v, a, b, state) as an x070 model makes them (a = -kk, b = kk * iclr), fp32."""
    g = torch.Generator().manual_seed(seed)
    r, k, v, kk = (torch.randn(B, T, H, N, generator=g) for _ in range(4))
    kk = torch.nn.functional.normalize(kk, dim=-1)
    iclr = torch.rand(B, T, H, N, generator=g)
    w = log_decay((B, T, H, N), "mixed" if decay == "neginf" else decay, g, bounded=True)
    return r, w, 0.5 * k, v, -kk, kk * iclr, 0.5 * torch.randn(B, H, N, N, generator=g)


def rel_err(ref: torch.Tensor, out: torch.Tensor) -> float:
    """max |out - ref| / max |ref| (inf when out is not finite)."""
    if not torch.isfinite(out).all():
        return float("inf")
    return ((out.double() - ref.double()).abs().max() / ref.double().abs().max().clamp_min(1e-30)).item()
