"""Language-model throughput on this machine: tokens/s of ``step`` (decode) and of the chunked ``forward``
(prefill) for a 0.1B-shaped RWKV-7 (12 layers, width 768, vocabulary 65536, seeded random weights), beside
the official ``rwkv`` package ('cpu fp32') on the same weights.

    python benchmarks/bench_lm.py            # full run, writes benchmarks/results/lm_throughput.json
    python benchmarks/bench_lm.py --quick    # tiny model, seconds
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from vrwkv_edge.bench import machine_info, markdown_table, time_fn, weight_bytes_per_token, write_json
from vrwkv_edge.checkpoint import save_checkpoint
from vrwkv_edge.dtypes import parse_dtype
from vrwkv_edge.config import preset
from vrwkv_edge.models import build_model

HERE = Path(__file__).resolve().parent


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--preset", default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--prompt-len", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--dtypes", default="fp32", help="comma list of fp32,bf16 (bf16 is emulated on CPUs "
                    "without native bf16 matmul and is then far slower)")
    ap.add_argument("--no-reference", action="store_true", help="skip the rwkv package")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    name = args.preset or ("rwkv7-tiny" if args.quick else "rwkv7-0.1b")
    steps = args.steps or (16 if args.quick else 64)
    prompt_len = args.prompt_len or (64 if args.quick else 512)
    repeats = args.repeats or (2 if args.quick else 5)
    out = args.out or HERE / "results" / ("lm_throughput_quick.json" if args.quick else "lm_throughput.json")
    torch.set_grad_enabled(False)

    cfg = preset(name)
    model = build_model(cfg).init_random_(0).eval()
    info = machine_info()
    print(f"model {name}: {model.num_parameters():,} parameters; machine {info.get('cpu_model')}, "
          f"{info['cpu_count']} cores, {info['memory_bandwidth_gbs']} GB/s", file=sys.stderr)
    vocab = cfg.vocab_size
    tokens = torch.tensor([[(i * 7919) % (vocab - 1) + 1 for i in range(max(steps, prompt_len))]])

    rows = []

    def run_steps(m):
        state = m.new_state(1)
        for t in range(steps):
            _, state = m.step(tokens[:, t], state)

    for label in args.dtypes.split(","):
        dtype = parse_dtype(label)
        m = model if dtype == torch.float32 else build_model(cfg).init_random_(0).eval().to(dtype)
        t = time_fn(lambda: run_steps(m), repeats=repeats)
        sol = info["memory_bandwidth_gbs"] * 1e9 / weight_bytes_per_token(m)
        rows.append({"backend": f"vrwkv_edge step {label}", "mode": "decode", "tokens": steps,
                     "tokens_per_s": steps / t.median_s, "ms_per_token": 1e3 * t.median_s / steps,
                     "speed_of_light_tokens_per_s": sol, **t.as_dict()})
        t = time_fn(lambda: m.forward(tokens[:, :prompt_len], last_only=True), repeats=repeats)
        rows.append({"backend": f"vrwkv_edge forward (chunked) {label}", "mode": "prefill", "tokens": prompt_len,
                     "tokens_per_s": prompt_len / t.median_s, "ms_per_token": 1e3 * t.median_s / prompt_len,
                     **t.as_dict()})
        print(markdown_table(rows[-2:], ["backend", "mode", "tokens_per_s", "ms_per_token"]), file=sys.stderr)

    if not args.no_reference:
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = save_checkpoint(model.state_dict(), Path(tmp) / "bench.pth")
            res = Path(tmp) / "rwkv.json"
            subprocess.run([sys.executable, str(HERE / "rwkv_package_timer.py"), str(ckpt), cfg.version, str(steps),
                            str(prompt_len), str(repeats), str(vocab), str(res)], check=True, stdout=subprocess.DEVNULL)
            ref = json.loads(res.read_text())
        import rwkv
        for mode, key in (("decode", "step"), ("prefill", "forward")):
            r = ref[key]
            rows.append({"backend": f"rwkv {getattr(rwkv, '__version__', '0.8.32')} cpu fp32 ({key})", "mode": mode,
                         "tokens": r["tokens"], "tokens_per_s": r["tokens_per_s"],
                         "ms_per_token": 1e3 * r["median_s"] / r["tokens"],
                         **{k: r[k] for k in ("median_s", "min_s", "max_s", "repeats")}})
    table = markdown_table(rows, ["backend", "mode", "tokens", "tokens_per_s", "ms_per_token"])
    print(table)
    write_json(out, {"benchmark": "lm_throughput", "preset": name, "config": json.loads(cfg.to_json()),
                     "parameters": model.num_parameters(), "machine": info, "steps": steps, "prompt_len": prompt_len,
                     "command": "python " + " ".join(sys.argv),
                     "rows": rows, "table_markdown": table})
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
