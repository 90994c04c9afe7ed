"""The benchmark harness in quick mode: it runs end to end and writes JSON, Markdown and plots.
(Speed targets are shown by the committed results, never by timed tests.)"""
import json

from vrwkv_edge.bench import markdown_table, time_fn, write_json
from vrwkv_edge.bench.suites import run_bench


def test_quick_bench_end_to_end(tmp_path):
    res = run_bench(quick=True, out_dir=tmp_path, log=lambda s: None)
    saved = json.loads((tmp_path / "bench_quick.json").read_text())
    assert saved["preset"] == "rwkv7-tiny" and saved["speed_of_light_tokens_per_s"] > 0
    contexts = {r["context"] for r in res["decode"]}
    assert contexts == {1, 64}
    assert all(r["ms_per_token"] > 0 and r["rss_mib"] > 0 for r in res["decode"] + res["transformer_comparison"])
    assert {r["model"].split()[0] for r in res["transformer_comparison"]} == {"RWKV-7", "Llama"}
    for name in ("latency", "memory", "throughput"):
        assert (tmp_path / f"bench_quick_{name}.png").stat().st_size > 1000
    assert "Decode latency against context" in (tmp_path / "bench_quick.md").read_text()
    assert res["decode_profile_torch"] and res["prefill"]


def test_harness_helpers(tmp_path):
    t = time_fn(lambda: sum(range(1000)), repeats=3)
    assert t.min_s <= t.median_s <= t.max_s and t.repeats == 3
    p = write_json(tmp_path / "r.json", {"a": 1})
    assert json.loads(p.read_text()) == {"a": 1} and not list(tmp_path.glob("*.tmp"))
    assert markdown_table([{"x": 1.23456, "y": "b"}]).splitlines()[2] == "| 1.235 | b |"
