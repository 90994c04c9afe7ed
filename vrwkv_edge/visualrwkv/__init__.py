"""VisualRWKV (v6.0: RWKV-6 + CLIP; v7.00: RWKV-7 + SAM/DINOv2/SigLIP; either LM + a Vision-RWKV tower) on the
vrwkv_edge runtime.

    from vrwkv_edge import load_model
    from vrwkv_edge.tokenizer import load_tokenizer
    from vrwkv_edge.visualrwkv import question_prompt, answer

    model = load_model("VisualRWKV-v060-1B6.pth")          # a VisualRWKV (full file or either half of a pair)
    tok = load_tokenizer()
    p = question_prompt(tok, "What is in the picture?", model.visual_version,
                        image_position=model.vcfg.image_position)
    logits, state = model.prefill(p.with_images(["cat.jpg"]))  # exact image scanning, then a plain RNN
    ...                                                       # generate from (state, logits) as for any LM

Modules: :mod:`.prompts` (training templates), :mod:`.preprocess` (tower image transforms), :mod:`.towers`,
:mod:`.vit`, :mod:`.sam` (vision towers), :mod:`.scan` (image scanning: exact recurrent prefill and the
training-style reference), :mod:`.model` (:class:`VisualRWKV`), :mod:`.loading` (checkpoints), :mod:`.cache`
(image-state cache), :mod:`.runtime` (answering, chat sessions), :mod:`.builders` (tiny random models of
every tower family, for examples, tests and benchmarks), :mod:`.cli` (``chat``, ``eval``, ``assemble``).

Importing this package is cheap: ``transformers`` (the v6 CLIP tower) is imported only when a v6 tower is built.
"""
from .builders import tiny_v6, tiny_v7, tiny_vrwkv
from .cache import ImageStateCache
from .loading import (VISUAL_CONFIG_KEY, assemble_vrwkv_visual_model, build_random_visual_model, is_visual_state_dict,
                      load_visual_model, save_visual_checkpoint, split_partner, visual_model_from_state_dict)
from .model import VisualConfig, VisualRWKV
from .prompts import ImageSlot, VisualPrompt, conversation_prompt, question_prompt, training_ids
from .runtime import ChatSession, answer
from .scan import SCAN_MODES, ImageSpan, scan_prefill, training_style_forward

__all__ = [
    "ChatSession", "ImageSlot", "ImageSpan", "ImageStateCache", "SCAN_MODES", "VISUAL_CONFIG_KEY", "VisualConfig",
    "VisualPrompt", "VisualRWKV", "answer", "assemble_vrwkv_visual_model", "build_random_visual_model", "conversation_prompt",
    "is_visual_state_dict", "load_visual_model", "question_prompt", "save_visual_checkpoint", "scan_prefill",
    "split_partner", "tiny_v6", "tiny_v7", "tiny_vrwkv", "training_ids", "training_style_forward", "visual_model_from_state_dict",
]
