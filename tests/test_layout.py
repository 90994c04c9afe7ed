"""The package's shape: no import circle, no deferred package-internal import, old import paths still work for
one release (with a warning), and a built wheel holds every file the package needs at run time."""
import ast
import importlib
import os
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import pytest

from tests.helpers import REPO

# Installed as vrwkv_edge.<name> from these top-level folders (setup.py's package_dir).
PACKAGE_ROOTS = {"vrwkv_edge": REPO / "vrwkv_edge", "vrwkv_edge.export": REPO / "export",
                 "vrwkv_edge.training": REPO / "training"}


def package_modules() -> dict[str, Path]:
    mods = {}
    for prefix, root in PACKAGE_ROOTS.items():
        for path in root.rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join([prefix] + parts)
            if prefix == "vrwkv_edge" and name.split(".")[1:2] in (["export"], ["training"]):
                continue
            mods[name] = path
    return mods


def imported_modules(node, module: str, is_package: bool, known) -> list[str]:
    """The package modules an import statement binds (``from a import b`` is ``a.b`` when that is a module)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in known]
    base = module if is_package else module.rsplit(".", 1)[0]
    if node.level:
        base = ".".join(base.split(".")[: len(base.split(".")) - node.level + 1])
        target = f"{base}.{node.module}" if node.module else base
    else:
        target = node.module or ""
    out = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known]
    return out or ([target] if target in known else [])


def import_graph():
    mods = package_modules()
    edges, deferred = {m: set() for m in mods}, []
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        in_function = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                       for n in ast.walk(f)}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                targets = imported_modules(node, name, path.name == "__init__.py", mods)
                edges[name].update(targets)
                if targets and id(node) in in_function:
                    deferred.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}")
    return edges, deferred


def find_cycle(edges: dict[str, set]) -> list[str]:
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(edges[m]):
            if state.get(n) == "open":
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        state[m] = "done"
        stack.pop()
        return []

    for m in sorted(edges):
        if m not in state and (found := visit(m)):
            return found
    return []


def test_no_import_cycle_and_no_deferred_internal_import():
    edges, deferred = import_graph()
    assert len(edges) > 60                                   # the walk really saw the package
    assert find_cycle(edges) == []
    assert deferred == [], "package-internal imports inside functions:\n" + "\n".join(deferred)


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]


@pytest.mark.parametrize("old, new, attribute", [
    ("vrwkv_edge.visual", "vrwkv_edge.visualrwkv", "question_prompt"),
    ("vrwkv_edge.visual.testing", "vrwkv_edge.visualrwkv.builders", "tiny_v7"),
    ("vrwkv_edge.vision", "vrwkv_edge.vision_rwkv", "classify"),
    ("vrwkv_edge.models.vision_rwkv", "vrwkv_edge.vision_rwkv", "load_vision_rwkv"),
    ("vrwkv_edge.export.ort_backend", "vrwkv_edge.runtime.ort", "load_onnx_model"),
])
def test_old_import_paths_warn_and_alias_the_new_modules(old, new, attribute):
    code = (f"import importlib, warnings\n"
            f"with warnings.catch_warnings(record=True) as caught:\n"
            f"    warnings.simplefilter('always')\n"
            f"    old = importlib.import_module({old!r})\n"
            f"new = importlib.import_module({new!r})\n"
            f"homes = [str(w.message).rsplit(' ', 1)[-1] for w in caught if w.category is DeprecationWarning]\n"
            f"assert any({new!r}.startswith(h) for h in homes), homes\n"
            f"assert old is new and getattr(old, {attribute!r}) is getattr(new, {attribute!r})\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(REPO)], check=True, cwd=out, capture_output=True, text=True)
    (whl,) = out.glob("vrwkv_edge-*.whl")
    return whl


def test_wheel_holds_every_module_and_data_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for prefix, root in PACKAGE_ROOTS.items():
        for path in root.rglob("*.py"):
            installed = Path(*prefix.split(".")) / path.relative_to(root)
            assert installed.as_posix() in names, f"{installed} missing from {wheel.name}"
    for path in (REPO / "vrwkv_edge" / "data").iterdir():
        assert f"vrwkv_edge/data/{path.name}" in names, f"data file {path.name} missing from {wheel.name}"
    assert not any(n.startswith(("tests/", "benchmarks/", "export/", "training/")) for n in names)
    for source in ("torch/binding.cpp", "include/vrwkv/params.h", "kernels/wkv7/wkv7_cuda.cu", "CMakeLists.txt"):
        assert f"vrwkv_edge/native/csrc/{source}" in names      # build-native works after a normal install
    assert "vrwkv_edge/data/metadata.schema.json" in names


@pytest.mark.slow
def test_installed_wheel_runs_the_demo(wheel, tmp_path):
    """The main job after a normal (non-editable) install: the wheel alone, away from the source tree."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, text=True)
    env = {**os.environ, "PYTHONPATH": str(target)}
    run = subprocess.run([sys.executable, "-c", "import sys, vrwkv_edge.cli as c; print(c.__file__, file=sys.stderr);"
                          "sys.exit(c.main(['demo', '--no-onnx', '--images', '1']))"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert str(target) in run.stderr                         # the installed copy ran, not the working tree
    assert "pytorch: " in run.stderr and "tokens/s decode" in run.stderr
