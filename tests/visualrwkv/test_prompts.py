"""Acceptance 2: the training templates, pinned to exact token ids.

The expected ids are assembled by hand from the ids the spec gives ("User: " -> [24281, 59, 33],
"Assistant:" -> [5585, 41693, 59], "\\n" -> 11, "\\n\\n" -> 261) and the World tokenizer's ids of the words
(checked one by one in ``test_word_ids``), following the training code's rule that every turn -- and every
piece of a turn around ``<image>`` -- is tokenized on its own.
"""
from __future__ import annotations

import pytest

from vrwkv_edge.tokenizer import load_tokenizer
from vrwkv_edge.visualrwkv.prompts import (ImageSlot, collapse_blank_lines, conversation_prompt, followup_ids,
                                           process_v6, question_prompt, training_ids)

USER = [24281, 59, 33]                 # "User: "          (spec)
USER_NO_SPACE = [24281, 59]            # "User:" then a word with its leading space
ASSISTANT = [5585, 41693, 59]          # "Assistant:"      (spec)
NL, STOP = 11, 261                     # "\n", "\n\n"      (spec)
# "What is the color of the cat?" -- 'What' ' is' ' the' ' color' ' of' ' the' ' cat' '?'
Q = [24326, 4600, 22590, 38083, 4706, 22590, 21417, 64]
Q_AFTER_COLON = [30031] + Q[1:]        # ' What' when it follows "User:"
# "Answer the question using a single word or phrase."
SHORT = [40301, 22590, 57009, 40085, 332, 47289, 32497, 4715, 46808, 47]
# "Compare the two pictures."
COMPARE = [48424, 22590, 22638, 56858, 47]
QUESTION = "What is the color of the cat?\nAnswer the question using a single word or phrase."


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


def test_word_ids(tok):
    assert tok.encode("User: ") == USER
    assert tok.encode("Assistant: yes\n\n") == [5585, 41693, 59, 22796, 261]
    words = {24326: "What", 4600: " is", 22590: " the", 38083: " color", 4706: " of", 21417: " cat", 64: "?",
             30031: " What", 40301: "Answer", 57009: " question", 40085: " using", 332: " a", 47289: " single",
             32497: " word", 4715: " or", 46808: " phrase", 47: ".", 48424: "Compare", 22638: " two",
             56858: " pictures"}
    for i, w in words.items():
        assert tok.decode([i]) == w
        assert tok.encode(w) == [i]


def test_v6_image_first(tok):
    p = question_prompt(tok, QUESTION, "v6", image_position="first")
    assert p.text == ("User: <image>\nWhat is the color of the cat?\nAnswer the question using a single word or "
                      "phrase.\n\nAssistant:")
    assert p.items == [USER, ImageSlot(0), [NL] + Q + [NL] + SHORT + [STOP] + ASSISTANT]
    assert training_ids(p, "v6") == USER + [-200] + [NL] + Q + [NL] + SHORT + [STOP] + ASSISTANT


def test_v6_image_last(tok):
    p = question_prompt(tok, QUESTION, "v6", image_position="last")
    assert p.text.endswith("phrase.\n<image>\n\nAssistant:")
    assert p.items == [USER_NO_SPACE + Q_AFTER_COLON + [NL] + SHORT + [NL], ImageSlot(0), [STOP] + ASSISTANT]


def test_v6_sandwich_prompt(tok):
    """middle: the question (short-answer instruction removed) before the image, the full question after."""
    p = question_prompt(tok, QUESTION, "v6", image_position="middle")
    assert p.text == ("User: What is the color of the cat?\n<image>\nWhat is the color of the cat?\nAnswer the "
                      "question using a single word or phrase.\n\nAssistant:")
    assert p.items == [USER_NO_SPACE + Q_AFTER_COLON + [NL], ImageSlot(0),
                       [NL] + Q + [NL] + SHORT + [STOP] + ASSISTANT]
    assert training_ids(p, "v6") == USER_NO_SPACE + Q_AFTER_COLON + [NL, -200, NL] + Q + [NL] + SHORT + \
        [STOP] + ASSISTANT


def test_v6_sandwich_multiturn_training_conversation(tok):
    """Training data: all human turns go before the image in the first turn; answers are ' A\\n\\n' targets."""
    conv = [{"from": "human", "value": "<image>\nWhat is the color of the cat?"},
            {"from": "gpt", "value": "Black."},
            {"from": "human", "value": "Is it sleeping?"},
            {"from": "gpt", "value": "Yes"}]
    p = conversation_prompt(tok, conv, "v6", image_position="middle")
    assert p.text == ("User: What is the color of the cat?\nIs it sleeping?\n<image>\nWhat is the color of the cat?"
                      "\n\nAssistant: Black.\n\nUser: Is it sleeping?\n\nAssistant: Yes\n\n")
    is_it_sleeping = [1140, 4601, 57244, 64]                   # 'Is' ' it' ' sleeping' '?'
    assert p.items == [
        USER_NO_SPACE + Q_AFTER_COLON + [NL] + is_it_sleeping + [NL], ImageSlot(0),
        [NL] + Q + [STOP]                                      # end of the human turn
        + ASSISTANT + [36368, 47, STOP]                        # "Assistant: Black.\n\n" (' Black' '.')
        + USER_NO_SPACE + [3917] + is_it_sleeping[1:] + [STOP]  # "User: Is it sleeping?\n\n" (' Is')
        + ASSISTANT + [21186, STOP]]                           # "Assistant: Yes\n\n" (' Yes')


def test_v6_multiturn_inference_history(tok):
    p = question_prompt(tok, "Is it sleeping?", "v6", image_position="first",
                        history=[("What is the color of the cat?", "Black.")])
    assert p.text == ("User: <image>\nWhat is the color of the cat?\n\nAssistant: Black.\n\nUser: Is it sleeping?"
                      "\n\nAssistant:")
    assert p.items[:2] == [USER, ImageSlot(0)]


def test_v7_multi_image(tok):
    p = question_prompt(tok, "Compare the two pictures.", "v7", num_images=2)
    assert p.text == "User: <image>\n<image>\nCompare the two pictures.\n\nAssistant:"
    assert p.items == [USER, ImageSlot(0), [NL], ImageSlot(1), [NL] + COMPARE + [STOP] + ASSISTANT]
    ids = training_ids(p, "v7", num_token_per_image=4)
    assert ids == USER + [65535] * 4 + [NL] + [65535] * 4 + [NL] + COMPARE + [STOP] + ASSISTANT
    assert len(training_ids(p, "v7")) == len(ids) + 2 * (1024 - 4)


def test_v7_tags_move_to_the_front_of_their_turn(tok):
    conv = [{"from": "human", "value": "Compare <image> with <image>"}, {"from": "gpt", "value": ""}]
    p = conversation_prompt(tok, conv, "v7", num_images=2)
    assert p.text == "User: <image>\n<image>\nCompare  with\n\nAssistant:"
    with pytest.raises(ValueError, match="2 <image> tag"):
        conversation_prompt(tok, conv, "v7", num_images=1)


def test_blank_line_collapsing(tok):
    assert collapse_blank_lines("a\n\n\nb\n \t\nc\nd") == "a\nb\nc\nd"
    p = question_prompt(tok, "  What is the color of the cat?\n\n\n\nAnswer the question using a single word or "
                        "phrase.  ", "v6", image_position="first")
    assert p.items[-1] == [NL] + Q + [NL] + SHORT + [STOP] + ASSISTANT     # no 261 inside the turn


def test_v6_rejects_two_images(tok):
    with pytest.raises(ValueError, match="one image"):
        process_v6([{"from": "human", "value": "<image><image>x"}, {"from": "gpt", "value": ""}], "first")
    with pytest.raises(ValueError, match="image_position"):
        process_v6([{"from": "human", "value": "x"}], "top")


def test_followup_turn(tok):
    assert followup_ids(tok, "Is it sleeping?") == USER_NO_SPACE + [3917, 4601, 57244, 64, STOP] + ASSISTANT


def test_with_images_checks_count(tok):
    p = question_prompt(tok, "x", "v6")
    assert p.with_images(["img"])[1] == "img"
    with pytest.raises(ValueError, match="1 <image> slot"):
        p.with_images([])
