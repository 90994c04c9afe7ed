"""A missing __syncthreads cannot pass by luck: the WKV-7 CUDA kernel built with one barrier removed
(-DVRWKV_TEST_DROP_BARRIER) must fail the comparison in every fiber schedule, and ThreadSanitizer must report the
race in thread mode, while the intact kernel passes every schedule and is race-free under ThreadSanitizer."""
from __future__ import annotations

import subprocess

import pytest

from tests.native.capi import SCHEDULES, build_race_check


def run(exe, schedule: str, seed: int = 0) -> subprocess.CompletedProcess:
    return subprocess.run([str(exe), str(SCHEDULES[schedule]), str(seed)], capture_output=True, text=True, timeout=120)


FIBERS = ["fibers-forward", "fibers-reverse", "fibers-shuffled"]


def test_intact_kernel_passes_every_schedule():
    exe = build_race_check()
    for schedule in FIBERS + ["threads"]:
        res = run(exe, schedule, seed=1)
        assert res.returncode == 0, res.stdout + res.stderr


def test_dropped_barrier_is_caught_by_every_fiber_schedule():
    exe = build_race_check("-DVRWKV_TEST_DROP_BARRIER")
    for schedule in FIBERS:
        res = run(exe, schedule, seed=1)
        assert res.returncode == 1 and "MISMATCH" in res.stdout, f"{schedule}: {res.stdout}{res.stderr}"


@pytest.mark.slow
def test_thread_sanitizer():
    """Thread mode (one OS thread per CUDA thread, std::barrier) under -fsanitize=thread."""
    clean = run(build_race_check("-fsanitize=thread"), "threads")
    assert clean.returncode == 0 and "ThreadSanitizer" not in clean.stderr, clean.stderr[-3000:]
    racy = run(build_race_check("-fsanitize=thread", "-DVRWKV_TEST_DROP_BARRIER"), "threads")
    assert racy.returncode != 0 and "WARNING: ThreadSanitizer: data race" in racy.stderr
    assert "wkv7_cuda.cu" in racy.stderr                    # reported on the kernel's shared-memory lines
