"""Times the official ``rwkv`` package (BlinkDL ChatRWKV pip package) on a checkpoint, in its own process
(RWKV-7 support is switched on by an environment variable before import).  Called by bench_lm.py.

usage: python rwkv_package_timer.py CKPT.pth VERSION STEPS PROMPT_LEN REPEATS VOCAB OUT.json [THREADS]

THREADS: torch intra-op threads (default: torch's own choice); called with it by bench_decode_backends.py.
"""
import json
import os
import statistics
import sys
import time

if len(sys.argv) not in (8, 9):
    sys.exit(__doc__.strip().splitlines()[-3])
ckpt, version, steps, prompt_len, repeats, vocab, out = sys.argv[1:8]
threads = int(sys.argv[8]) if len(sys.argv) == 9 else None
steps, prompt_len, repeats, vocab = int(steps), int(prompt_len), int(repeats), int(vocab)
os.environ["RWKV_V7_ON"] = "1" if version == "x070" else "0"
os.environ["RWKV_CUDA_ON"] = "0"
os.environ.setdefault("RWKV_JIT_ON", "1")

import torch
from rwkv.model import RWKV

torch.set_grad_enabled(False)
if threads:
    torch.set_num_threads(threads)
model = RWKV(model=ckpt[:-4], strategy="cpu fp32")
# the same token sequence as bench_lm.py
tokens = [(i * 7919) % (vocab - 1) + 1 for i in range(max(steps, prompt_len))]


def run_steps():
    state = None
    for t in tokens[:steps]:
        _, state = model.forward([t], state)


def run_prompt():
    model.forward(tokens[:prompt_len], None)


result = {"threads": torch.get_num_threads()}
for name, fn, n in (("step", run_steps, steps), ("forward", run_prompt, prompt_len)):
    fn()  # warm-up (JIT)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    result[name] = {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
                    "repeats": repeats, "tokens": n, "tokens_per_s": n / statistics.median(times)}
with open(out, "w") as f:
    json.dump(result, f)
