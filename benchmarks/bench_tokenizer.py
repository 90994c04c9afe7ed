"""Benchmark: vrwkv_edge World tokenizer vs the ``rwkv`` package's TRIE_TOKENIZER (pure Python both).

Run from the repository root (the package need not be installed; the working tree is put on sys.path)::

    .venv/bin/python benchmarks/bench_tokenizer.py            # full run, writes benchmarks/results/tokenizer.json
    .venv/bin/python benchmarks/bench_tokenizer.py --quick    # small corpus, prints only (unless --out is given)

How it measures: each of ``--repeats`` rounds starts one fresh worker process per tokenizer (alternating which
goes first), so each tokenizer is timed alone in its process, as an application would use it.  (Timed in one
process the two disturb each other: the reference's ~300 MB of trie nodes make every garbage-collector pass
slow, and in-process timings of both drifted by up to 3x within a run.)  A worker runs each operation once
untimed (the first large call in a fresh process was up to ~2x slower for both), then once under
``time.perf_counter`` with the garbage collector off (as ``timeit`` does).  Reported figures are medians over
the rounds; minima are in ``min_seconds`` and every worker's raw numbers in ``raw_rounds``.  The development
VM is shared (2 vCPUs), so absolute numbers move with its load (recorded as ``load_average_at_end``); the
ratios are steadier.

* load: ``load_tokenizer()`` (cold: a fresh process) vs ``TRIE_TOKENIZER(path)``; also a cached
  ``load_tokenizer()`` call and (``--memory``, default on in full runs) the Python heap each loaded tokenizer
  holds (tracemalloc, in separate workers).
* encode: ``encode(str) -> ids`` of the whole corpus in one call, and ``encode_short``: the same corpus cut
  into 100-character pieces encoded one call each (per-call overhead, as for chat turns; the pieces' tokens
  differ slightly from the whole corpus's at the cuts, and tokens/s counts the pieces' tokens).
* decode: ``decode(ids) -> str`` of the whole corpus.
* per script: encode MB/s on single-script corpora.

The corpus is generated from ``--seed`` (default 0) by :func:`make_corpus`: English prose and Russian with
Zipf-distributed common words plus random rare words, random Chinese and Japanese character runs, Python-like
code with random identifiers, chat-formatted turns, numbers/URLs and emoji, separated by assorted whitespace.
Every worker reports digests of all the ids it produced; the run fails unless they are identical across rounds
and tokenizers.  MB = 10**6 bytes of UTF-8.
"""
from __future__ import annotations

import argparse
import array
import datetime as _dt
import gc
import hashlib
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from vrwkv_edge.fileio import write_json
from vrwkv_edge.tokenizer import load_tokenizer

DEFAULT_OUT = REPO / "benchmarks" / "results" / "tokenizer.json"

# ----------------------------------------------------------------------------------------------- corpus
_EN_WORDS = (
    "the of and to a in is it you that he was for on are with as I his they be at one have this from or had by "
    "word but what some we can out other were all there when up use your how said an each she which do their "
    "time if will way about many then them write would like so these her long make thing see him two has look "
    "more day could go come did number sound no most people my over know water than call first who may down "
    "side been now find any new work part take get place made live where after back little only round man year "
    "came show every good me give our under name very through just form sentence great think say help low line "
    "differ turn cause much mean before move right boy old too same tell does set three want air well also play "
    "small end put home read hand port large spell add even land here must big high such follow act why ask men "
    "change went light kind off need house picture try us again animal point mother world near build self earth "
    "model network memory state token image vision recurrent language device inference export layer weight"
).split()
_RU_WORDS = (
    "и в не на я быть он с что а по это она этот к но они мы как из у который то за свой весь год от так о для "
    "ты же все тот мочь вы человек такой его сказать только или еще бы себя один как уже до время если сам когда "
    "другой вот говорить наш мой знать стать при чтобы дело жизнь кто первый очень два день её новый рука даже "
    "во со раз где там под можно ну какой после их работа без самый потом надо хотеть ли слово идти большой"
).split()
_ZH_CHARS = (
    "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么心多天而能"
    "好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长知民样现分将外但身些与高意进"
    "把法此实回二理美点月明其种声全工己话儿者向情部正名定女问力机给等几很业最间新什打便位因重被走电四第门相次东政海口使"
    "教西再平真听世气信北少关并内加化由却代军产入先山五太水万市眼体别处总才场师书比住员九笑性通目华报立马命张活难神数件"
    "模型网络记忆状态图像视觉语言设备推理导出层权重"
)
_JA_CHARS = (
    "あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりるれろわをんがぎぐげござじずぜぞだで"
    "どばびぶべぼアイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワンー日本語東京私"
    "毎朝新聞読設計小型動作言語画像記憶状態"
)
_EMOJI = ["😀", "🎉", "👍🏽", "🚀", "✨", "❤️", "🇯🇵", "👨‍👩‍👧", "🤖", "📷", "🔥", "😂"]
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_CYR = "абвгдежзийклмнопрстуфхцчшщыьэюя"
_SCRIPTS = ("english", "chinese", "japanese", "russian", "code", "chat", "misc")


def _zipf_choice(rng: random.Random, words: list[str]) -> str:
    # P(rank r) ~ 1/r: pick a rank from a log-uniform draw.
    r = int(len(words) ** rng.random()) - 1
    return words[min(max(r, 0), len(words) - 1)]


def _prose(rng: random.Random, words: list[str], letters: str, n_words: int) -> str:
    out = []
    cap = True
    for _ in range(n_words):
        if rng.random() < 0.15:  # a rare word never seen before
            w = "".join(rng.choice(letters) for _ in range(rng.randint(4, 11)))
        else:
            w = _zipf_choice(rng, words)
        if cap:
            w = w[:1].upper() + w[1:]
            cap = False
        r = rng.random()
        if r < 0.07:
            w += rng.choice([".", ".", "!", "?"])
            cap = True
        elif r < 0.14:
            w += rng.choice([",", ",", ";", ":"])
        elif r < 0.16:
            w = f"{rng.randint(0, 10 ** rng.randint(1, 5))}"
        out.append(w)
    return " ".join(out) + "."


def _cjk(rng: random.Random, chars: str, n: int, punct: str) -> str:
    return "".join(rng.choice(punct) if rng.random() < 0.08 else rng.choice(chars) for _ in range(n)) + punct[-1]


def _ident(rng: random.Random) -> str:
    parts = [_zipf_choice(rng, _EN_WORDS).lower() for _ in range(rng.randint(1, 3))]
    return "_".join(p for p in parts if p.isalpha()) or "x"


def _code(rng: random.Random) -> str:
    lines = [f"def {_ident(rng)}(self, {_ident(rng)}, {_ident(rng)}=None):"]
    indent = 1
    for _ in range(rng.randint(3, 12)):
        kind = rng.random()
        pad = "    " * indent
        if kind < 0.3:
            lines.append(f"{pad}{_ident(rng)} = self.{_ident(rng)}({_ident(rng)}, {rng.randint(0, 4096)})")
        elif kind < 0.45 and indent < 4:
            lines.append(f"{pad}for {_ident(rng)} in range(len({_ident(rng)})):")
            indent += 1
        elif kind < 0.6 and indent < 4:
            lines.append(f"{pad}if {_ident(rng)} is not None and {_ident(rng)} > {rng.random():.3f}:")
            indent += 1
        elif kind < 0.75:
            lines.append(f"{pad}# {_prose(rng, _EN_WORDS, _LETTERS, rng.randint(3, 9))}")
        elif kind < 0.9:
            lines.append(f'{pad}print(f"{{{_ident(rng)}}}: {{{_ident(rng)}:.4f}}", {{"k": [{rng.randint(0, 99)}]}})')
        else:
            indent = max(1, indent - 1)
            lines.append(f"{pad}return {_ident(rng)}")
    return "\n".join(lines) + "\n"


def _segment(rng: random.Random, script: str) -> str:
    if script == "english":
        return _prose(rng, _EN_WORDS, _LETTERS, rng.randint(20, 120))
    if script == "russian":
        return _prose(rng, _RU_WORDS, _CYR, rng.randint(20, 100))
    if script == "chinese":
        return _cjk(rng, _ZH_CHARS, rng.randint(20, 150), "，、；。")
    if script == "japanese":
        return _cjk(rng, _JA_CHARS, rng.randint(20, 120), "、！。")
    if script == "code":
        return _code(rng)
    if script == "chat":
        q = _prose(rng, _EN_WORDS, _LETTERS, rng.randint(5, 20))
        a = _prose(rng, _EN_WORDS, _LETTERS, rng.randint(10, 60))
        return f"User: {q}\n\nAssistant: {a}\n\n"
    # misc: numbers, URLs, emoji, markup
    items = []
    for _ in range(rng.randint(5, 20)):
        r = rng.random()
        if r < 0.3:
            items.append(f"{rng.uniform(-1e4, 1e4):.{rng.randint(0, 6)}f}")
        elif r < 0.5:
            items.append(f"https://{_ident(rng)}.example.org/{_ident(rng)}?id={rng.randint(0, 99999)}")
        elif r < 0.8:
            items.append("".join(rng.choice(_EMOJI) for _ in range(rng.randint(1, 4))))
        else:
            items.append(f"<{_ident(rng)}>{_ident(rng)}</{_ident(rng)}>")
    return " ".join(items)


_WEIGHTS = {"english": 35, "chinese": 15, "japanese": 8, "russian": 10, "code": 15, "chat": 10, "misc": 7}


def make_corpus(seed: int, n_bytes: int, scripts: tuple[str, ...] = _SCRIPTS) -> str:
    """A reproducible mixed-language text of about ``n_bytes`` UTF-8 bytes."""
    rng = random.Random(seed)
    names = list(scripts)
    weights = [_WEIGHTS[s] for s in names]
    out: list[str] = []
    size = 0
    while size < n_bytes:
        seg = _segment(rng, rng.choices(names, weights)[0])
        seg += rng.choice(["\n", "\n\n", " ", "  ", "\n\n\n", "\t"])
        out.append(seg)
        size += len(seg.encode("utf-8"))
    return "".join(out)


# ----------------------------------------------------------------------------------------------- worker
def _timed(fn) -> tuple[float, object]:
    """Seconds for one call with the garbage collector off, as ``timeit`` does."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter()
        result = fn()
        return time.perf_counter() - t0, result
    finally:
        if was_enabled:
            gc.enable()


def _ids_digest(ids) -> str:
    return hashlib.sha256(array.array("I", ids).tobytes()).hexdigest()[:16]


def _reference_vocab() -> Path:
    import rwkv

    return Path(rwkv.__file__).parent / "rwkv_vocab_v20230424.txt"


def _load(contender: str):
    if contender == "ours":
        return load_tokenizer()
    from rwkv.rwkv_tokenizer import TRIE_TOKENIZER

    return TRIE_TOKENIZER(str(_reference_vocab()))


def _worker(contender: str, corpus_dir: Path, memory_only: bool) -> dict:
    """One measurement round for one tokenizer, alone in this process."""
    if memory_only:
        import tracemalloc

        gc.collect()
        tracemalloc.start()
        tok = _load(contender)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
        del tok
        return {"memory_MB": round(held / 1e6, 1)}

    t_start = time.perf_counter()
    out: dict = {}
    out["load_s"], tok = _timed(lambda: _load(contender))
    if contender == "ours":
        out["cached_load_s"] = statistics.median(_timed(load_tokenizer)[0] for _ in range(100))
    text = (corpus_dir / "corpus.txt").read_bytes().decode("utf-8")
    pieces = [text[k:k + 100] for k in range(0, len(text), 100)]
    scripts = {s: (corpus_dir / f"{s}.txt").read_bytes().decode("utf-8") for s in _SCRIPTS}

    def measure(fn):
        fn()  # untimed warm-up: the first big call in a fresh process runs up to ~2x slower
        return _timed(fn)

    out["encode_s"], ids = measure(lambda: tok.encode(text))
    out["n_tokens"] = len(ids)
    digest = {"corpus": _ids_digest(ids)}
    out["encode_short_s"], short = measure(lambda: [tok.encode(x) for x in pieces])
    out["n_pieces"] = len(pieces)
    out["n_short_tokens"] = sum(map(len, short))
    digest["short"] = _ids_digest([i for x in short for i in x])
    out["decode_s"], decoded = measure(lambda: tok.decode(ids))
    out["decode_ok"] = decoded == text
    out["per_script"] = {}
    for s, t in scripts.items():
        sec, sids = measure(lambda: tok.encode(t))
        out["per_script"][s] = {"seconds": sec, "tokens": len(sids)}
        digest[s] = _ids_digest(sids)
    out["digest"] = digest
    out["worker_elapsed_s"] = round(time.perf_counter() - t_start, 2)
    return out


def _run_worker(contender: str, corpus_dir: Path, memory_only: bool = False) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", contender, "--corpus-dir", str(corpus_dir)]
    if memory_only:
        cmd.append("--memory-only")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"worker {contender} failed ({proc.returncode}):\n{proc.stderr}")
    return json.loads(proc.stdout)


# ----------------------------------------------------------------------------------------------- driver
def _rate(n_bytes: int, n_tokens: int, seconds: float) -> dict:
    return {
        "seconds": round(seconds, 6),
        "MB_per_s": round(n_bytes / seconds / 1e6, 3),
        "tokens_per_s": round(n_tokens / seconds),
    }


def _shown_executable() -> str:
    exe = Path(sys.executable)
    try:
        return str(exe.relative_to(REPO))
    except ValueError:
        return exe.name


def _rwkv_version() -> str:
    try:
        from importlib.metadata import version

        return version("rwkv")
    except Exception:  # noqa: BLE001 - informational only
        return "unknown"


def run(args) -> dict:
    contenders = ("ours", "reference")
    with tempfile.TemporaryDirectory(prefix="bench_tokenizer_") as tmp:
        corpus_dir = Path(tmp)
        text = make_corpus(args.seed, int(args.size_mb * 1_000_000))
        data = text.encode("utf-8")
        (corpus_dir / "corpus.txt").write_bytes(data)
        script_bytes = max(100_000, int(args.size_mb * 1_000_000) // 10)
        script_sizes = {}
        for k, script in enumerate(_SCRIPTS):
            b = make_corpus(args.seed + 1 + k, script_bytes, (script,)).encode("utf-8")
            (corpus_dir / f"{script}.txt").write_bytes(b)
            script_sizes[script] = len(b)

        rounds: dict = {c: [] for c in contenders}
        for r in range(args.repeats):
            for c in contenders if r % 2 == 0 else contenders[::-1]:  # alternate which goes first
                w = _run_worker(c, corpus_dir)
                rounds[c].append(w)
                print(f"round {r + 1}/{args.repeats} {c:9s}: load {w['load_s']:.2f} s, encode {w['encode_s']:.2f} s",
                      file=sys.stderr)
        memory = None
        if args.memory:
            memory = {c: _run_worker(c, corpus_dir, memory_only=True)["memory_MB"] for c in contenders}

    digests = {json.dumps(w["digest"], sort_keys=True) for c in contenders for w in rounds[c]}
    if len(digests) != 1:
        raise SystemExit(f"MISMATCH: token ids differ between rounds/tokenizers: {sorted(digests)}")
    if not all(w["decode_ok"] for c in contenders for w in rounds[c]):
        raise SystemExit("MISMATCH: decode(encode(corpus)) != corpus")

    def med(c, key):
        return statistics.median(w[key] for w in rounds[c])

    first = rounds["ours"][0]
    n_bytes, n_tok, n_short = len(data), first["n_tokens"], first["n_short_tokens"]
    per_script = {}
    for s in _SCRIPTS:
        o = statistics.median(w["per_script"][s]["seconds"] for w in rounds["ours"])
        r = statistics.median(w["per_script"][s]["seconds"] for w in rounds["reference"])
        nb = script_sizes[s]
        per_script[s] = {
            "bytes": nb,
            "tokens": first["per_script"][s]["tokens"],
            "ours_MB_per_s": round(nb / o / 1e6, 3),
            "reference_MB_per_s": round(nb / r / 1e6, 3),
            "speedup": round(r / o, 2),
        }
    min_seconds = {
        f"{key}/{c}": round(min(w[key + "_s"] for w in rounds[c]), 6)
        for key in ("load", "encode", "encode_short", "decode")
        for c in contenders
    }
    try:
        load_avg = [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        load_avg = None

    return {
        "benchmark": "bench_tokenizer",
        "command": " ".join([_shown_executable(), "benchmarks/bench_tokenizer.py"] + sys.argv[1:]),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "environment": {
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "platform": platform.platform(),
            "machine": platform.machine(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "rwkv_version": _rwkv_version(),
            "load_average_at_end": load_avg,
        },
        "corpus": {
            "seed": args.seed,
            "bytes": n_bytes,
            "chars": len(text),
            "tokens": n_tok,
            "bytes_per_token": round(n_bytes / n_tok, 3),
            "scripts": _WEIGHTS,
        },
        "repeats": args.repeats,
        "load_seconds": {
            "ours_cold": round(med("ours", "load_s"), 4),
            "ours_cached": round(med("ours", "cached_load_s"), 7),
            "reference": round(med("reference", "load_s"), 4),
        },
        "load_memory_MB": memory,
        "encode": {
            "ours": _rate(n_bytes, n_tok, med("ours", "encode_s")),
            "reference": _rate(n_bytes, n_tok, med("reference", "encode_s")),
        },
        "encode_short": {
            "pieces": first["n_pieces"],
            "ours": _rate(n_bytes, n_short, med("ours", "encode_short_s")),
            "reference": _rate(n_bytes, n_short, med("reference", "encode_short_s")),
        },
        "decode": {
            "ours": _rate(n_bytes, n_tok, med("ours", "decode_s")),
            "reference": _rate(n_bytes, n_tok, med("reference", "decode_s")),
        },
        "encode_per_script": per_script,
        "min_seconds": min_seconds,
        "identical_ids": True,
        "raw_rounds": rounds,
    }


def markdown(res: dict) -> str:
    c = res["corpus"]
    dec, load = res["decode"], res["load_seconds"]
    ref_dec = dec["reference"]["MB_per_s"]
    rows = [
        f"Corpus: {c['bytes'] / 1e6:.2f} MB, {c['tokens']} tokens (seed {c['seed']}); median of {res['repeats']}; "
        f"Python {res['environment']['python']}; ids identical to the reference: {res['identical_ids']}",
        "",
        "| operation | ours | rwkv TRIE_TOKENIZER | speed-up |",
        "|---|---:|---:|---:|",
        f"| load (cold parse) | {load['ours_cold'] * 1e3:.0f} ms | {load['reference'] * 1e3:.0f} ms "
        f"| {load['reference'] / load['ours_cold']:.1f}x |",
        f"| load (cached `load_tokenizer()`) | {load['ours_cached'] * 1e6:.1f} us | - | - |",
    ]
    if res.get("load_memory_MB"):
        mem = res["load_memory_MB"]
        rows.append(f"| heap after load | {mem['ours']:.0f} MB | {mem['reference']:.0f} MB "
                    f"| {mem['reference'] / mem['ours']:.1f}x less |")
    for key, label in (("encode", "encode (one call)"), ("encode_short", "encode (100-char calls)")):
        o, r = res[key]["ours"], res[key]["reference"]
        rows.append(
            f"| {label} | {o['MB_per_s']:.2f} MB/s, {o['tokens_per_s'] / 1e6:.2f} M tok/s "
            f"| {r['MB_per_s']:.2f} MB/s, {r['tokens_per_s'] / 1e6:.2f} M tok/s "
            f"| {o['MB_per_s'] / r['MB_per_s']:.2f}x |"
        )
    d = dec["ours"]
    rows.append(
        f"| decode | {d['MB_per_s']:.1f} MB/s, {d['tokens_per_s'] / 1e6:.1f} M tok/s "
        f"| {ref_dec:.1f} MB/s, {dec['reference']['tokens_per_s'] / 1e6:.1f} M tok/s | {d['MB_per_s'] / ref_dec:.2f}x |"
    )
    rows += [
        "",
        "| script (encode) | bytes/token | ours MB/s | reference MB/s | speed-up |",
        "|---|---:|---:|---:|---:|",
    ]
    for s, v in res["encode_per_script"].items():
        rows.append(
            f"| {s} | {v['bytes'] / v['tokens']:.2f} | {v['ours_MB_per_s']:.2f} | {v['reference_MB_per_s']:.2f} "
            f"| {v['speedup']:.2f}x |"
        )
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="0.2 MB corpus, 3 rounds, no JSON unless --out")
    ap.add_argument("--size-mb", type=float, default=None, help="corpus size in MB (default 4; --quick: 0.2)")
    ap.add_argument("--repeats", type=int, default=None, help="measurement rounds (default 5; --quick: 3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--memory", action=argparse.BooleanOptionalAction, default=None,
                    help="also measure the heap held after loading (tracemalloc; default on, off with --quick)")
    ap.add_argument("--out", type=Path, default=None, help=f"JSON output (default {DEFAULT_OUT.relative_to(REPO)})")
    ap.add_argument("--worker", choices=("ours", "reference"), help=argparse.SUPPRESS)
    ap.add_argument("--corpus-dir", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--memory-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args.worker, args.corpus_dir, args.memory_only)))
        return 0
    if args.quick:
        args.size_mb = args.size_mb or 0.2
        args.repeats = args.repeats or 3
        args.memory = bool(args.memory)
    else:
        args.size_mb = args.size_mb or 4.0
        args.repeats = args.repeats or 5
        args.out = args.out or DEFAULT_OUT
        args.memory = args.memory is not False
    res = run(args)
    print(markdown(res))
    if args.out is not None:
        write_json(args.out, res)
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
