"""fp16 export stability: thousands of ONNX Runtime fp16 decode steps of a 0.1B-shaped RWKV-7 (preset
``rwkv7-0.1b``, seeded random weights) with no NaN/inf and top-1 agreement with the float32 model.

    python benchmarks/bench_export_fp16.py            # full: 4 sequences x 2,048 steps = 8,192 decode steps
    python benchmarks/bench_export_fp16.py --quick    # rwkv7-tiny, 2 x 128 steps

The fp16 export (fp16 weights and matmuls; fp32 state, decay, norms, residual) runs on the CPU provider with
batch ``--batch``: each of the ``--steps`` decode calls advances every sequence by one token, so the run makes
batch x steps decode steps and each sequence reaches a context of prompt + steps tokens.  Each next token is
sampled (temperature 1, seeded) from the fp16 logits, so the streams are diverse, not a greedy loop.  At every
step the logits and the whole state are checked for NaN/inf.  The reference is the float32 PyTorch model run
over the same token streams afterwards (its exact chunked ``forward``, in blocks of 256 tokens that carry the
state), which gives the fp32 logits at every position; top-1 agreement is the share of positions where both
argmaxes are equal (criterion >= 99 %).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from vrwkv_edge.bench.harness import finish_info, run_header, machine_info, write_json
from vrwkv_edge.config import preset
from vrwkv_edge.export import export_model, load_onnx_model
from vrwkv_edge.models import build_model

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--preset", default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    name = args.preset or ("rwkv7-tiny" if args.quick else "rwkv7-0.1b")
    B = args.batch or (2 if args.quick else 4)
    S = args.steps or (128 if args.quick else 2048)
    P = args.prompt_len
    threads = args.threads or torch.get_num_threads()
    out = args.out or RESULTS / ("export_fp16_quick.json" if args.quick else "export_fp16.json")
    torch.set_grad_enabled(False)
    info = machine_info(bandwidth=False)
    model = build_model(preset(name)).init_random_(args.seed).eval()
    V = model.cfg.vocab_size
    print(f"{name}: {model.num_parameters():,} parameters; {B} x {S} fp16 decode steps; "
          f"load {info['load_average_at_start']}", file=sys.stderr)

    work = Path(tempfile.mkdtemp(prefix="bench_export_fp16-"))
    gen = torch.Generator().manual_seed(args.seed + 1)
    try:
        t0 = time.perf_counter()
        d = export_model(model, work / "fp16", dtype="fp16", embeds=False, progress=False)
        export_s = time.perf_counter() - t0
        om = load_onnx_model(d, threads=threads)
        prompt = torch.randint(0, V, (B, P), generator=gen)
        stream = [prompt]
        top16 = []
        nonfinite_steps = []
        max_abs_logit = 0.0
        t0 = time.perf_counter()
        logits, state = om.forward(prompt, None, last_only=True)
        for step in range(S + 1):
            finite = bool(torch.isfinite(logits).all()) and all(bool(torch.isfinite(t).all()) for t in state.flat())
            if not finite:
                nonfinite_steps.append(step)
            max_abs_logit = max(max_abs_logit, logits.abs().max().item())
            top16.append(logits.argmax(-1))
            if step == S:
                break
            probs = torch.softmax(torch.nan_to_num(logits), -1)
            tok = torch.multinomial(probs, 1, generator=gen)                     # [B, 1]
            stream.append(tok)
            logits, state = om.step(tok[:, 0], state)
            if (step + 1) % 256 == 0:
                print(f"  step {step + 1}/{S}: {(time.perf_counter() - t0) / (step + 1) * 1000:.1f} ms/step",
                      file=sys.stderr)
        decode_s = time.perf_counter() - t0
        state_absmax = max(t.abs().max().item() for t in state.flat())
        del om
    finally:
        shutil.rmtree(work, ignore_errors=True)

    # fp32 reference over the same streams: logits at positions P-1, P, ..., P+S-1
    tokens = torch.cat(stream, 1)                                                # [B, P + S]
    t0 = time.perf_counter()
    top32, diffs = [], []
    st = model.new_state(B)
    top16 = torch.stack(top16, 1)                                                # [B, S + 1]
    block = 256
    pos = 0
    for start in range(0, tokens.shape[1], block):
        lg, st = model.forward(tokens[:, start:start + block], st)
        first = max(P - 1 - start, 0)
        top32.append(lg[:, first:].argmax(-1))
        pos += lg.shape[1]
    top32 = torch.cat(top32, 1)                                                  # [B, S + 1]
    ref_s = time.perf_counter() - t0
    assert top32.shape == top16.shape, (top32.shape, top16.shape)
    same = (top32 == top16)
    agreement = same.float().mean().item()
    window = 512
    per_window = [round(same[:, i:i + window].float().mean().item(), 5) for i in range(0, S + 1, window)]
    passed = not nonfinite_steps and agreement >= 0.99
    result = {**run_header("bench_export_fp16"),
              "model": {"preset": name, "parameters": model.num_parameters(),
                        "weights": f"seeded random ({args.seed})"},
              "export": {"dtype": "fp16", "provider": "CPUExecutionProvider", "threads": threads,
                         "export_s": round(export_s, 1)},
              "batch": B, "decode_calls": S, "decode_steps": B * S, "prompt_len": P,
              "context_reached": P + S, "positions_compared": int(same.numel()),
              "nonfinite_steps": nonfinite_steps[:20], "n_nonfinite_steps": len(nonfinite_steps),
              "max_abs_logit_fp16": round(max_abs_logit, 4), "final_state_absmax": round(state_absmax, 4),
              "top1_agreement": round(agreement, 5), "top1_agreement_per_512_steps": per_window,
              "criteria": "no NaN/inf in logits or state at any step; top-1 agreement with fp32 >= 0.99",
              "passed": passed,
              "timing_s": {"fp16_decode": round(decode_s, 1), "ms_per_decode_call": round(decode_s / S * 1000, 2),
                           "fp32_reference_forward": round(ref_s, 1)},
              "environment": finish_info(info),
              "notes": ["decode_steps = batch x decode calls; each call advances all sequences by one token",
                        "tokens sampled at temperature 1 from the fp16 logits (seeded); the fp32 reference "
                        "sees the same streams (teacher forcing)"]}
    write_json(out, result)
    print(f"{B * S} fp16 decode steps: {len(nonfinite_steps)} with NaN/inf; top-1 agreement with fp32 "
          f"{100 * agreement:.3f} % (per 512 steps: {per_window}); {'PASS' if passed else 'FAIL'}")
    print(f"wrote {out}", file=sys.stderr)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
