"""Decode latency of the C++ runtime (vrwkv-chat) vs the Python ONNX Runtime backend vs PyTorch, and the C++
per-token overhead outside ONNX Runtime's Run, for a 0.1B-shaped RWKV-7 (preset ``rwkv7-0.1b``: 12 layers,
width 768, vocabulary 65536, seeded random weights), fp32, batch 1, CPU.

    python benchmarks/bench_cpp_runtime.py [--tokens 64] [--threads 2] [--repeats 3] [--chat build/.../vrwkv-chat]
    python benchmarks/bench_cpp_runtime.py --quick          # rwkv7-tiny, a few tokens (smoke test)

Without ``--chat`` the runtime is built with CMake into a temporary directory (headers as in the tests:
$VRWKV_ORT_INCLUDE_DIR or fetched).  Every runtime decodes the same greedy continuation of the same prompt with the
same thread count; the C++ time is vrwkv-chat's decode loop (sampling, streaming and the Run calls), its
``decode_run_s`` the part inside Run.  The Python ORT number is ``generate`` on ``load_onnx_model`` (prebound
state), PyTorch ``model.step``.  For the full comparison (bare sessions, int4/int8, 1 and 2 threads, the official
``rwkv`` package, the overhead percentages) see bench_decode_backends.py.  Medians over ``--repeats`` runs; the machine may be shared, so its load average
is printed with the results.  ``--out FILE`` also writes them as JSON.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
PROMPT = "The history of the region begins"


def build_chat(work: Path) -> Path:
    extra = [f"-DVRWKV_ORT_INCLUDE_DIR={os.environ['VRWKV_ORT_INCLUDE_DIR']}"] if "VRWKV_ORT_INCLUDE_DIR" in os.environ else []
    subprocess.run(["cmake", "-S", str(REPO / "csrc" / "runtime"), "-B", str(work / "build"), "-DCMAKE_BUILD_TYPE=Release",
                    *extra], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(work / "build"), "-j", "2"], check=True, capture_output=True)
    return work / "build" / "examples" / "vrwkv-chat"


def ort_library() -> str:
    import onnxruntime

    return str(next((Path(onnxruntime.__file__).parent / "capi").glob("libonnxruntime.so.*")))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="rwkv7-0.1b")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chat", type=Path, help="a built vrwkv-chat (default: build one)")
    ap.add_argument("--quick", action="store_true", help="rwkv7-tiny, 8 tokens, 1 repeat")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if args.quick:
        args.preset, args.tokens, args.repeats = "rwkv7-tiny", 8, 1

    from vrwkv_edge.config import preset
    from vrwkv_edge.export import export_model, load_onnx_model
    from vrwkv_edge.generation import SamplingParams, generate
    from vrwkv_edge.models import build_model
    from vrwkv_edge.tokenizer import load_tokenizer

    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        chat = args.chat or build_chat(work)
        cfg = preset(args.preset)
        if args.quick:  # the World vocabulary needs 65536 rows (the runtime refuses a smaller embedding)
            cfg = dataclasses.replace(cfg, vocab_size=65536)
        model = build_model(cfg).init_random_(0).eval()
        t0 = time.time()
        export = export_model(model, work / "export", embeds=False, progress=False)
        print(f"exported {args.preset} in {time.time() - t0:.0f} s", file=sys.stderr)
        ids = load_tokenizer().encode(PROMPT)
        ids = [i % model.cfg.vocab_size for i in ids]
        results: dict[str, list[float]] = {"cpp": [], "cpp_run": [], "python_ort": [], "pytorch": []}
        tokens = None
        ort_model = load_onnx_model(export, threads=args.threads)
        params = SamplingParams.greedy(stop_tokens=(), max_new_tokens=args.tokens)
        for _ in range(args.repeats):
            out = work / "chat.json"
            subprocess.run([str(chat), "--model", str(export), "--ort-lib", ort_library(), "--threads",
                            str(args.threads), "--raw", "--prompt", PROMPT, "--greedy", "--no-stop",
                            "--max-new-tokens", str(args.tokens), "--json", str(out)], check=True,
                           capture_output=True)
            turn = json.loads(out.read_text())["turns"][0]
            results["cpp"].append(turn["decode_s"] * 1e3 / args.tokens)
            results["cpp_run"].append(turn["decode_run_s"] * 1e3 / args.tokens)
            tokens = turn["tokens"]

            logits, state = ort_model.forward(torch.tensor([ids]), last_only=True)
            t0 = time.perf_counter()
            ref = generate(ort_model, state=state, prefix_logits=logits, params=params)
            results["python_ort"].append((time.perf_counter() - t0) * 1e3 / args.tokens)

            logits, state = model.forward(torch.tensor([ids]), last_only=True)
            t0 = time.perf_counter()
            for t in tokens:
                logits, state = model.step(torch.tensor([t]), state)
            results["pytorch"].append((time.perf_counter() - t0) * 1e3 / args.tokens)
        same = ref.tokens[0] == tokens
    med = {k: statistics.median(v) for k, v in results.items()}
    report = {"preset": args.preset, "tokens": args.tokens, "threads": args.threads, "repeats": args.repeats,
              "ms_per_token_median": med, "cpp_outside_run_ms_per_token": med["cpp"] - med["cpp_run"],
              "greedy_tokens_equal_python": same, "loadavg": os.getloadavg()}
    print(f"{args.preset}, {args.tokens} tokens, {args.threads} threads, median of {args.repeats} "
          f"(load average {report['loadavg'][0]:.2f}):")
    for k, label in (("cpp", "C++ vrwkv-chat decode"), ("cpp_run", "  of which inside ORT Run"),
                     ("python_ort", "Python ORT backend"), ("pytorch", "PyTorch model.step")):
        print(f"  {label:<28} {med[k]:8.3f} ms/token")
    print(f"  C++ outside Run              {report['cpp_outside_run_ms_per_token']:8.3f} ms/token; "
          f"greedy tokens equal: {same}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
