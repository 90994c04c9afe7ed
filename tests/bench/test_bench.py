"""The benchmark harness in quick mode: it runs end to end and writes JSON, Markdown and plots.
(Speed targets are shown by the committed results, never by timed tests.)"""
import json

import pytest

from vrwkv_edge.bench import markdown_table, time_fn, write_json
from vrwkv_edge.bench.suites import output_stem, run_bench
from vrwkv_edge.bench.vision import TTFT_STAGES

pytestmark = [pytest.mark.bench, pytest.mark.export, pytest.mark.vision, pytest.mark.reference]


def test_quick_bench_end_to_end(tmp_path):
    res = run_bench(quick=True, out_dir=tmp_path, log=lambda s: None)
    saved = json.loads((tmp_path / "bench_quick.json").read_text())
    assert saved["preset"] == "rwkv7-tiny" and saved["speed_of_light_tokens_per_s"] > 0
    assert saved["command"] == "vrwkv-edge bench --quick --preset rwkv7-tiny --backends torch"
    assert saved["failures"] == []
    contexts = {r["context"] for r in res["decode"]}
    assert contexts == {1, 64}
    assert all(r["ms_per_token"] > 0 and r["rss_mib"] > 0 and r["peak_rss_mib"] >= r["rss_mib"]
               for r in res["decode"] + res["transformer_comparison"])
    assert {r["model"].split()[0] for r in res["transformer_comparison"]} == {"RWKV-7", "Llama"}
    for name in ("latency", "memory", "throughput", "ttft", "towers"):
        assert (tmp_path / f"bench_quick_{name}.png").stat().st_size > 1000
    md = (tmp_path / "bench_quick.md").read_text()
    for section in ("Decode latency against context", "Vision tower latency", "Time to first token"):
        assert section in md
    assert "peak RSS MiB" in md.split("## Decode latency against context")[1].split("##")[0]
    assert res["decode_profile_torch"] and res["prefill"]
    assert res["memory"]["machine_peak_mib"] >= res["memory"]["parent_peak_rss_mib"] > 0

    # vision towers: every family of the quick plan, tokens growing with the Vision-RWKV input
    towers = saved["vision_towers"]
    assert {r["family"] for r in towers} == {"clip", "sam_dino_siglip", "vrwkv"}
    assert all(r["ms"] > 0 and r["peak_rss_mib"] > 0 and r["parameters"] > 0 for r in towers)
    vrwkv = sorted((r for r in towers if r["family"] == "vrwkv"), key=lambda r: r["resolution"])
    assert [r["tokens"] for r in vrwkv] == [16, 64]
    # TTFT: the stages, end to end, and the cached path, which hits the image-state cache
    t = saved["ttft"]
    assert set(t["stages"]) == set(TTFT_STAGES) and all(v["median_s"] > 0 for v in t["stages"].values())
    assert t["image_tokens"] == 17 and t["image"]["format"] == "JPEG"
    assert t["cache_hits"] == t["repeats"] and t["first_tokens_agree"]
    assert 0 < t["ttft_cached"]["median_s"] < t["ttft"]["median_s"]


def test_bench_plan_stems_and_skips(tmp_path):
    assert output_stem(False, "rwkv7-0.1b") == "bench" and output_stem(True, "rwkv7-tiny") == "bench_quick"
    assert output_stem(False, "rwkv7-1.5b") == "bench_rwkv7-1.5b"
    assert output_stem(True, "rwkv6-tiny") == "bench_quick_rwkv6-tiny"
    with pytest.raises(ValueError, match="unknown suite"):
        run_bench(quick=True, skip=["everything"])
    with pytest.raises(ValueError, match="unknown backend"):
        run_bench(quick=True, backends=["tensorrt"])
    # an RWKV-6 preset with every worker suite skipped: the prefill suite only, written under its own stem
    res = run_bench(quick=True, out_dir=tmp_path, preset_name="rwkv6-tiny", log=lambda s: None,
                    skip=["decode", "transformer", "towers", "ttft", "stepwise"])
    assert res["command"] == ("vrwkv-edge bench --quick --preset rwkv6-tiny --backends torch "
                              "--skip decode,transformer,towers,ttft,stepwise")
    assert [r["backend"] for r in res["prefill"]] == ["torch chunked forward"]
    assert not res["decode"] and not res["vision_towers"] and res["ttft"] is None
    md = (tmp_path / "bench_quick_rwkv6-tiny.md").read_text()
    assert "Skipped." in md and not list(tmp_path.glob("*.png"))


def test_harness_helpers(tmp_path):
    t = time_fn(lambda: sum(range(1000)), repeats=3)
    assert t.min_s <= t.median_s <= t.max_s and t.repeats == 3
    p = write_json(tmp_path / "r.json", {"a": 1})
    assert json.loads(p.read_text()) == {"a": 1} and not list(tmp_path.glob("*.tmp"))
    assert markdown_table([{"x": 1.23456, "y": "b"}]).splitlines()[2] == "| 1.235 | b |"
