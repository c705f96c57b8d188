"""Small text helpers shared by the claim verifier and the explanation metrics: words,
sentences, content words.

Everything here is deterministic and dependency-free so the metrics built on it can be
checked by hand.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"”’')\]]*\s+(?=[\"“‘'(\[]*[A-Z0-9])")
_ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "vs.", "mr.", "mrs.", "dr.", "st.", "jr.")

#: Function words plus the boilerplate of preference sentences ("Enjoys ... films"),
#: which every preference shares and which therefore says nothing about *which* one
#: an explanation leans on.
STOPWORDS = frozenset(
    """
    a an the and or but nor of in on at to for from with without by as into onto over
    under about than then so such that this these those there here it its it's is are was
    were be been being am do does did doing have has had having i me my we our you your
    yours he him his she her they them their what which who whom whose when where why how
    all any both each few more most other some no not only own same too very can will
    just should could would may might must also even ever because while if up down out
    off again further once s t e g eg ie etc vs
    user users user's person people someone they'd you'd you'll you're
    enjoy enjoys enjoyed enjoying like likes liked liking love loves loved loving prefer
    prefers preferred preferring seek seeks appreciate appreciates fan fans favor favour
    tend tends taste tastes interest interested interests drawn
    film films movie movies title titles item items genre genres category categories tag
    watch watches watched watching pick picks recent recently similar vein kind kinds sort
    sorts type types style styles one ones thing things lot lots many much well good
    great best really especially particularly often usually generally
    recommend recommended recommendation recommending suggest suggested suggests because
    """.split()
)


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters and digits, with inner apostrophes)."""
    return _WORD.findall(text.lower())


def sentences(text: str) -> list[str]:
    """Split ``text`` into sentences at ., ! or ? followed by a capital or a digit.

    Common abbreviations (e.g., i.e., Mr.) do not end a sentence.
    """
    text = " ".join(str(text).split())
    if not text:
        return []
    protected = text
    for abbr in _ABBREVIATIONS:
        protected = re.sub(re.escape(abbr), abbr.replace(".", "\x00"), protected, flags=re.I)
    parts = [p.replace("\x00", ".").strip() for p in _SENTENCE_END.split(protected)]
    return [p for p in parts if p]


def stem(word: str) -> str:
    """A crude plural stemmer: comedies → comedy, dramas → drama, classics → classic."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith("'s"):
        word = word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def content_words(text: str) -> set[str]:
    """Stemmed words of ``text`` that are not stopwords, digits or shorter than 3."""
    return {stem(w) for w in words(text) if len(w) >= 3 and not w.isdigit() and w not in STOPWORDS}


def coverage(part: str, whole: str | set[str]) -> float:
    """Share of ``part``'s content words that occur in ``whole`` (0 when it has none)."""
    cw = content_words(part)
    if not cw:
        return 0.0
    target = whole if isinstance(whole, set) else content_words(whole)
    return len(cw & target) / len(cw)


def ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    """Contiguous ``n``-grams of ``tokens``."""
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def normalize_text(text: str) -> str:
    """Lower case, whitespace collapsed: the identity used by the unique-sentence ratio."""
    return " ".join(str(text).lower().split())


def split_tags(values: Iterable[str]) -> set[str]:
    """Tags of ``"Action, Comedy"`` / ``"Action|Comedy"`` strings, lower-cased."""
    out: set[str] = set()
    for value in values:
        for tag in str(value).replace("|", ",").split(","):
            tag = tag.strip().lower()
            if tag and tag not in ("unknown", "nan", "none", "(no genres listed)"):
                out.add(tag)
    return out
