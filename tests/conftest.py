"""Shared test fixtures.  Test data lives in ../shared/testdata beside the repository root (CI has it)."""
import os
from pathlib import Path

import pytest
import torch

from tests.helpers import EXTRA_MODULES, TESTDATA, missing_extra

# CI installs every extra: there a missing one is an error, never a silent skip.
REQUIRE_EXTRAS = os.environ.get("VRWKV_EDGE_REQUIRE_EXTRAS") == "1"


def pytest_runtest_setup(item):
    for extra in EXTRA_MODULES:
        if item.get_closest_marker(extra) is not None:
            reason = missing_extra(extra)
            if reason and REQUIRE_EXTRAS:
                pytest.fail(f"{reason} (VRWKV_EDGE_REQUIRE_EXTRAS=1)", pytrace=False)
            if reason:
                pytest.skip(reason)


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
