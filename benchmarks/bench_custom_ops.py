"""Custom-op graphs (``export --wkv custom``: one ``vrwkv`` node per WKV, run by libvrwkv_ort_ops.so) against the
standard-op graphs of the same weights, in ONNX Runtime on the CPU: prefill tokens/s at 577 and 4,096 tokens and
decode ms/token, for a 0.1B-shaped RWKV-7 with seeded random weights (preset ``rwkv7-0.1b``).

    vrwkv-edge build-native --ort-ops-only --ort-include DIR     # once (or set VRWKV_ORT_INCLUDE_DIR)
    python benchmarks/bench_custom_ops.py                        # -> benchmarks/results/custom_ops.json
    python benchmarks/bench_custom_ops.py --quick                # rwkv7-tiny, short prompts: a smoke run (no file)
    python benchmarks/bench_custom_ops.py --profile              # + each prefill graph's time per op type

Each prompt is one prefill-graph run (``max_prefill_tokens`` = the longest prompt), timed as the median of
``--repeats`` runs after one warm-up; decode is the median of ``--decode-steps`` single-token steps.  Both
flavours get the same thread count and the same prompts, and their last logits are compared (they must agree to
1e-4).  Criterion (issue #12): custom >= 1.5x standard prefill tokens/s at 4,096 tokens.  The load average at the
start and end is recorded: on a shared machine the numbers are only comparable within one run.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vrwkv_edge.bench.harness import finish_info, run_header, time_fn, write_json  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CRITERION = 1.5
FLAVOURS = ("standard", "custom")


def op_library() -> Path:
    """The built op library, building it when ONNX Runtime's headers are given by $VRWKV_ORT_INCLUDE_DIR."""
    from vrwkv_edge.native import ort_ops
    from vrwkv_edge.runtime import custom_ops
    try:
        return custom_ops.library_path()
    except custom_ops.CustomOpsError:
        if ort_ops.find_ort_include() is None:
            raise
        return ort_ops.build()


def prefill_profile(export_dir: Path, T: int, threads: int) -> dict:
    """Share of the prefill graph's node time per op type (ONNX Runtime's profiler, one run of T tokens from a zero
    state after a warm-up): where the time goes, e.g. how much of it the WKV nodes are."""
    import json
    import tempfile as _tempfile

    import numpy as np
    import onnxruntime as ort

    from vrwkv_edge.runtime import custom_ops
    meta = json.loads((export_dir / "metadata.json").read_text())
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    with _tempfile.TemporaryDirectory() as tmp:
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "prefill")
        custom_ops.register_for_artefact(so, meta)
        sess = ort.InferenceSession(str(export_dir / meta["graphs"]["prefill"]["file"]), so,
                                    providers=["CPUExecutionProvider"])
        feeds = {i.name: (np.zeros((1, T), np.int64) if i.name == "input_ids" else
                          np.zeros([1 if isinstance(d, str) else d for d in i.shape], np.float32))
                 for i in sess.get_inputs()}
        sess.run(None, feeds)
        sess.run(None, feeds)
        events = json.loads(Path(sess.end_profiling()).read_text())
    per_op: dict = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] = per_op.get(e["args"]["op_name"], 0) + e["dur"]
    total = sum(per_op.values())
    return {op: round(100 * us / total, 1) for op, us in sorted(per_op.items(), key=lambda kv: -kv[1])[:10]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="rwkv7-0.1b")
    ap.add_argument("--tokens", type=int, nargs="+", default=[577, 4096], help="prompt lengths")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--decode-steps", type=int, default=32)
    ap.add_argument("--quick", action="store_true", help="rwkv7-tiny, 64 / 256 tokens, 1 repeat, 8 steps, no file")
    ap.add_argument("--out", type=Path, help="default results/custom_ops.json (none with --quick)")
    ap.add_argument("--profile", action="store_true",
                    help="also record each flavour's prefill time per op type (%%) at the longest prompt")
    args = ap.parse_args(argv)
    if args.quick:
        args.preset, args.tokens, args.repeats, args.decode_steps = "rwkv7-tiny", [64, 256], 1, 8
    out = args.out or (None if args.quick else RESULTS / "custom_ops.json")

    from vrwkv_edge.config import preset
    from vrwkv_edge.export import export_model, load_onnx_model
    from vrwkv_edge.models import build_model

    lib = op_library()
    info = run_header("bench_custom_ops")
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    cfg = preset(args.preset)
    if args.quick:       # a tiny model with a byte-level vocabulary (exports need a vocabulary they can name)
        cfg = dataclasses.replace(cfg, vocab_size=256)
    model = build_model(cfg).init_random_(0).eval()
    g = torch.Generator().manual_seed(0)
    prompts = {T: torch.randint(0, cfg.vocab_size, (1, T), generator=g) for T in args.tokens}
    report = {**info, "preset": args.preset, "threads": args.threads, "repeats": args.repeats,
              "decode_steps": args.decode_steps, "op_library": str(lib), "flavours": {}}
    last_logits = {}
    with tempfile.TemporaryDirectory() as tmp:
        for flavour in FLAVOURS:
            t0 = time.time()
            d = export_model(model, Path(tmp) / flavour, wkv=flavour, embeds=False, progress=False)
            export_s = time.time() - t0
            om = load_onnx_model(d, threads=args.threads, max_prefill_tokens=max(args.tokens))
            res = {"export_s": round(export_s, 1), "prefill": {}}
            for T, ids in prompts.items():
                timing = time_fn(lambda: om.forward(ids, None, last_only=True), repeats=args.repeats, warmup=1)
                res["prefill"][str(T)] = {"tokens_per_s": round(T / timing.median_s, 1), **timing.as_dict()}
                last_logits[flavour, T] = om.forward(ids, None, last_only=True)[0]
            logits, state = om.forward(prompts[min(args.tokens)], None, last_only=True)
            tok = logits.argmax(-1)
            for _ in range(2):                                                  # warm-up
                logits, state = om.step(tok, state)
            steps = []
            for _ in range(args.decode_steps):
                t0 = time.perf_counter()
                logits, state = om.step(tok, state)
                steps.append(time.perf_counter() - t0)
                tok = logits.argmax(-1)
            res["decode_ms_per_token_median"] = round(statistics.median(steps) * 1e3, 3)
            if args.profile:
                res["prefill_node_time_percent_by_op"] = prefill_profile(d, max(args.tokens), args.threads)
            report["flavours"][flavour] = res
            del om
    std, cus = report["flavours"]["standard"], report["flavours"]["custom"]
    report["prefill_speedup_custom_over_standard"] = {
        str(T): round(cus["prefill"][str(T)]["tokens_per_s"] / std["prefill"][str(T)]["tokens_per_s"], 2)
        for T in args.tokens}
    report["decode_speedup_custom_over_standard"] = round(
        std["decode_ms_per_token_median"] / cus["decode_ms_per_token_median"], 2)
    report["max_abs_logit_difference"] = {str(T): float((last_logits["custom", T] - last_logits["standard", T])
                                                        .abs().max()) for T in args.tokens}
    report["criterion"] = f"custom >= {CRITERION}x standard prefill tokens/s at 4096 tokens"
    if "4096" in report["prefill_speedup_custom_over_standard"]:
        report["criterion_met"] = report["prefill_speedup_custom_over_standard"]["4096"] >= CRITERION
    finish_info(report)

    print(f"{args.preset}, {args.threads} threads, median of {args.repeats} (load average "
          f"{report['load_average_at_start'][0]:.2f} -> {report['load_average_at_end'][0]:.2f}):")
    for T in args.tokens:
        print(f"  prefill {T:>5} tokens: standard {std['prefill'][str(T)]['tokens_per_s']:9.1f} tok/s, custom "
              f"{cus['prefill'][str(T)]['tokens_per_s']:9.1f} tok/s ({report['prefill_speedup_custom_over_standard'][str(T)]}x;"
              f" logits differ by {report['max_abs_logit_difference'][str(T)]:.2g})")
    print(f"  decode: standard {std['decode_ms_per_token_median']:.3f} ms/token, custom "
          f"{cus['decode_ms_per_token_median']:.3f} ms/token")
    if args.profile:
        for flavour in FLAVOURS:
            print(f"  {flavour} prefill, % of node time: {report['flavours'][flavour]['prefill_node_time_percent_by_op']}")
    if out:
        write_json(out, report)
        print(f"wrote {out}")
    ok = max(report["max_abs_logit_difference"].values()) <= 1e-4
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
