"""Cross-check of the plain-PyTorch v7 towers against the original implementations (one-off, not a unit test).

timm cannot be installed next to this torch (it needs torchvision), and VisualRWKV's ``src/sam.py`` is not a
package, so this script takes them from source checkouts given on the command line:

    python benchmarks/bench_visual_crosscheck.py --timm-src /path/to/pytorch-image-models \\
        --sam-ref /path/to/VisualRWKV/VisualRWKV-v7/v7.00/src/sam.py [--full]

timm's model code is imported with a throw-away ``torchvision`` stub (only the names its modules import at load
time; no torchvision function is ever called).  For DINOv2-L/14-reg4 and SigLIP-SO400M/14 at 448 px and SAM
ViT-B it checks (1) that the state-dict keys and shapes are identical at full size, and (2) that the features
VisualRWKV uses (``get_intermediate_layers(n={depth-2})`` for the ViTs; SAM encoder + lossless down-sampler) are
equal for the same random weights -- at full size with ``--full`` (slow on CPU), else on reduced-depth copies
with every other hyper-parameter kept.  Results go to ``benchmarks/results/visual_crosscheck.json``.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

from vrwkv_edge.fileio import write_json
from vrwkv_edge.visualrwkv.sam import SAM_VIT_B_1024, SamImageEncoder, space_to_depth
from vrwkv_edge.visualrwkv.vit import DINOV2_L14_REG4_448, SIGLIP_SO400M_14_448, TimmViT

STUB = {
    "torchvision/__init__.py": "from . import transforms, ops, datasets, utils, models\n",
    "torchvision/ops/__init__.py": "from . import misc\n",
    "torchvision/ops/misc.py": "import torch.nn as nn\nclass FrozenBatchNorm2d(nn.Module):\n    pass\n",
    "torchvision/transforms/__init__.py": (
        "from . import functional\nfrom .functional import InterpolationMode\n"
        "def __getattr__(n):\n    return type(n, (), {'__init__': lambda self, *a, **k: None})\n"),
    "torchvision/transforms/functional.py": (
        "import enum\nclass InterpolationMode(enum.Enum):\n    NEAREST='nearest'; NEAREST_EXACT='nearest-exact'\n"
        "    BILINEAR='bilinear'; BICUBIC='bicubic'; BOX='box'; HAMMING='hamming'; LANCZOS='lanczos'\n"),
    "torchvision/datasets/__init__.py": "def __getattr__(n):\n    return type(n, (), {})\n",
    "torchvision/utils.py": "",
    "torchvision/models/__init__.py": "",
}


def import_timm(src: Path):
    stub_dir = Path(tempfile.mkdtemp(prefix="tv_stub_"))
    for rel, text in STUB.items():
        p = stub_dir / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    sys.path[:0] = [str(stub_dir), str(src)]
    import timm
    return timm


def compare_keys(ours: dict, theirs: dict) -> dict:
    a = {k: tuple(v.shape) for k, v in ours.items()}
    b = {k: tuple(v.shape) for k, v in theirs.items()}
    return {"n_keys": len(b), "only_ours": sorted(set(a) - set(b))[:10], "only_reference": sorted(set(b) - set(a))[:10],
            "shape_mismatch": [k for k in a if k in b and a[k] != b[k]][:10], "identical": a == b}


def vit_check(timm, name: str, cfg, full: bool) -> dict:
    with torch.device("meta"):
        ref_full = timm.create_model(name, pretrained=False, num_classes=0, img_size=448)
        ours_full = TimmViT(cfg)
    keys = compare_keys(ours_full.state_dict(), ref_full.state_dict())
    depth = cfg.depth if full else 4
    torch.manual_seed(0)
    ref = timm.create_model(name, pretrained=False, num_classes=0, img_size=448, depth=depth).eval()
    with torch.no_grad():                      # make LayerScale / norms non-trivial
        for n, p in ref.named_parameters():
            if n.endswith("gamma") or ".norm" in n:
                p.add_(0.1 * torch.randn_like(p))
    from dataclasses import replace
    ours = TimmViT(replace(cfg, depth=depth)).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(1, 3, 448, 448)
    t0 = time.perf_counter()
    with torch.no_grad():
        want = ref.get_intermediate_layers(x, n={depth - 2})
        want = want[0] if isinstance(want, (list, tuple)) else want
        got = ours.features(x)
    return {"keys": keys, "depth_checked": depth, "shape": list(got.shape),
            "max_abs_diff": float((got - want).abs().max()), "ref_abs_max": float(want.abs().max()),
            "seconds": time.perf_counter() - t0}


def sam_check(sam_ref: Path, full: bool) -> dict:
    spec = importlib.util.spec_from_file_location("visualrwkv_sam_ref", sam_ref)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with torch.device("meta"):
        ref_full = mod.build_sam_vit_b(checkpoint=None)
        ours_full = SamImageEncoder(SAM_VIT_B_1024)
    keys = compare_keys(ours_full.state_dict(), ref_full.state_dict())
    torch.manual_seed(0)
    ref = mod.build_sam_vit_b(checkpoint=None).eval()
    if not full:                               # keep 1 windowed + 1 global block (indices 1, 2 of ViT-B)
        ref.blocks = torch.nn.ModuleList([ref.blocks[1], ref.blocks[2]])
    with torch.no_grad():
        for n, p in ref.named_parameters():
            if "rel_pos" in n or "pos_embed" in n or n.endswith("bias") or "norm" in n or n.startswith("neck.1")\
                    or n.startswith("neck.3"):
                p.add_(0.1 * torch.randn_like(p))
    from dataclasses import replace
    cfg = SAM_VIT_B_1024 if full else replace(SAM_VIT_B_1024, depth=2, global_attn_indexes=(1,))
    ours = SamImageEncoder(cfg).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(1, 3, 1024, 1024)
    t0 = time.perf_counter()
    with torch.no_grad():
        want = ref(x)                                       # [B, 1024, 32, 32]
        want = want.reshape(1, want.shape[1], -1).permute(0, 2, 1)
        got = ours.features(x)
    s2d = space_to_depth(torch.arange(2 * 4 * 4.).reshape(1, 2, 4, 4))
    return {"keys": keys, "blocks_checked": len(ours.blocks), "shape": list(got.shape),
            "max_abs_diff": float((got - want).abs().max()), "ref_abs_max": float(want.abs().max()),
            "space_to_depth_example_channels_of_token0": s2d[0, :, 0, 0].tolist(),
            "seconds": time.perf_counter() - t0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--timm-src", type=Path, required=True, help="a pytorch-image-models source checkout")
    ap.add_argument("--sam-ref", type=Path, required=True, help="VisualRWKV v7.00 src/sam.py")
    ap.add_argument("--full", action="store_true", help="numerics at full depth (slow on CPU)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "visual_crosscheck.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    timm = import_timm(args.timm_src)
    res = {"timm_version": timm.__version__, "full_depth": args.full,
           "dinov2": vit_check(timm, "vit_large_patch14_reg4_dinov2", DINOV2_L14_REG4_448, args.full),
           "siglip": vit_check(timm, "vit_so400m_patch14_siglip_384", SIGLIP_SO400M_14_448, args.full),
           "sam": sam_check(args.sam_ref, args.full)}
    write_json(args.out, res)
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
