"""The chunked WKV forms against their per-token references, on random inputs."""
import pytest
import torch

from tests.helpers import assert_close
from vrwkv_edge.ops.wkv6 import wkv6_chunked, wkv6_ref
from vrwkv_edge.ops.wkv7 import MAX_ABS_LOG_DECAY, unit_lower_inverse, wkv7_chunked, wkv7_ref

SHAPES = [(1, 1, 1, 8), (2, 15, 3, 8), (1, 16, 2, 64), (2, 33, 2, 32), (1, 130, 1, 64)]


def wkv6_inputs(B, T, H, N, seed, extreme=False):
    g = torch.Generator().manual_seed(seed)
    r, k, v = (torch.randn(B, T, H, N, generator=g) for _ in range(3))
    w_hat = torch.randn(B, T, H, N, generator=g) * (4 if extreme else 1.5)
    if extreme:
        w_hat[:, ::5, :, ::3] = 100.0            # exp(w_hat) = inf: full forgetting, log decay -inf
    return r, k, v, -torch.exp(w_hat), torch.randn(H, N, generator=g), torch.randn(B, H, N, N, generator=g)


def wkv7_inputs(B, T, H, N, seed):
    g = torch.Generator().manual_seed(seed)
    r, k, v = (torch.randn(B, T, H, N, generator=g) for _ in range(3))
    w_log = -MAX_ABS_LOG_DECAY * torch.sigmoid(3 * torch.randn(B, T, H, N, generator=g))
    kk = torch.nn.functional.normalize(torch.randn(B, T, H, N, generator=g), dim=-1)
    iclr = torch.rand(B, T, H, N, generator=g)
    return r, w_log, k, v, -kk, kk * iclr, torch.randn(B, H, N, N, generator=g)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}-T{}-H{}-N{}".format(*s))
@pytest.mark.parametrize("chunk", [4, 16])
def test_wkv6_chunked_matches_reference(shape, chunk):
    args = wkv6_inputs(*shape, seed=sum(shape))
    y_ref, s_ref = wkv6_ref(*args)
    y, s = wkv6_chunked(*args, chunk_size=chunk)
    assert_close("y", y_ref, y, 2e-5 * max(1, y_ref.abs().max().item()))
    assert_close("state", s_ref, s, 2e-5 * max(1, s_ref.abs().max().item()))


@pytest.mark.parametrize("T", [1, 17, 64])
def test_wkv6_chunked_handles_infinite_decay(T):
    args = wkv6_inputs(2, T, 2, 16, seed=T, extreme=True)
    assert torch.isinf(args[3]).any()
    y_ref, s_ref = wkv6_ref(*args)
    y, s = wkv6_chunked(*args)
    assert_close("y", y_ref, y, 2e-5 * max(1, y_ref.abs().max().item()))
    assert_close("state", s_ref, s, 2e-5 * max(1, s_ref.abs().max().item()))


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}-T{}-H{}-N{}".format(*s))
@pytest.mark.parametrize("chunk", [8, 16, 32])
def test_wkv7_chunked_matches_reference(shape, chunk):
    args = wkv7_inputs(*shape, seed=sum(shape))
    y_ref, s_ref = wkv7_ref(*args)
    y, s = wkv7_chunked(*args, chunk_size=chunk)
    assert_close("y", y_ref, y, 2e-5 * max(1, y_ref.abs().max().item()))
    assert_close("state", s_ref, s, 2e-5 * max(1, s_ref.abs().max().item()))


def test_wkv_does_not_modify_inputs():
    args = wkv7_inputs(1, 20, 2, 8, seed=1)
    copies = [a.clone() for a in args]
    wkv7_chunked(*args)
    wkv7_ref(*args)
    assert all(torch.equal(a, c) for a, c in zip(args, copies))
    args6 = wkv6_inputs(1, 20, 2, 8, seed=1)
    copies6 = [a.clone() for a in args6]
    wkv6_chunked(*args6)
    assert all(torch.equal(a, c) for a, c in zip(args6, copies6))


@pytest.mark.parametrize("L", [1, 2, 5, 16, 32])
def test_unit_lower_inverse(L):
    A = torch.randn(3, L, L, dtype=torch.float64).tril(-1)
    inv = unit_lower_inverse(A)
    torch.testing.assert_close(inv @ (torch.eye(L, dtype=torch.float64) - A), torch.eye(L, dtype=torch.float64).expand(3, L, L))
