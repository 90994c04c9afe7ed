"""The concurrent-streams benchmark: measure_streams rows, the state memory per stream, and the streams suite of
``vrwkv-edge bench`` (JSON, Markdown section, plot)."""
import pytest

from vrwkv_edge.bench.suites import run_bench
from vrwkv_edge.config import preset
from vrwkv_edge.serving.streams import kv_cache_bytes_per_stream, measure_streams, memory_rows, state_bytes_per_stream
from vrwkv_edge.state import State

pytestmark = pytest.mark.usefixtures("quiet_torch")


def test_measure_streams_rows(serving_model):
    rows = measure_streams(serving_model, [1, 3], steps=2, warmup=1, prompt_tokens=4, label="torch")
    assert [r["streams"] for r in rows] == [1, 3]
    for r in rows:
        assert r["step_ms_min"] <= r["step_ms_median"] <= r["step_ms_max"]
        assert r["aggregate_tokens_per_s"] == pytest.approx(r["streams"] * 1e3 / r["step_ms_median"])
    with pytest.raises(ValueError, match="steps >= 1"):
        measure_streams(serving_model, [1], steps=0)


def test_state_memory_per_stream_is_the_state():
    cfg = preset("rwkv7-0.1b")
    state = State.zeros(cfg.n_layer, 1, cfg.n_embd, cfg.n_head, cfg.head_size)
    actual = sum(t.numel() * t.element_size() for t in state.flat())
    assert state_bytes_per_stream(cfg) == actual == 2_433_024          # 2.32 MiB at 0.1B, any context
    assert kv_cache_bytes_per_stream(cfg, 4096) == 2 * 12 * 768 * 4096 * 4
    rows = memory_rows(cfg, [1024])
    assert rows["kv_cache_mib_per_stream"] == {"1024": 72.0}


@pytest.mark.bench
def test_bench_streams_suite(tmp_path):
    res = run_bench(quick=True, out_dir=tmp_path, log=lambda s: None, streams=[1, 2],
                    skip=["decode", "transformer", "prefill", "towers", "ttft"])
    assert res["command"].endswith("--skip decode,transformer,prefill,towers,ttft --streams 1,2")
    rows = res["streams"]["rows"]
    assert [(r["backend"], r["streams"]) for r in rows] == [("torch", 1), ("torch", 2)]
    assert (tmp_path / "bench_quick_streams.png").stat().st_size > 1000
    md = (tmp_path / "bench_quick.md").read_text()
    assert "| torch | 2 |" in md.split("## Concurrent streams")[1]
    assert "State per stream" in md
    # a quick run without --streams has no streams suite
    res = run_bench(quick=True, log=lambda s: None, skip=["decode", "transformer", "towers", "ttft", "stepwise"])
    assert res["streams"] is None and "streams" in res["skipped"]
