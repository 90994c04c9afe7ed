"""Serving many streams and serving with Triton Inference Server.

* :mod:`.batcher`: continuous batching on any backend (sequences join and leave at any step, per-row state);
* :mod:`.streams`: aggregate tokens/s and per-stream latency against concurrent streams (``vrwkv-edge bench``);
* :mod:`.triton`: a Triton model repository from an export (``vrwkv-edge export-triton``) and its checks
  against Triton's configuration schema; the serving graph itself is :mod:`vrwkv_edge.export.serving`;
* :mod:`.emulator`: what Triton's sequence batcher does, in process (tests, local runs);
* :mod:`.triton_client`: a chat client over ``tritonclient`` (``vrwkv-edge triton-chat``).
"""
from .batcher import ContinuousBatcher, SequenceResult, TokenEvent

__all__ = ["ContinuousBatcher", "SequenceResult", "TokenEvent"]
