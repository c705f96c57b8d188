"""Pydantic schemas of the structured LLM replies (validated; also the decoding grammar)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints, create_model, field_validator

from whyrec.llm.parse import ReplyModel
from whyrec.safety import sentence_text

_WORD = re.compile(r"[a-z0-9]+")
_ENUM = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s*")

#: At most this many characters per preference sentence.
MAX_PREFERENCE_CHARS = 160


def _norm(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def clean_preference(text: str) -> str:
    """One line (control and bidirectional-control characters and runs of whitespace
    collapsed), list numbering ("1.", "-") removed."""
    return _ENUM.sub("", sentence_text(text))


def preference_problem(text: str) -> str | None:
    """Why ``text`` is not a usable preference sentence, or None."""
    if len(text) > MAX_PREFERENCE_CHARS:
        return f"longer than {MAX_PREFERENCE_CHARS} characters"
    words = [w for w in _norm(text).split() if not w.isdigit()]
    if len(words) < 3:
        return "not a sentence of 3+ words"
    return None


def _validate_preferences(cls: type, values: list[str]) -> list[str]:
    cleaned = [clean_preference(v) for v in values]
    seen: set[str] = set()
    for i, v in enumerate(cleaned):
        problem = preference_problem(v)
        if problem:
            raise ValueError(f"preference {i + 1} ({v[:60]!r}) is {problem}")
        key = preference_key(v)
        if key in seen:
            raise ValueError(f"preference {i + 1} ({v[:60]!r}) repeats an earlier one")
        seen.add(key)
    return cleaned


def preference_key(text: str) -> str:
    """Normalised words without numbers: equal keys mean the same preference (or title)."""
    return " ".join(w for w in _norm(text).split() if not w.isdigit())


_QUOTED = re.compile(r"[\"“”]([^\"“”]{3,80})[\"“”]")
_SENTENCE_END = re.compile(r"(?<=[a-z)]{2}[.!?])\s+(?=[A-Z\"“])")


def first_sentence(text: str) -> str:
    """The first line's first sentence of a free-text reply, list numbering removed."""
    line = next((ln for ln in str(text).strip().splitlines() if ln.strip()), "")
    return _SENTENCE_END.split(clean_preference(line), maxsplit=1)[0].strip()


def degenerate_problem(text: str) -> str | None:
    """Why a sentence reads as a small model's loop ("nostalgic and nostalgic"), or None."""
    words = _norm(text).split()
    if len(words) >= 6 and len(set(words)) / len(words) < 0.6:
        return "repeats its own words"
    pairs = [" ".join(words[i : i + 2]) for i in range(len(words) - 1)]
    stop = {"and", "or", "of", "the", "a", "an", "with", "to", "in"}
    for i, w in enumerate(words[:-2]):
        if w not in stop and w in words[i + 2 : i + 4]:
            return f"repeats the word {w!r}"
    if len(pairs) != len(set(pairs)):
        return "repeats a phrase"
    return None


_DATED = re.compile(r"([A-Z][^()\"“”]{1,60}?)\s*\((?:19|20)\d\d\)")


def invented_title_problem(text: str, titles: Sequence[str]) -> str | None:
    """A quoted name or a dated "Title (1994)" in the sentence that is not (part of) a
    history title, or None."""
    keys = [preference_key(t) for t in titles]
    for quoted in _QUOTED.findall(text) + _DATED.findall(text):
        q = preference_key(quoted)
        # a quoted part of a title, or a dated run ending in a full history title
        if q and not any(q in k or (k and q.endswith(k)) for k in keys):
            return f"names {quoted[:40]!r}, which is not in the history"
    return None


def salvage_preferences(
    candidates: list[str],
    titles: list[str],
    m: int,
    *,
    rejected: list[str] | None = None,
) -> list[str]:
    """The usable, distinct sentences among ``candidates``: no copied or invented titles,
    no loops. Reasons for rejected candidates are appended to ``rejected``.
    """
    title_keys = {preference_key(t) for t in titles}
    out: list[str] = []
    seen: set[str] = set()
    for c in candidates:
        if not isinstance(c, str):
            continue
        text = clean_preference(c)
        key = preference_key(text)
        problem = (
            ("copies a history title" if key in title_keys else None)
            or preference_problem(text)
            or ("repeats an earlier preference" if key in seen else None)
            or degenerate_problem(text)
            or invented_title_problem(text, titles)
        )
        if problem:
            if rejected is not None:
                rejected.append(f"{text[:60]!r} {problem}")
            continue
        seen.add(key)
        out.append(text)
    return out[:m]


@lru_cache(maxsize=16)
def preference_schema(m: int) -> type[BaseModel]:
    """Exactly ``m`` distinct, sentence-like preferences."""
    model = create_model(
        f"Preferences{m}",
        preferences=(list[str], Field(min_length=m, max_length=m)),
        __validators__={
            "distinct": field_validator("preferences")(classmethod(_validate_preferences))
        },
    )
    return model


# Length caps bound the reply: with a local model they are part of the decoding
# grammar, so a small model cannot ramble past them.
_Reason = Annotated[str, StringConstraints(min_length=3, max_length=100)]
#: Fitness as a whole number 0–10: an enum the decoding grammar enforces (small models
#: write floats such as 2.0 when asked for 0–1). The explainer rescales it to 0–1.
_Fit = Literal[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]


def _explanation_fields(m: int) -> dict:
    return {
        "preference_reasons": (list[_Reason], Field(min_length=m, max_length=m)),
        "item_summary": (str, Field(min_length=3, max_length=150)),
        "fitness": (list[_Fit], Field(min_length=m, max_length=m)),
        "likelihood": (Literal["Low", "Medium", "High"], ...),
        "likelihood_reason": (str, Field(min_length=3, max_length=150)),
        "explanation": (str, Field(min_length=20, max_length=400)),
    }


# also the prompt's own words copied into the reply (seen in the explanations bench: "You
# pick Comedy, a past item by its title, a taste, or what you share with the item.")
_PROMPT_LABEL = re.compile(
    r"\bP\d+\b|\(weight\s*[\d.]+\)|^\W*(?:the\s+)?(?:reason|recommended item)\s*:"
    r"|\ba past item by its title\b|\(matters (?:strongly|somewhat|a little)\)",
    re.IGNORECASE,
)
# braces and backticks (JSON, code) and HTML-like tags; square brackets stay allowed,
# as product titles carry them ("Hamlet [DVD]")
_MARKUP = re.compile(r"[{}`]|</?[A-Za-z][^<>]*>")
_LEADING_LABEL = re.compile(
    r"^\W*(?:the\s+)?(?:reason|recommended item|answer|sentence)\s*:\s*", re.IGNORECASE
)


def strip_leading_label(text: str) -> str:
    """A free-text reply without a copied "The reason:" label (and the quote after it)."""
    out = _LEADING_LABEL.sub("", str(text).strip(), count=1)
    return out.strip().lstrip("\"“'").strip() if out != str(text).strip() else out


# a full stop ends a clause, but not the one of "e.g." / "i.e."
_CLAUSE_END = re.compile(r"(?<!\be\.g)(?<!\bi\.e)[.!?](?=\s|$)")
# a reply that stops right after "e.g." was cut before its example: unfinished
_ABBREVIATION_END = re.compile(r"\b(?:e\.g|i\.e)\.$", re.IGNORECASE)


def unfinished(sentence: str) -> bool:
    """The sentence stops on "e.g." / "i.e." (its example was cut off)."""
    return bool(_ABBREVIATION_END.search(sentence.strip()))


#: the shortest reason, cut to its last complete sentence, that may be shown (the field's
#: minimum length)
_MIN_SENTENCE = 20


_NUMBERING = re.compile(r"(?:(?<=^)|(?<=[.!?]\s))\s*(?:\d{1,2}[.)]|[-*•])\s+")


def _until_loop(text: str) -> tuple[str, str | None]:
    """The sentences of ``text`` before it starts to loop — a sentence repeated, or a
    four-word run seen before — and what the loop was (None when there is none)."""
    kept: list[str] = []
    seen: set[str] = set()
    grams_seen: set[str] = set()
    for sentence in re.split(r"(?<=[.!?])\s+", text.strip()):
        key = _norm(sentence)
        words = key.split()
        grams = [" ".join(words[i : i + 4]) for i in range(len(words) - 3)]
        if key and key in seen:
            return " ".join(kept), f"repeats the sentence {sentence[:50]!r}"
        if len(grams) != len(set(grams)) or set(grams) & grams_seen:
            return " ".join(kept), "repeats a four-word run (the reply loops)"
        seen.add(key)
        grams_seen |= set(grams)
        kept.append(sentence)
    return " ".join(kept), None


def _validate_reason(cls: type, text: str) -> str:
    """A user-facing reason: plain prose with at least one complete sentence, no copied
    prompt labels, no JSON or markup, no loops.

    A small model's reply can satisfy the decoding grammar and the length bounds with
    text no user should see: a fragment of JSON, or a clause that never ends; those are
    re-asked (and in the end replaced by the grounded template). A reply that starts to
    loop keeps its sentences before the loop when one of them is complete (list
    numbering such as "1." is dropped first); the claim verifier then checks what is left.
    """
    if _PROMPT_LABEL.search(text):
        raise ValueError(
            "copies the prompt's labels or instructions (P1, weight 0.40, 'a past item by its "
            "title'); write plain prose"
        )
    if _MARKUP.search(text):
        raise ValueError("contains JSON, code or markup ({, }, `, <tags>); write plain prose")
    text = _NUMBERING.sub(" ", " ".join(str(text).split())).strip()
    text, loop = _until_loop(text)
    shown = trim_to_sentence(text)  # what the user would see
    if not shown.endswith((".", "!", "?")) or len(shown) < _MIN_SENTENCE:
        raise ValueError(
            loop or "has no complete sentence; write whole sentences that end with a full stop"
        )
    return shown


@lru_cache(maxsize=16)
def explanation_schema(m: int) -> type[BaseModel]:
    """LANE's four chain-of-thought steps for ``m`` preferences."""
    return create_model(
        f"Explanation{m}",
        **_explanation_fields(m),
        __validators__={"prose": field_validator("explanation")(classmethod(_validate_reason))},
    )


def trim_to_sentence(text: str) -> str:
    """Cut a reply that a length cap stopped mid-sentence back to its last full sentence
    (one line: control and bidirectional-control characters collapsed too)."""
    text = sentence_text(text)
    if not text or (text[-1] in ".!?" and not unfinished(text)):
        return text
    ends = [m.end() for m in _CLAUSE_END.finditer(text)]
    return text[: ends[-1]] if ends and ends[-1] >= 10 else text


class BaselineExplanation(ReplyModel):
    """The no-alignment baseline's reply."""

    explanation: str = Field(min_length=20, max_length=400)
    _prose = field_validator("explanation")(classmethod(_validate_reason))
