"""A chat client for a Triton server that serves a repository written by ``vrwkv-edge export-triton``.

The server keeps the conversation's RWKV state (implicit state of the sequence batcher); the client sends one
token per request under one sequence id and samples from the returned logits with the package's
:class:`~vrwkv_edge.generation.Sampler`, tokens in and text out through the package's tokenizer::

    vrwkv-edge triton-chat --url localhost:8001 --model rwkv7 [--prompt "Hello"]   # gRPC; --protocol http: 8000

    from vrwkv_edge.serving.triton_client import GrpcTransport, TritonChat
    chat = TritonChat(GrpcTransport("localhost:8001", "rwkv7"), load_tokenizer(), SamplingParams(), sequence_id=42)
    for text in chat.ask("What is RWKV?"):
        print(text, end="")
    chat.close()                                                      # END: the server drops the state

A turn is ``"User: {question}\\n\\nAssistant:"`` (the RWKV World chat format); the answer ends at the stop token
(``\\n\\n``), which is then fed so that the next turn continues from a closed answer.  The prompt goes token
by token (each a request: the serving model is the one-token decode graph, which the sequence batcher batches
across users; RWKV's step is cheap and the state constant, so a prompt costs its length in steps).  The
transport is an interface (:class:`GrpcTransport`, :class:`HttpTransport`, or the in-process
:class:`~vrwkv_edge.serving.emulator.EmulatorTransport` the tests use).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Iterator, Optional, Protocol

import numpy as np
import torch

from vrwkv_edge.cli_support import add_sampling_args, run_command, sampling_from_args
from vrwkv_edge.generation import Sampler, SamplingParams, TextStreamer
from vrwkv_edge.tokenizer import ByteTokenizer, load_tokenizer
from vrwkv_edge.visualrwkv.preprocess import ImageTransform, load_rgb
from vrwkv_edge.visualrwkv.prompts import ImageSlot, followup_ids, question_prompt


class Transport(Protocol):
    embeds_dim: Optional[int]                 # C when the model takes inputs_embeds (VisualRWKV), else None

    def step(self, sequence_id: int, token: int, start: bool, end: bool,
             embeds: Optional[np.ndarray] = None) -> np.ndarray:
        """Sends one token (or, with ``token`` -1, one embedding row [C]) of a sequence; returns the logits [V]."""


def request_inputs(token: int, embeds: Optional[np.ndarray], embeds_dim: Optional[int]) -> dict:
    """One request's inputs, batch dimension excluded: ``input_ids`` [1] and, for a model with the embeddings
    entry, ``inputs_embeds`` [C] (zeros on a token step; ``token`` -1 on an embedding step)."""
    if embeds is not None and embeds_dim is None:
        raise ValueError("this model has no inputs_embeds entry (export-triton --embeds adds it)")
    out = {"input_ids": np.asarray([token], np.int64)}
    if embeds_dim is not None:
        e = np.zeros(embeds_dim, np.float32) if embeds is None else np.asarray(embeds, np.float32)
        if e.shape != (embeds_dim,):
            raise ValueError(f"an embedding row must have shape [{embeds_dim}], got {list(e.shape)}")
        out["inputs_embeds"] = e
    return out


class _TritonTransport:
    def __init__(self, module, url: str, model: str, model_version: str = "", embeds_dim: Optional[int] = None):
        self.module = module
        self.client = module.InferenceServerClient(url=url)
        self.url = url
        self.model = model
        self.version = model_version
        self.embeds_dim = embeds_dim

    def _infer(self, model: str, arrays: dict, output: str, **kw) -> np.ndarray:
        from tritonclient.utils import InferenceServerException, np_to_triton_dtype  # optional dependency

        inputs = []
        for name, a in arrays.items():
            inp = self.module.InferInput(name, list(a.shape), np_to_triton_dtype(a.dtype))
            inp.set_data_from_numpy(a)
            inputs.append(inp)
        try:
            res = self.client.infer(model, inputs, outputs=[self.module.InferRequestedOutput(output)], **kw)
        except InferenceServerException as e:
            raise ConnectionError(f"Triton server {self.url}, model {model!r}: {e}") from e
        return res.as_numpy(output)

    def step(self, sequence_id: int, token: int, start: bool, end: bool,
             embeds: Optional[np.ndarray] = None) -> np.ndarray:
        arrays = {k: v[None] for k, v in request_inputs(token, embeds, self.embeds_dim).items()}   # batch of 1
        return self._infer(self.model, arrays, "logits", model_version=self.version, sequence_id=sequence_id,
                           sequence_start=start, sequence_end=end)[0]

    def image_embeds(self, vision_model: str, pixels: dict) -> np.ndarray:
        """One image through the VisualRWKV tower model: ``pixels`` {input name: [3, S, S]} -> [T, C]."""
        arrays = {k: np.asarray(v, np.float32)[None] for k, v in pixels.items()}
        return self._infer(vision_model, arrays, "image_embeds")[0]


class GrpcTransport(_TritonTransport):
    def __init__(self, url: str, model: str, model_version: str = "", embeds_dim: Optional[int] = None):
        import tritonclient.grpc as grpcclient  # optional dependency: pip install 'tritonclient[grpc]'

        super().__init__(grpcclient, url, model, model_version, embeds_dim)


class HttpTransport(_TritonTransport):
    def __init__(self, url: str, model: str, model_version: str = "", embeds_dim: Optional[int] = None):
        import tritonclient.http as httpclient  # optional dependency: pip install 'tritonclient[http]'

        super().__init__(httpclient, url, model, model_version, embeds_dim)


class TritonChat:
    """One conversation = one sequence on the server (module docstring)."""

    def __init__(self, transport: Transport, tokenizer, params: Optional[SamplingParams] = None,
                 sequence_id: Optional[int] = None):
        self.transport = transport
        self.tokenizer = tokenizer
        self.params = params or SamplingParams()
        if sequence_id is not None and sequence_id < 1:
            raise ValueError(f"sequence_id must be >= 1 (Triton reserves 0), got {sequence_id}")
        self.sequence_id = sequence_id if sequence_id is not None else random.SystemRandom().randrange(1, 2 ** 63)
        self.started = False
        self.closed = False
        self.last_tokens: list[int] = []

    def feed(self, ids: list[int]) -> np.ndarray:
        """Sends tokens one request each; returns the logits after the last."""
        if self.closed:
            raise RuntimeError("this conversation is closed (its sequence ended)")
        if not ids:
            raise ValueError("feed: no tokens")
        logits = None
        for t in ids:
            logits = self.transport.step(self.sequence_id, int(t), not self.started, False)
            self.started = True
        return logits

    def feed_embeds(self, embeds: np.ndarray) -> np.ndarray:
        """Sends embedding rows [T, C] (an image's projected embeddings), one request each; returns the logits
        after the last.  Needs a model with the embeddings entry (a VisualRWKV repository)."""
        if self.closed:
            raise RuntimeError("this conversation is closed (its sequence ended)")
        embeds = np.asarray(embeds, np.float32)
        if embeds.ndim != 2 or not len(embeds):
            raise ValueError(f"feed_embeds takes [T, C] with T >= 1, got shape {list(embeds.shape)}")
        logits = None
        for row in embeds:
            logits = self.transport.step(self.sequence_id, -1, not self.started, False, embeds=row)
            self.started = True
        return logits

    def ask_image(self, image_embeds: np.ndarray, question: str, metadata: dict) -> Iterator[str]:
        """The first turn of an image conversation: the VisualRWKV prompt of ``question`` with the image's
        embeddings (from the ``<name>_vision`` model, :meth:`GrpcTransport.image_embeds`) in its slot, then the
        answer.  ``metadata``: the repository's ``<name>/metadata.json``.  Exact only for a model whose image
        scan is the identity (``unidirectional``, VisualRWKV v7.00): other scans run the image span layer by
        layer in a permuted order, which one-embedding-per-request feeding cannot reproduce."""
        visual = metadata.get("visual")
        if not visual:
            raise ValueError("metadata.json has no 'visual' section: not a VisualRWKV model")
        cfg = visual["config"]
        if cfg.get("scan", "unidirectional") != "unidirectional":
            raise ValueError(f"image scan {cfg['scan']!r}: the image span must run layer by layer in that order "
                             f"(the image_prefill graph), which Triton's one-token stateful model cannot do; only "
                             f"the unidirectional scan (VisualRWKV v7.00) is served exactly")
        prompt = question_prompt(self.tokenizer, question, cfg["version"],
                                 image_position=cfg.get("image_position", "middle"))
        logits = None
        for item in prompt.items:
            logits = self.feed_embeds(image_embeds) if isinstance(item, ImageSlot) else self.feed(list(item))
        yield from self.answer_from(logits)

    def ask(self, question: str) -> Iterator[str]:
        """Streams the answer's text; :attr:`last_tokens` holds its token ids afterwards."""
        ids = followup_ids(self.tokenizer, question)
        if not ids:
            raise ValueError("the question is empty")
        yield from self.answer_from(self.feed(ids))

    def answer_from(self, logits: np.ndarray) -> Iterator[str]:
        """Samples an answer from ``logits`` (the logits after a prompt), feeding each token back."""
        p = self.params
        sampler = Sampler(p, 1, logits.shape[-1])
        streamer = TextStreamer(self.tokenizer)
        self.last_tokens = []
        stops = set(p.stop_tokens or ())
        for _ in range(p.max_new_tokens):
            token = int(sampler(torch.from_numpy(np.asarray(logits, np.float32))[None])[0])
            if token in stops:
                self.feed([token])               # close the answer, as the next turn expects
                break
            self.last_tokens.append(token)
            yield streamer.push(token)
            logits = self.feed([token])
        yield streamer.flush()

    def close(self) -> None:
        """Ends the sequence (the server frees its state); a request with ``END`` needs an input: token 0."""
        if self.started and not self.closed:
            self.transport.step(self.sequence_id, 0, False, True)
        self.closed = True


# ---- command line -----------------------------------------------------------------------------------------
def add_client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default="localhost:8001", help="the server (gRPC 8001, HTTP 8000)")
    p.add_argument("--model", required=True, help="the decode model's name in the repository")
    p.add_argument("--protocol", default="grpc", choices=["grpc", "http"])
    p.add_argument("--prompt", default=None, help="one question (default: interactive)")
    p.add_argument("--tokenizer", default="world", help="world | bytes | PATH to a vocabulary file")
    p.add_argument("--sequence-id", type=int, default=None, help="default: random")
    p.add_argument("--image", default=None, help="VisualRWKV: an image for the first question (needs --metadata)")
    p.add_argument("--metadata", type=Path, default=None,
                   help="VisualRWKV: the repository's <model>/metadata.json (image sizes, prompt version)")
    add_sampling_args(p)
    p.set_defaults(func=cmd_triton_chat)


def _tokenizer(name: str):
    if name == "bytes":
        return ByteTokenizer()
    return load_tokenizer(None if name == "world" else name)


def image_pixels(image, metadata: dict) -> dict:
    """An image file -> the tower model's inputs {name: [3, S, S]}, as the export's metadata describes them."""
    visual = metadata.get("visual")
    if not visual:
        raise ValueError("the metadata has no 'visual' section: not a VisualRWKV model")
    img = load_rgb(image)
    return {p["name"]: ImageTransform(p["mode"], p["size"], tuple(p["mean"]), tuple(p["std"]),
                                      p.get("crop"))(img).numpy() for p in visual["pixel_inputs"]}


def cmd_triton_chat(args) -> int:
    metadata = None
    if args.image is not None:
        if args.metadata is None:
            raise ValueError("--image needs --metadata REPO/<model>/metadata.json (image sizes, prompt version)")
        try:
            metadata = json.loads(args.metadata.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"--metadata {args.metadata}: invalid JSON: {e}") from e
    embeds_dim = metadata["model"]["n_embd"] if metadata else None
    transport = (GrpcTransport if args.protocol == "grpc" else HttpTransport)(args.url, args.model,
                                                                              embeds_dim=embeds_dim)
    chat = TritonChat(transport, _tokenizer(args.tokenizer), sampling_from_args(args), args.sequence_id)
    questions = [args.prompt] if args.prompt is not None else None
    image = None
    if metadata is not None:
        image = transport.image_embeds(f"{args.model}_vision", image_pixels(args.image, metadata))
    try:
        while True:
            if questions is not None:
                if not questions:
                    break
                q = questions.pop()
            else:
                try:
                    q = input("User: ")
                except EOFError:
                    break
            answer = chat.ask(q) if image is None else chat.ask_image(image, q, metadata)
            image = None                              # the image belongs to the first question
            for k, text in enumerate(answer):
                sys.stdout.write(("Assistant:" if k == 0 else "") + text)
                sys.stdout.flush()
            sys.stdout.write("\n")
    finally:
        chat.close()
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m vrwkv_edge.serving.triton_client", description=__doc__.split("\n")[0])
    add_client_args(p)
    return run_command(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
