"""What the explanation schemas accept as a user-facing reason.

The rejected texts below are replies the packaged SmolLM2-135M-Instruct wrote for
MovieLens-100k users under the explanation grammar (temperature 0, 2026-12-02); each
satisfied the grammar and the length bounds.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from whyrec.explain.schemas import (
    BaselineExplanation,
    explanation_schema,
    trim_to_sentence,
)

GOOD = [
    "You liked Heat (1995) and Speed (1994), and this thriller shares their pace. "
    "Your strongest preference, tense crime stories, fits it well.",
    "A gentle comedy about family, close to the comedies you rated most often.",
    # product titles may carry square brackets
    "Hamlet [DVD] matches your taste for classic drama and stage adaptations.",
]

REJECTED = {
    "}\n\n{\n    id: 1,\n    name: ": "JSON",
    "The user enjoys a mix of action, adventure, comedy, and drama, with a preference 1": (
        "no complete sentence"
    ),
    "The user is recommended to the item ": "no complete sentence",
    "The user enjoys a variety of genres and the user enjoys a variety of": "four-word run",
    "It fits P1 (weight 0.40) best.": "prompt's labels",
    # explanations bench, 2026-12-07: the prompt's instruction copied into the reason
    "You pick Comedy, a past item by its title, a taste, or what you share with the item.": (
        "prompt's labels or instructions"
    ),
    "You watched Heat (1995) (matters strongly), so it fits.": "prompt's labels",
    "You will <b>love</b> this film, it is a classic.": "markup",
    "Good film. and then the user likes": "no complete sentence",
}


@pytest.mark.parametrize("text", GOOD)
def test_plain_prose_with_a_full_sentence_is_accepted(text):
    assert BaselineExplanation(explanation=text).explanation == text


@pytest.mark.parametrize(("text", "why"), list(REJECTED.items()))
def test_fragments_json_loops_and_labels_are_rejected_with_the_reason(text, why):
    with pytest.raises(ValidationError, match=why):
        BaselineExplanation(explanation=text)


def test_a_reply_that_starts_to_loop_keeps_its_sentences_before_the_loop():
    # SmolLM2-135M, 2026-12-07: numbered sentences that loop
    text = (
        "1. You watched Heat (1995), a tense crime film. 2. This film is a crime film too. "
        "2. This film is a crime film too. 2. This film"
    )
    assert BaselineExplanation(explanation=text).explanation == (
        "You watched Heat (1995), a tense crime film. This film is a crime film too."
    )
    looped = "The user enjoys a variety of genres. The user enjoys a variety of genres."
    assert BaselineExplanation(explanation=looped).explanation == (
        "The user enjoys a variety of genres."
    )


def test_the_four_step_schema_checks_its_explanation_the_same_way():
    schema = explanation_schema(2)
    steps = {
        "preference_reasons": ["Tense crime stories.", "Fast action."],
        "item_summary": "A heist thriller set in Los Angeles.",
        "fitness": [8, 6],
        "likelihood": "High",
        "likelihood_reason": "It matches the strongest preference.",
    }
    assert schema(**steps, explanation=GOOD[0]).explanation == GOOD[0]
    with pytest.raises(ValidationError, match="no complete sentence") as err:
        schema(**steps, explanation="The user is recommended to the item ")
    # the problem names the field, so a partial re-ask asks for that field alone
    assert err.value.errors()[0]["loc"] == ("explanation",)


def test_an_accepted_reason_trims_to_a_sentence_of_at_least_the_minimum_length():
    text = "You will like this drama a lot. It has songs and a cast that"
    BaselineExplanation(explanation=text)
    assert trim_to_sentence(text) == "You will like this drama a lot."


def test_copied_reason_labels_and_e_g_are_not_sentences():
    # SmolLM2-135M, 2026-12-07, sentences mode: a copy of the prompt's label, cut at "e.g."
    with pytest.raises(ValidationError, match="labels"):
        BaselineExplanation(
            explanation="The reason: \"Your taste raises this item's score: Enjoys Comedy, e.g."
        )
    assert trim_to_sentence("It fits your taste. It is a thriller, e.g.") == "It fits your taste."
    assert trim_to_sentence("You like comedies, e.g. Aladdin (1992) and") == (
        "You like comedies, e.g. Aladdin (1992) and"
    )


def test_a_copied_reason_label_is_stripped_from_a_free_text_reply():
    from whyrec.explain.schemas import first_sentence, strip_leading_label

    reply = 'The reason:\n"You watched Heat (1995), and it raises this item\'s score." More.'
    assert first_sentence(strip_leading_label(reply)) == (
        "You watched Heat (1995), and it raises this item's score.\""
    ) or first_sentence(strip_leading_label(reply)).startswith("You watched Heat (1995)")
