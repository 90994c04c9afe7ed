"""int4 weights (``--quantize int4``: MatMulNBits, block 32, asymmetric, accuracy level 4): top-1 agreement with
the float32 model on the trained tiny testdata models (rwkv.cpp's 6v0-1M and 7v0-834K), against int8 beside it.

    python benchmarks/bench_int4.py                 # 4 streams x 512 steps per model -> results/int4_agreement.json
    python benchmarks/bench_int4.py --quick         # 2 x 64 steps (a smoke run; writes int4_agreement_quick.json)

Streams: each starts from a prompt of English text (the bundled licence notices in ``vrwkv_edge/data``, as bytes:
both models are byte-level) and continues with tokens sampled at temperature 1 (seeded) from the float32
PyTorch model, so the positions are text the model itself finds likely.  The 6v0-1M model was trained on bytes
interleaved with 0x00 (testdata README), so its prompt is fed that way too: without it every position is a
near-certain 0x00.  Every position is teacher-forced: the float32 PyTorch ``step`` and the exported decode
graph (ONNX Runtime, CPU) see the same tokens, and top-1 agreement is the share of positions where both argmaxes
are equal.  Also recorded: max / mean absolute logit difference, and the prefill graph's last logits over the
prompt.  Criterion (issue #12): int4 agreement >= 98 %.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.helpers import TINY_MODELS  # noqa: E402
from vrwkv_edge.bench.harness import finish_info, machine_info, run_header, write_json  # noqa: E402
from vrwkv_edge.export import export_model, load_onnx_model  # noqa: E402
from vrwkv_edge.export.artefact import quantization_metadata  # noqa: E402
from vrwkv_edge.loading import load_model  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PROMPT_FILES = ("LICENSE-tiny-rwkv7-834K.txt", "LICENSE-rwkv_vocab.txt")
CRITERION = 0.98


def prompt_bytes(version: str, n: int) -> list[int]:
    text = b"\n".join((REPO / "vrwkv_edge" / "data" / f).read_bytes() for f in PROMPT_FILES)
    ids = list(text)
    if version == "x060":                       # 6v0-1M: uint16 streams read as bytes (see the module docstring)
        ids = [x for b in ids for x in (b, 0)]
    return ids[:n]


def sample_streams(model, prompt: list[int], batch: int, steps: int, seed: int) -> torch.Tensor:
    """``batch`` streams: the prompt, then ``steps`` tokens sampled from the fp32 model (temperature 1)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.tensor([prompt] * batch)
    logits, state = model.forward(ids, None, last_only=True)
    out = [ids]
    for _ in range(steps):
        tok = torch.multinomial(torch.softmax(logits, -1), 1, generator=gen)
        out.append(tok)
        logits, state = model.step(tok[:, 0], state)
    return torch.cat(out, 1)


def compare(model, om, tokens: torch.Tensor, prompt_len: int) -> dict:
    """Teacher-forced decode through both; every position from the first token on is compared."""
    B, T = tokens.shape
    st_t, st_o = model.new_state(B), om.new_state(B)
    same, n, max_abs, sum_abs = 0, 0, 0.0, 0.0
    for t in range(T):
        lt, st_t = model.step(tokens[:, t], st_t)
        lo, st_o = om.step(tokens[:, t], st_o)
        d = (lt - lo).abs()
        max_abs, sum_abs = max(max_abs, d.max().item()), sum_abs + d.mean().item()
        same += int((lt.argmax(-1) == lo.argmax(-1)).sum())
        n += B
    pt, _ = model.forward(tokens[:, :prompt_len], None, last_only=True)
    po, _ = om.forward(tokens[:, :prompt_len], None, last_only=True)
    return {"positions": n, "top1_agreement": round(same / n, 5), "max_abs_logit_diff": round(max_abs, 4),
            "mean_abs_logit_diff": round(sum_abs / T, 5),
            "prefill_last_max_abs": round((pt - po).abs().max().item(), 4),
            "prefill_last_top1_equal": bool((pt.argmax(-1) == po.argmax(-1)).all())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--prompt-len", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    B = args.batch or (2 if args.quick else 4)
    S = args.steps or (64 if args.quick else 512)
    out = args.out or RESULTS / ("int4_agreement_quick.json" if args.quick else "int4_agreement.json")
    torch.set_grad_enabled(False)
    header = run_header("bench_int4")                 # date and load average at the start
    info = machine_info(bandwidth=False)
    import onnxruntime
    info["onnxruntime"] = onnxruntime.__version__
    rows = {}
    work = Path(tempfile.mkdtemp(prefix="bench_int4-"))
    try:
        for version, (ckpt, _) in TINY_MODELS.items():
            model = load_model(ckpt, dtype=torch.float32).eval()
            prompt = prompt_bytes(version, args.prompt_len)
            tokens = sample_streams(model, prompt, B, S, args.seed)
            row = {"checkpoint": ckpt.name, "parameters": model.num_parameters(), "streams": B,
                   "prompt_len": len(prompt), "sampled_steps": S}
            for quantize in ("int4", "int8"):
                t0 = time.perf_counter()
                d = export_model(model, work / f"{version}-{quantize}", quantize=quantize, embeds=False,
                                 progress=False)
                export_s = time.perf_counter() - t0
                om = load_onnx_model(d, threads=args.threads, spinning=False)
                row[quantize] = {**compare(model, om, tokens, len(prompt)), "export_s": round(export_s, 1)}
                print(f"{version} {quantize}: top-1 agreement {100 * row[quantize]['top1_agreement']:.2f}% over "
                      f"{row[quantize]['positions']} positions, max |dlogit| {row[quantize]['max_abs_logit_diff']}",
                      file=sys.stderr)
                del om
            rows[version] = row
    finally:
        shutil.rmtree(work, ignore_errors=True)
    passed = all(r["int4"]["top1_agreement"] >= CRITERION for r in rows.values())
    result = {**header, "quantization": quantization_metadata("int4"),
              "reference": "float32 PyTorch model (step), teacher-forced on the same tokens",
              "runtime": "ONNX Runtime CPUExecutionProvider, decode graph", "threads": args.threads,
              "criteria": f"int4 top-1 agreement with fp32 >= {CRITERION} on every model", "passed": passed,
              "models": rows, "environment": finish_info(info)}
    write_json(out, result)
    print(f"wrote {out}; {'PASS' if passed else 'FAIL'}", file=sys.stderr)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
