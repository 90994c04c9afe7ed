"""vrwkv_edge: VisualRWKV and RWKV-6/7 language models for edge deployment.

Public API::

    from vrwkv_edge import load_model, load_tokenizer
    model = load_model("RWKV-x070-World-0.1B.pth")    # version auto-detected; .pth or .safetensors
    state = model.new_state(batch_size=1)
    logits, state = model.forward(ids, state)          # ids LongTensor [B, T] -> logits [B, T, V] float32
    logits, state = model.step(ids[:, 0], state)       # [B] -> [B, V]
    tok = load_tokenizer()                             # RWKV World tokenizer
"""
__version__ = "0.1.0"

__all__ = ["State", "__version__", "load_model", "load_tokenizer"]


def __getattr__(name):
    # Lazy so that ``import vrwkv_edge`` stays cheap and optional parts never load unless used.
    if name == "load_model":
        from .checkpoint import load_model
        return load_model
    if name == "State":
        from .state import State
        return State
    if name == "load_tokenizer":
        from .tokenizer import load_tokenizer
        return load_tokenizer
    raise AttributeError(f"module 'vrwkv_edge' has no attribute {name!r}")
