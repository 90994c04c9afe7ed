"""Serving many streams: continuous batching on any backend (``batcher``)."""
from .batcher import ContinuousBatcher, SequenceResult, TokenEvent

__all__ = ["ContinuousBatcher", "SequenceResult", "TokenEvent"]
