"""Shared test fixtures.  Test data lives in ../shared/testdata beside the repository root (CI has it)."""
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TESTDATA = REPO.parent / "shared" / "testdata"
TINY = TESTDATA / "rwkv-cpp-tiny"
TINY_MODELS = {  # checkpoint -> expected logits after tokens 34, 105, 110 (rwkv.cpp fixtures)
    "x060": (TINY / "derived" / "tiny-rwkv-6v0-1m-FP32.pth", TINY / "expected-logits-6v0-1m.bin"),
    "x070": (TINY / "derived" / "tiny-rwkv-7v0-834K-FP32.pth", TINY / "expected-logits-7v0-834K.bin"),
}


def pytest_configure(config):
    torch.set_num_threads(max(1, torch.get_num_threads()))


@pytest.fixture(scope="session")
def testdata() -> Path:
    if not TESTDATA.is_dir():
        pytest.fail(f"test data not found at {TESTDATA}: ../shared/testdata must sit beside the repository")
    return TESTDATA


@pytest.fixture(autouse=True)
def _restore_grad_mode():
    """Commands and benchmarks switch autograd off for their process; keep that from leaking between tests."""
    enabled = torch.is_grad_enabled()
    yield
    torch.set_grad_enabled(enabled)


@pytest.fixture(scope="module")
def quiet_torch():
    """One thread (tiny ops; the test machine is shared) and no autograd for a module, restored afterwards."""
    threads, grad = torch.get_num_threads(), torch.is_grad_enabled()
    torch.set_num_threads(1)
    torch.set_grad_enabled(False)
    yield
    torch.set_num_threads(threads)
    torch.set_grad_enabled(grad)
