"""The per-token overhead work of issue 12: the Python backend's prebound state gives the numbers of the
numpy-feed reference and of a bare ONNX Runtime session bit for bit, without allocating per step and without
ever overwriting a state the caller kept; the overhead instrumentation (Python ``run_stats``, the C++ app's
``--bench`` / ``--json`` split of its decode time) counts what it claims; the C++ sampler's fast loops equal
their references.  (The overhead percentages themselves are measured by benchmarks/bench_decode_backends.py.)"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import threading
import time

import numpy as np
import pytest
import torch

from tests.helpers import REPO, random_model
from vrwkv_edge.state import State


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A byte-level (256-row) random RWKV-7: no vocabulary file, so the C++ app runs it too."""
    from vrwkv_edge.export import export_model

    model = random_model("x070", n_layer=2, vocab_size=256, seed=3)
    return model, export_model(model, tmp_path_factory.mktemp("prebound") / "export", embeds=True, progress=False)


def _same_state(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.flat(), b.flat()))


class _Bare:
    """A plain InferenceSession of one graph, numpy feeds, outputs fed back: the least the backend can do."""

    def __init__(self, path, kind: str):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        self.sess = ort.InferenceSession(str(path / f"{kind}.onnx"), so, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.sess.get_inputs()]

    def __call__(self, x, state: list):
        outs = self.sess.run(None, {self.names[0]: x, **dict(zip(self.names[1:], state))})
        return outs[0], outs[1:]


@pytest.mark.export
def test_prebound_equals_feeds_and_a_bare_session(exported):
    from vrwkv_edge.runtime.ort import OrtModel

    model, path = exported
    fast = OrtModel(path, threads=1)
    ref = OrtModel(path, threads=1, io_binding=False)
    assert fast.io_binding and not ref.io_binding
    prefill, decode = _Bare(path, "prefill"), _Bare(path, "decode")
    g = torch.Generator().manual_seed(11)
    ids = torch.randint(0, model.cfg.vocab_size, (2, 9), generator=g)
    lf, sf = fast.forward(ids, None, last_only=True)
    lr, sr = ref.forward(ids, None, last_only=True)
    lb, sb = prefill(ids.numpy(), [t.numpy() for t in fast.new_state(2).flat()])
    assert torch.equal(lf, lr) and torch.equal(lf, torch.from_numpy(lb)) and _same_state(sf, sr)
    for _ in range(5):
        tok = torch.randint(0, model.cfg.vocab_size, (2,), generator=g)
        lf, sf = fast.step(tok, sf)
        lr, sr = ref.step(tok, sr)
        lb, sb = decode(tok.numpy(), sb)
        assert torch.equal(lf, lr) and torch.equal(lf, torch.from_numpy(lb))
        assert _same_state(sf, sr) and all(torch.equal(x, torch.from_numpy(y)) for x, y in zip(sf.flat(), sb))
    # the inputs_embeds entry point (a bound float buffer instead of the ids)
    emb = 0.1 * torch.randn(2, model.cfg.n_embd, generator=g)
    lf, sf2 = fast.step(None, sf, inputs_embeds=emb)
    lr, sr2 = ref.step(None, sr, inputs_embeds=emb)
    assert torch.equal(lf, lr) and _same_state(sf2, sr2)


@pytest.mark.export
def test_prebound_steady_loop_allocates_nothing_and_counts_its_runs(exported):
    from vrwkv_edge.runtime.ort import OrtModel

    _, path = exported
    om = OrtModel(path, threads=1)
    t0 = time.perf_counter()
    logits, state = om.forward(torch.tensor([[1, 2, 3]]), None, last_only=True)
    runner = om._runner(1)
    made, seen = runner.allocations, set()
    for t in range(8):
        logits, state = om.step(torch.tensor([t]), state)
        seen.add(id(state))
    wall = time.perf_counter() - t0
    assert runner.allocations == made                  # the two buffer sets, ping-ponged
    assert len(seen) == 2 and om._owns(state)
    stats = om.run_stats()
    assert stats["runs"] == 1 + 8                      # the prefill and the steps
    assert 0 < stats["run_seconds"] < wall             # only the runs are timed, inside the wall time
    assert OrtModel(path, threads=1, io_binding=False).run_stats() == {"runs": 0, "run_seconds": 0.0}


@pytest.mark.export
def test_prebound_never_overwrites_what_the_caller_kept(exported):
    from vrwkv_edge.runtime.ort import OrtModel

    model, path = exported
    fast = OrtModel(path, threads=1)
    ref = OrtModel(path, threads=1, io_binding=False)
    toks = [torch.tensor([t]) for t in (5, 6, 7, 8, 9, 10)]
    kept, kept_logits, state, ref_state = [], [], None, None
    for t in toks:
        logits, state = fast.step(t, state)
        _, ref_state = ref.step(t, ref_state)
        kept.append((state, [x.clone() for x in state.flat()]))
        kept_logits.append((logits, logits.clone()))
    for (s, copy) in kept:                             # every state handed out is still what it was
        assert all(torch.equal(x, y) for x, y in zip(s.flat(), copy))
    assert all(torch.equal(lg, copy) for lg, copy in kept_logits)
    assert _same_state(state, ref_state)
    # a view of one tensor, or one tensor pulled out of a state, also keeps that memory from being reused
    _, state = fast.step(toks[0], kept[0][0])
    view, held = state.wkv[0][0, 0], state.shift_att[1]
    view_copy, held_copy = view.clone(), held.clone()
    del state
    s = kept[1][0]
    for t in toks:
        _, s = fast.step(t, s)
    assert torch.equal(view, view_copy) and torch.equal(held, held_copy)
    # branching: the same kept state stepped twice gives the reference's answer both times
    a, _ = fast.step(toks[2], kept[3][0])
    b, _ = fast.step(toks[2], kept[3][0])
    r, _ = ref.step(toks[2], State.from_flat(kept[3][1]))
    assert torch.equal(a, r) and torch.equal(b, r)


@pytest.mark.export
def test_prebound_threads_have_their_own_buffers(exported):
    from vrwkv_edge.runtime.ort import OrtModel

    _, path = exported
    om = OrtModel(path, threads=1)
    seqs = {0: [3, 4, 5, 6], 1: [9, 8, 7, 6]}
    want = {}
    for k, toks in seqs.items():
        st = None
        for t in toks:
            lg, st = om.step(torch.tensor([t]), st)
        want[k] = lg.clone()
    got, errors = {}, []

    def work(k):
        try:
            st = None
            for t in seqs[k]:
                lg, st = om.step(torch.tensor([t]), st)
            got[k] = lg.clone()
        except Exception as e:        # reported by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in seqs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and all(torch.equal(got[k], want[k]) for k in seqs)


# ---- C++ --------------------------------------------------------------------------------------------------
def test_cpp_sampler_fast_loops_equal_references(tmp_path):
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.fail("a C++ compiler (g++) is needed to build tests/bench/sampler_check.cpp")
    exe = tmp_path / "sampler_check"
    subprocess.run([cxx, "-O2", "-std=c++17", f"-I{REPO / 'csrc' / 'runtime' / 'src'}",
                    str(REPO / "tests" / "bench" / "sampler_check.cpp"), "-o", str(exe)], check=True,
                   capture_output=True)
    r = subprocess.run([str(exe)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"ok (\d+)\n", r.stdout) and int(r.stdout.split()[1]) > 500


@pytest.fixture(scope="module", autouse=True)
def _chat_build(tmp_path_factory):
    """Builds vrwkv-chat alone with CMake (as tests/cpp_runtime does, but only this target), in the background
    from the module's first test on, so that it overlaps the export."""
    if shutil.which("cmake") is None:
        pytest.fail("cmake is not installed (apt-get install cmake ninja-build g++ libjpeg-dev libpng-dev)")
    root = tmp_path_factory.mktemp("chat")
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    inc = os.environ.get("VRWKV_ORT_INCLUDE_DIR")
    extra = [f"-DVRWKV_ORT_INCLUDE_DIR={inc}"] if inc else []
    steps = [["cmake", "-S", str(REPO / "csrc" / "runtime"), "-B", str(root), *gen, "-DCMAKE_BUILD_TYPE=Release", *extra],
             ["cmake", "--build", str(root), "-j", os.environ.get("VRWKV_BUILD_JOBS", "2"), "--target", "vrwkv-chat"]]
    log = root / "build.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(["sh", "-c", " && ".join(shlex.join(c) for c in steps)], stdout=f,
                                stderr=subprocess.STDOUT)
    yield proc, root, log
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def chat_binary(_chat_build):
    proc, root, log = _chat_build
    assert proc.wait() == 0, f"building vrwkv-chat failed; {log}:\n{log.read_text()[-4000:]}"
    return root / "examples" / "vrwkv-chat"


@pytest.mark.export
def test_cpp_bench_splits_the_decode_time_at_run(exported, chat_binary, tmp_path):
    import onnxruntime

    _, path = exported
    lib = next((os.path.dirname(onnxruntime.__file__) + "/capi/" + f)
               for f in os.listdir(os.path.dirname(onnxruntime.__file__) + "/capi") if f.startswith("libonnxruntime.so"))
    out = tmp_path / "chat.json"
    r = subprocess.run([str(chat_binary), "--model", str(path), "--ort-lib", lib, "--threads", "1", "--prompt", "hello",
                        "--greedy", "--no-stop", "--max-new-tokens", "12", "--bench", "--json", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    m = re.search(r"(\d+) new tokens in ([\d.]+) ms: .* ORT Run ([\d.]+) ms/step over (\d+) steps, "
                  r"outside Run (-?[\d.]+) ms/token", r.stderr)
    assert m, r.stderr
    tokens, total_ms, run_ms, steps, outside_ms = (int(m[1]), float(m[2]), float(m[3]), int(m[4]), float(m[5]))
    assert tokens == steps == 12 and run_ms > 0 and outside_ms >= 0
    assert abs(total_ms / tokens - (run_ms * steps / tokens + outside_ms)) < 0.01   # the two parts add up
    turn = json.loads(out.read_text())["turns"][0]
    assert 0 < turn["decode_run_s"] <= turn["decode_s"] and len(turn["tokens"]) == 12
    np.testing.assert_allclose(turn["decode_run_s"] * 1e3 / 12, run_ms, rtol=0.01, atol=0.002)
