"""The on-request build: nothing is built at import, a missing build says how to make it, and the cache key
follows the kernel sources only."""
from __future__ import annotations

import os
import subprocess
import sys

from vrwkv_edge.native import build


def test_missing_build_explains_itself(tmp_path):
    env = {**os.environ, "VRWKV_EDGE_NATIVE_DIR": str(tmp_path)}
    code = ("import vrwkv_edge.native as n, torch; print(n.UNAVAILABLE); print(n.available()); "
            "print(hasattr(torch.ops.vrwkv, 'wkv7'))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    reason, available, loaded = out.stdout.strip().splitlines()
    assert "not built" in reason and "vrwkv-edge build-native" in reason
    assert available == "False" and loaded == "False"
    assert not any(tmp_path.iterdir())                       # importing built nothing


def test_print_path_and_key(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VRWKV_EDGE_NATIVE_DIR", str(tmp_path))
    assert build.main(["--print-path", "--no-cuda"]) == 0
    path = capsys.readouterr().out.strip()
    assert path == str(build.library_path(cuda=False)) and path.startswith(str(tmp_path))
    assert build.build_key(False) == build.build_key(False) != build.build_key(True)
    assert (build.csrc_dir() / "include" / "vrwkv" / "params.h").is_file()
