"""PyTorch vs ONNX Runtime on the same prompt: the acceptance check of an exported directory.

:func:`validate` prefills the prompt with both runtimes (PyTorch ``forward(last_only=True)``, ORT prefill
graph), then decodes ``n_tokens`` tokens greedily with both (PyTorch ``step``, ORT decode graph).  Both runtimes
are fed the SAME tokens (PyTorch's greedy choice, teacher forcing), so a single disagreement does not make the
two runs drift apart and every position is compared.  The reference is always the float32 PyTorch model, also
for fp16 and int8 exports.  Reported: the max-abs logit difference (prefill, decode, overall) and the greedy
agreement (share of positions where both argmaxes are equal, the prefill's last position included).
For a VisualRWKV export the prompt holds an image in its middle (a seeded random picture), so the vision and
image_prefill graphs are checked too: preprocessing, tower, projector and the per-layer image scan.

Default pass criteria per export precision (override with ``tolerance`` / ``min_agreement``)::

    fp32        max-abs <= 1e-4,  agreement 100 %
    fp16        max-abs <= 0.1,   agreement >= 99 %
    fp32+int8   max-abs <= 1.0,   agreement >= 90 %
    fp32+int4   max-abs <= 1.0,   agreement >= 90 %   (block-wise 4-bit weights; measured top-1 agreement on the
                 trained tiny models: RWKV-7 98.7 %, RWKV-6 93.8 %: benchmarks/results/int4_agreement.json)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch

from vrwkv_edge.fileio import PathLike
from vrwkv_edge.loading import load_model
from vrwkv_edge.models.base import RWKVModel
from vrwkv_edge.runtime.ort import load_onnx_model
from vrwkv_edge.visualrwkv.model import VisualRWKV

DEFAULT_CRITERIA = {"fp32": (1e-4, 1.0), "fp16": (0.1, 0.99), "int8": (1.0, 0.90), "int4": (1.0, 0.90)}
DEFAULT_PROMPT_LEN = 24


@dataclass
class ValidationReport:
    directory: str
    precision: str
    n_prompt: int
    n_tokens: int
    prefill_max_abs: float
    decode_max_abs: float
    max_abs_diff: float
    greedy_agreement: float
    tolerance: float
    min_agreement: float
    passed: bool
    finite: bool = True
    mismatches: list = field(default_factory=list)      # positions where the argmaxes differ
    with_image: bool = False                           # the prompt held an image (VisualRWKV export)

    def summary(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        img = " + 1 image" if self.with_image else ""
        return (f"[{verdict}] {self.directory} ({self.precision}): prompt {self.n_prompt}{img} + {self.n_tokens} "
                f"decode tokens; max-abs logit diff {self.max_abs_diff:.3g} (prefill {self.prefill_max_abs:.3g}, "
                f"decode {self.decode_max_abs:.3g}; tolerance {self.tolerance:g}); greedy agreement "
                f"{100 * self.greedy_agreement:.2f}% (min {100 * self.min_agreement:.2f}%)"
                f"{'' if self.finite else '; NON-FINITE logits'}")

    def to_dict(self) -> dict:
        return asdict(self)


def default_prompt(vocab_size: int, n: int = DEFAULT_PROMPT_LEN, seed: int = 0) -> torch.Tensor:
    """A fixed pseudo-random prompt of ``n`` token ids (for checkpoints without a tokenizer at hand)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (n,), generator=g)



def _load_reference(ckpt_or_model):
    if isinstance(ckpt_or_model, (RWKVModel, VisualRWKV)):
        return ckpt_or_model.float().eval()

    return load_model(ckpt_or_model, dtype=torch.float32)


def validate(directory: PathLike, ckpt_or_model, prompt_ids: Optional[Sequence[int]] = None, n_tokens: int = 64, *,
             tolerance: Optional[float] = None, min_agreement: Optional[float] = None, providers=None,
             verbose: bool = True, ort_model=None) -> ValidationReport:
    """Runs ``prompt_ids`` (default: a fixed pseudo-random prompt) and ``n_tokens`` greedy decode steps through
    the PyTorch model (a model or a checkpoint path) and the export in ``directory``; returns a
    :class:`ValidationReport` (and prints its summary when ``verbose``)."""

    ref = _load_reference(ckpt_or_model)
    ort = ort_model if ort_model is not None else load_onnx_model(directory, providers=providers, spinning=False)
    with_image = hasattr(ort, "vcfg")
    if with_image and not hasattr(ref, "vcfg"):
        raise ValueError(f"{directory} is a VisualRWKV export; validate it against the VisualRWKV checkpoint")
    rc, oc = ref.cfg, ort.cfg
    if (rc.version, rc.n_layer, rc.n_embd, rc.head_size, rc.vocab_size, rc.dim_ffn) != (
            oc.version, oc.n_layer, oc.n_embd, oc.head_size, oc.vocab_size, oc.dim_ffn):
        raise ValueError(f"the checkpoint ({rc.version}, L={rc.n_layer}, C={rc.n_embd}, V={rc.vocab_size}) is not "
                         f"the model exported to {directory} ({oc.version}, L={oc.n_layer}, C={oc.n_embd}, "
                         f"V={oc.vocab_size})")
    meta = ort.metadata
    precision = meta.get("quantize") or meta["dtype"]
    tol_d, agr_d = DEFAULT_CRITERIA[precision]
    tolerance = tol_d if tolerance is None else float(tolerance)
    min_agreement = agr_d if min_agreement is None else float(min_agreement)
    if n_tokens < 0:
        raise ValueError(f"n_tokens must be >= 0, got {n_tokens}")
    prompt = default_prompt(rc.vocab_size) if prompt_ids is None else torch.as_tensor(list(prompt_ids))
    if prompt.dim() != 1 or prompt.numel() == 0:
        raise ValueError("prompt_ids must be a non-empty sequence of token ids")
    prompt = prompt.long().view(1, -1)

    with torch.no_grad():
        if with_image:
            half = prompt.shape[1] // 2
            image = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
            items = [prompt[0, :half].tolist(), image, prompt[0, half:].tolist()]
            lt, st_t = ref.prefill(items)
            lo, st_o = ort.prefill(items)
        else:
            lt, st_t = ref.forward(prompt, ref.new_state(1), last_only=True)
            lo, st_o = ort.forward(prompt, ort.new_state(1), last_only=True)
        prefill = (lt - lo).abs().max().item()
        agree = int(lt.argmax(-1).item() == lo.argmax(-1).item())
        mismatches = [] if agree else [0]
        finite = bool(torch.isfinite(lo).all())
        decode = 0.0
        tok = lt.argmax(-1)
        for i in range(n_tokens):
            lt, st_t = ref.step(tok, st_t)
            lo, st_o = ort.step(tok, st_o)
            decode = max(decode, (lt - lo).abs().max().item())
            finite = finite and bool(torch.isfinite(lo).all())
            same = lt.argmax(-1).item() == lo.argmax(-1).item()
            agree += int(same)
            if not same:
                mismatches.append(i + 1)
            tok = lt.argmax(-1)
    agreement = agree / (n_tokens + 1)
    max_abs = max(prefill, decode)
    passed = finite and max_abs <= tolerance and agreement >= min_agreement
    report = ValidationReport(str(directory), precision, prompt.shape[1], n_tokens, prefill, decode, max_abs,
                              agreement, tolerance, min_agreement, passed, finite, mismatches[:50], with_image)
    if verbose:
        print(report.summary())
    return report


__all__ = ["ValidationReport", "default_prompt", "validate"]
