"""vrwkv_edge: VisualRWKV and RWKV-6/7 language models for edge deployment.

Public API::

    from vrwkv_edge import load_model, load_tokenizer
    model = load_model("RWKV-x070-World-0.1B.pth")    # version auto-detected; .pth or .safetensors
    state = model.new_state(batch_size=1)
    logits, state = model.forward(ids, state)          # ids LongTensor [B, T] -> logits [B, T, V] float32
    logits, state = model.step(ids[:, 0], state)       # [B] -> [B, V]
    tok = load_tokenizer()                             # RWKV World tokenizer

Rooms, ground floor first: :mod:`.fileio`, :mod:`.checkpoint`, :mod:`.config`, :mod:`.dtypes`, :mod:`.state`,
:mod:`.tokenizer`; :mod:`.ops` (WKV references, chunked forms, :mod:`.ops.dispatch`); :mod:`.models` (RWKV-6/7);
:mod:`.vision_rwkv`; :mod:`.visualrwkv`; :mod:`.loading` (``load_model``); :mod:`.protocol`; :mod:`.generation`;
:mod:`.runtime` (backends that read export artefacts); ``vrwkv_edge.export`` (writes them); :mod:`.bench`;
:mod:`.cli`.
"""
__version__ = "0.2.0"

from .loading import load_model
from .protocol import LanguageModel, VisionLanguageModel
from .state import State
from .tokenizer import load_tokenizer

__all__ = ["LanguageModel", "State", "VisionLanguageModel", "__version__", "load_model", "load_tokenizer"]
