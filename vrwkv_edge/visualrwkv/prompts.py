"""VisualRWKV prompt templates, exactly as the released models were trained (spec §2).

A conversation is a list of LLaVA turns ``{"from": "human" | "gpt", "value": str}``.  Rendering:

* roles: ``human`` -> ``"User"``, ``gpt`` -> ``"Assistant"``; no system prompt, no BOS;
* a turn with text is ``"{Role}: {value}\\n\\n"``; an EMPTY turn (the one the model must answer) is
  ``"{Role}:"`` with no trailing space and no ``"\\n\\n"``;
* values are ``strip()``-ped and every run of blank lines (regex ``\\n(\\s*\\n)+``) collapses to one ``"\\n"``,
  keeping ``"\\n\\n"`` (token 261) free for the turn separator;
* **each turn is tokenized on its own** and the ids are concatenated (tokens never merge across turns); a turn
  holding ``<image>`` is split on the tag and every piece is tokenized separately.

Image placement:

* **v6** (``image_position``; the released fine-tuned models use ``"middle"``):
  ``first``: ``User: <image>\\n{Q}``; ``last``: ``User: {Q}\\n<image>``; ``middle`` (the paper's *sandwich
  prompt*): ``User: {ALL_HUMAN}\\n<image>\\n{Q}`` where ALL_HUMAN joins every human turn of the conversation by
  ``"\\n"``, image turns with ``<image>`` and ``"Answer the question using a single word or phrase."`` removed.
  Only the turn that contains ``<image>`` is rewritten.  One image at most.
* **v7**: every ``<image>`` of a human turn moves to the start of that turn, one per line:
  ``User: <image>\\n<image>\\n{Q}``; the tag count must equal the number of images.

The result is a :class:`VisualPrompt`: ``items`` is a list of token-id lists and :class:`ImageSlot` markers (the
form :meth:`vrwkv_edge.visualrwkv.model.VisualRWKV.prefill` takes once the slots are replaced by images), and
``text`` the rendered string with the ``<image>`` tags (the ``prompt`` field of the eval output).
:func:`training_ids` expands the slots into the training placeholders (v6: one ``-200``; v7:
``num_token_per_image`` copies of 65535) to compare against the training code's ``input_ids``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence, Union

IMAGE_TAG = "<image>"
SHORT_ANSWER_INSTRUCTION = "Answer the question using a single word or phrase."
STOP_TOKEN = 261                     # "\n\n"
STOP_TEXT = "\n\n"
V6_IMAGE_TOKEN_INDEX = -200          # v6 training placeholder (never embedded)
V7_IMAGE_TOKEN_INDEX = 65535         # v7 training placeholder row (overwritten by the image features)
IMAGE_POSITIONS = ("first", "middle", "last")
ROLES = {"human": "User", "gpt": "Assistant"}
_BLANK_LINES = re.compile(r"\n(\s*\n)+")


@dataclass(frozen=True)
class ImageSlot:
    """Where image number ``index`` (0-based, in prompt order) goes."""
    index: int


PromptItem = Union[list, ImageSlot]


@dataclass
class VisualPrompt:
    items: list                                  # list[int] chunks and ImageSlot markers, in order
    text: str                                    # rendered prompt, with "<image>" tags
    turns: list = field(default_factory=list)    # the processed LLaVA turns

    @property
    def num_images(self) -> int:
        return sum(isinstance(i, ImageSlot) for i in self.items)

    def token_ids(self) -> list[int]:
        """All text ids in order (image slots skipped)."""
        return [t for i in self.items if not isinstance(i, ImageSlot) for t in i]

    def with_images(self, images: Sequence) -> list:
        """``items`` with each slot replaced by ``images[slot.index]`` (for ``VisualRWKV.prefill``)."""
        if len(images) != self.num_images:
            raise ValueError(f"the prompt has {self.num_images} <image> slot(s) but {len(images)} image(s) "
                             f"were given")
        return [images[i.index] if isinstance(i, ImageSlot) else list(i) for i in self.items]


def collapse_blank_lines(text: str) -> str:
    return _BLANK_LINES.sub("\n", text)


def _check_turns(conversations: Sequence[Mapping]) -> list[dict]:
    out = []
    for n, turn in enumerate(conversations):
        if not isinstance(turn, Mapping) or "from" not in turn or "value" not in turn:
            raise ValueError(f"conversation turn {n}: expected a dict with 'from' and 'value', got {turn!r}")
        who = str(turn["from"]).lower()
        if who not in ROLES:
            raise ValueError(f"conversation turn {n}: unknown speaker {turn['from']!r}, must be human or gpt")
        if not isinstance(turn["value"], str):
            raise ValueError(f"conversation turn {n}: 'value' must be a string, got {type(turn['value']).__name__}")
        out.append({"from": who, "value": turn["value"]})
    return out


def _all_human_text(turns: Sequence[Mapping]) -> str:
    parts = []
    for t in turns:
        if t["from"] != "human":
            continue
        if IMAGE_TAG in t["value"]:
            v = t["value"].replace(IMAGE_TAG, "").strip()
            v = v.replace(SHORT_ANSWER_INSTRUCTION, "").strip()
            parts.append(collapse_blank_lines(v))
        else:
            parts.append(t["value"].strip())
    return "\n".join(parts)


def process_v6(conversations: Sequence[Mapping], image_position: str = "middle") -> list[dict]:
    """v6.0 ``process_image_tokens_in_conversations`` (returns new dicts; the input is not modified)."""
    if image_position not in IMAGE_POSITIONS:
        raise ValueError(f"unknown image_position {image_position!r}; choose one of {IMAGE_POSITIONS}")
    turns = _check_turns(conversations)
    n_tags = sum(t["value"].count(IMAGE_TAG) for t in turns)
    if n_tags > 1:
        raise ValueError(f"VisualRWKV v6 takes one image per conversation, the turns hold {n_tags} <image> tags")
    all_human = _all_human_text(turns) if image_position == "middle" else ""
    for t in turns:
        v = t["value"]
        if IMAGE_TAG in v:
            v = collapse_blank_lines(v.replace(IMAGE_TAG, "").strip())
            if image_position == "first":
                v = IMAGE_TAG + "\n" + v
            elif image_position == "middle":
                v = all_human + "\n" + IMAGE_TAG + "\n" + v
            else:
                v = v + "\n" + IMAGE_TAG
            t["value"] = v.strip()
        else:
            t["value"] = collapse_blank_lines(v.strip())
    return turns


def process_v7(conversations: Sequence[Mapping], num_images: int) -> list[dict]:
    """v7.00 ``process_image_tokens_in_conversations``: images first in their human turn, one per line."""
    turns = _check_turns(conversations)
    n_tags = sum(t["value"].count(IMAGE_TAG) for t in turns)
    if n_tags != num_images:
        raise ValueError(f"the conversation holds {n_tags} <image> tag(s) but {num_images} image(s) were given")
    for t in turns:
        v = t["value"]
        if IMAGE_TAG in v:
            n_local = v.count(IMAGE_TAG)
            v = collapse_blank_lines(v.replace(IMAGE_TAG, "").strip())
            if t["from"] == "human":
                v = "\n".join([IMAGE_TAG] * n_local) + "\n" + v
            t["value"] = v.strip()
        else:
            t["value"] = collapse_blank_lines(v.strip())
    return turns


def render_turn(turn: Mapping) -> str:
    role = ROLES[turn["from"]]
    return f"{role}: {turn['value']}{STOP_TEXT}" if turn["value"] else f"{role}:"


def tokenize_turns(turns: Sequence[Mapping], tokenizer) -> tuple[list, str]:
    """Each turn tokenized on its own, split on ``<image>``.  Returns ``(items, rendered text)``; adjacent
    text chunks are concatenated (ids unchanged)."""
    items: list = []
    texts = []
    n_img = 0

    def add_ids(ids):
        if not ids:
            return
        if items and not isinstance(items[-1], ImageSlot):
            items[-1].extend(ids)
        else:
            items.append(list(ids))

    for t in turns:
        s = render_turn(t)
        texts.append(s)
        pieces = s.split(IMAGE_TAG)
        for j, piece in enumerate(pieces):
            if j:
                items.append(ImageSlot(n_img))
                n_img += 1
            add_ids(tokenizer.encode(piece))
    return items, "".join(texts)


def conversation_prompt(tokenizer, conversations: Sequence[Mapping], version: str = "v6", *,
                        image_position: str = "middle", num_images: int | None = None) -> VisualPrompt:
    """A full conversation (usually ending with an empty ``gpt`` turn to be answered) as a :class:`VisualPrompt`."""
    if version == "v6":
        turns = process_v6(conversations, image_position)
    elif version == "v7":
        if num_images is None:
            num_images = sum(str(t.get("value", "")).count(IMAGE_TAG) for t in conversations)
        turns = process_v7(conversations, num_images)
    else:
        raise ValueError(f"unknown VisualRWKV version {version!r}; choose v6 or v7")
    items, text = tokenize_turns(turns, tokenizer)
    return VisualPrompt(items, text, turns)


def question_prompt(tokenizer, question: str, version: str = "v6", *, image_position: str = "middle",
                    num_images: int = 1, history: Iterable[tuple[str, str]] = ()) -> VisualPrompt:
    """The evaluation prompt for one question about ``num_images`` image(s), as ``evaluate.py`` builds it:
    v6 prepends ``"<image>\\n"`` (when the question has no tag and an image is given) and applies
    ``image_position``; v7 removes any tags and prepends one ``<image>`` line per image.
    ``history``: earlier (question, answer) pairs, placed before (the first question carries the image)."""
    history = list(history)
    first_q = history[0][0] if history else question
    if version == "v6":
        if num_images > 1:
            raise ValueError("VisualRWKV v6 takes one image per conversation")
        if num_images and IMAGE_TAG not in first_q:
            first_q = IMAGE_TAG + "\n" + first_q
    elif version == "v7":
        first_q = first_q.replace(IMAGE_TAG, "").strip()
        if num_images:
            first_q = "\n".join([IMAGE_TAG] * num_images) + "\n" + first_q
    else:
        raise ValueError(f"unknown VisualRWKV version {version!r}; choose v6 or v7")
    turns = []
    qs = [q for q, _ in history] + [question]
    answers = [a for _, a in history] + [""]
    qs[0] = first_q
    for q, a in zip(qs, answers):
        turns += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
    return conversation_prompt(tokenizer, turns, version, image_position=image_position, num_images=num_images)


def followup_ids(tokenizer, question: str) -> list[int]:
    """Token ids of a later turn in a running chat: ``"User: {Q}\\n\\n"`` + ``"Assistant:"``, each turn
    tokenized on its own (the previous answer must have been closed with the stop token 261)."""
    q = collapse_blank_lines(question.replace(IMAGE_TAG, "").strip())
    return tokenizer.encode(render_turn({"from": "human", "value": q})) + \
        tokenizer.encode(render_turn({"from": "gpt", "value": ""}))


def training_ids(prompt: VisualPrompt, version: str, num_token_per_image: int = 1024) -> list[int]:
    """The training code's ``input_ids`` for this prompt: v6 one ``-200`` per image, v7
    ``num_token_per_image`` copies of 65535."""
    out: list[int] = []
    for it in prompt.items:
        if isinstance(it, ImageSlot):
            out += [V6_IMAGE_TOKEN_INDEX] if version == "v6" else [V7_IMAGE_TOKEN_INDEX] * num_token_per_image
        else:
            out += it
    return out
