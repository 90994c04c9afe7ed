"""VisualRWKV runtime benchmarks (CPU, random weights):

1. **Image prefill, 577 tokens** (v6.0: 576 patches + CLS) on a 0.1B-shaped RWKV-6 (12 layers, 768 wide, vocab
   65536): the exact layer-wise prefill with the bidirectional scan (``scan_prefill``) vs feeding the same 577
   embeddings token by token through ``step`` (the naive RNN, which is also NOT equivalent for v6.0: its logits
   differ from the training-style forward, reported as ``token_by_token_max_abs_vs_training``), plus the plain
   chunked forward without any permutation for reference.  The layer-wise prefill's agreement with the
   training-style full-sequence forward is reported too.
2. **Question latency with / without the cached image state**: a VisualRWKV v6 (that LM + a CLIP tower: ViT-L/14-336
   as released, or ViT-B/32-sized with ``--quick``) answering an image-first question (``User: <image>\\n{Q}``):
   uncached = tower + image prefill + question + decoding; cached = a second question about the same image,
   whose (prefix, image) state comes from :class:`~vrwkv_edge.visualrwkv.ImageStateCache`.  The picture is
   ``../shared/testdata/images/chelsea.png`` when it is there, else the synthetic photo of ``vrwkv-edge bench``.

    python benchmarks/bench_visual_scan.py [--quick] [--threads N (default 1)] [--reps N]
                                           [--out benchmarks/results/visual_scan.json]

Each timing is run ``--reps`` times (3; 1 with --quick) after one warm-up, round-robin with the others it is
compared with (token by token: reps // 2 runs, no warm-up); min and median are reported and the ratios use the
minima.  The machine's load average is recorded: on a shared CPU the absolute numbers move with it.  The JSON is
written atomically (temp file + os.replace).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

from vrwkv_edge.config import preset
from vrwkv_edge.generation import SamplingParams
from vrwkv_edge.models import build_model
from vrwkv_edge.visualrwkv import ImageStateCache, VisualConfig, build_random_visual_model, question_prompt
from vrwkv_edge.visualrwkv.runtime import answer
from vrwkv_edge.visualrwkv.scan import ImageSpan, scan_prefill, training_style_forward
from vrwkv_edge.visualrwkv.towers import CLIP_CONFIGS

LM_0B1_X060 = preset("rwkv6-0.1b")              # also the LM of `vrwkv-edge bench`'s time-to-first-token suite
IMAGE = ROOT.parent / "shared" / "testdata" / "images" / "chelsea.png"     # ../shared beside the repository


def interleaved(fns: dict, reps: dict, warm_up: set) -> dict:
    """Times each function ``reps[name]`` times, round-robin (so that a change of machine load hits all of them
    alike); returns ``{name: (times, last output)}``."""
    out = {name: ([], fns[name]() if name in warm_up else None) for name in fns}
    for r in range(max(reps.values())):
        for name, fn in fns.items():
            if r < reps[name]:
                t0 = time.perf_counter()
                res = fn()
                out[name][0].append(time.perf_counter() - t0)
                out[name] = (out[name][0], res)
    return out


def summary(times: list) -> dict:
    return {"min_s": min(times), "median_s": statistics.median(times), "runs": len(times)}


def bench_prefill(reps: int) -> dict:
    lm = build_model(LM_0B1_X060).init_random_(0).eval()
    g = torch.Generator().manual_seed(1)
    prefix = torch.tensor([[24281, 59, 33]])                               # "User: "
    image = 0.1 * torch.randn(1, 577, 768, generator=g)
    _, state = lm.forward(prefix)
    span = [ImageSpan(0, 24, 24)]                                          # CLS (index 576) is not scanned

    def layerwise():
        return scan_prefill(lm, image, state, span, "bidirectional")

    def plain_chunked():                                # same work minus the permutations: hidden states, no head
        return lm.run_blocks(image, state, seq=True)

    def token_by_token():
        s = state
        for t in range(image.shape[1]):
            logits, s = lm.step(inputs_embeds=image[:, t], state=s)
        return logits, s

    res = interleaved({"layerwise": layerwise, "plain": plain_chunked, "step": token_by_token},
                      {"layerwise": reps, "plain": reps, "step": max(1, reps // 2)}, warm_up={"layerwise", "plain"})
    (t_layer, (hidden, _)), (t_plain, _), (t_step, (step_logits, _)) = res["layerwise"], res["plain"], res["step"]
    full = torch.cat([lm.emb(prefix), image], 1)
    ref = training_style_forward(lm, full, [ImageSpan(3, 24, 24)], "bidirectional")
    return {
        "lm": {"version": "x060", "n_layer": 12, "n_embd": 768, "vocab_size": 65536,
               "parameters": lm.num_parameters()},
        "image_tokens": 577,
        "layerwise_prefill": summary(t_layer),
        "plain_chunked_forward": summary(t_plain),
        "token_by_token": summary(t_step),
        "speedup_layerwise_vs_token_by_token": min(t_step) / min(t_layer),
        "layerwise_overhead_vs_plain_chunked": min(t_layer) / min(t_plain),
        "layerwise_max_abs_vs_training": float((lm.logits(hidden[:, -1]) - ref[:, -1]).abs().max()),
        "token_by_token_max_abs_vs_training": float((step_logits - ref[:, -1]).abs().max()),
    }


def bench_cache(quick: bool, reps: int, new_tokens: int) -> dict:
    from vrwkv_edge.tokenizer import load_tokenizer
    clip_name = "openai/clip-vit-base-patch32" if quick else "openai/clip-vit-large-patch14-336"
    clip = dict(CLIP_CONFIGS[clip_name])
    if quick:
        clip["image_size"] = 336                         # keep the 336 px input / 577-token layout of v6.0...
        clip["patch_size"] = 14                          # ...on a ViT-B-width tower
    vcfg = VisualConfig(version="v6", clip=clip, image_position="first")
    t0 = time.perf_counter()
    model = build_random_visual_model(LM_0B1_X060, vcfg, seed=3)
    t_build = time.perf_counter() - t0
    tok = load_tokenizer()
    params = SamplingParams.greedy(max_new_tokens=new_tokens, stop_tokens=())
    questions = ["What is in the image?", "What color is the animal?", "Is it indoors or outdoors?",
                 "How many animals are there?", "Describe the picture."]

    image = IMAGE
    if not image.is_file():                 # without ../shared: the package's deterministic synthetic photo
        from vrwkv_edge.bench.vision import synthetic_photo
        image = synthetic_photo(Path(tempfile.mkdtemp(prefix="bench-visual-scan-")) / "photo.jpg")

    def items(q):
        return question_prompt(tok, q, "v6", image_position="first").with_images([image])

    t_tower = interleaved({"tower": lambda: model.encode_images([image])}, {"tower": reps}, {"tower"})["tower"][0]
    uncached, cached, prefill_uncached, prefill_cached = [], [], [], []
    answer(model, tok, items(questions[0]), params)                       # warm-up
    for r in range(reps):
        cache = ImageStateCache(2)
        t1 = time.perf_counter()
        a = answer(model, tok, items(questions[r % len(questions)]), params, cache=cache)
        uncached.append(time.perf_counter() - t1)
        prefill_uncached.append(a.timings["prefill_s"])
        t2 = time.perf_counter()
        b = answer(model, tok, items(questions[(r + 1) % len(questions)]), params, cache=cache)
        cached.append(time.perf_counter() - t2)
        prefill_cached.append(b.timings["prefill_s"])
        assert cache.hits == 1, "the second question must hit the image-state cache"
    return {"tower": clip_name + (" (width of B/32, 336 px / patch 14 for 577 tokens)" if quick else ""),
            "image": image.name,
            "tower_parameters": sum(p.numel() for p in model.vit.parameters()),
            "build_s": t_build, "image_tokens": model.tokens_per_image, "new_tokens": new_tokens,
            "tower_encode": summary(t_tower),
            "question_uncached": summary(uncached), "question_cached": summary(cached),
            "prefill_uncached": summary(prefill_uncached), "prefill_cached": summary(prefill_cached),
            "speedup_cached": min(uncached) / min(cached)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 rep, a ViT-B-width CLIP tower")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: on a shared CPU, OpenMP threads that spin while their "
                         "partner is descheduled make multi-threaded timings meaningless; 0 = torch's default)")
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "visual_scan.json")
    args = ap.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    reps = args.reps or (1 if args.quick else 3)
    res = {"benchmark": "visual_scan", "quick": args.quick, "reps": reps,
           "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                       "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                       "load_average_1min_at_start": os.getloadavg()[0]},
           "prefill": bench_prefill(reps),
           "cache": bench_cache(args.quick, reps, args.new_tokens)}
    res["machine"]["load_average_1min_at_end"] = os.getloadavg()[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(res, indent=2) + "\n")
    os.replace(tmp, args.out)
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
