"""Claim verification for LLM-written reasons, and a boilerplate detector.

A reason is split into sentences. Each checkable claim in a sentence is tested against
the item's facts, the user's history and the item-specific evidence
(:class:`~whyrec.explain.evidence.ItemEvidence`):

* every **title** named must be the item itself or in the user's history (no invented
  or borrowed titles);
* every **genre/category** named must be a fact of the item, of a history item named in
  the same sentence, or of a cited history item;
* a **preference** the sentence leans on (half of its content words, or quoted) must be
  one whose removal lowers this item's score;
* the sentence must be **specific**: it names a title, a fact of the item or a
  preference. "The user's history is made for a family of fans of a niche." names
  nothing and is removed;
* with a :class:`BoilerplateDetector`, a sentence written (nearly) the same for many
  users is removed too.

Unsupported sentences are removed and recorded with the reason. A reason whose kept
sentences name none of the cited evidence is not shown: the grounded template is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from whyrec.explain.evidence import ItemEvidence
from whyrec.explain.grounding import Catalogue, quoted_spans
from whyrec.explain.schemas import unfinished
from whyrec.explain.textutil import content_words, sentences, words

#: A sentence leans on a preference when it uses this share of its content words.
PREFERENCE_COVERAGE = 0.5


@dataclass
class SentenceCheck:
    """One sentence of a reason and what it cites; ``problem`` is None when supported."""

    sentence: str
    problem: str | None = None
    titles: list[int] = field(default_factory=list)  # items named (target or history)
    preferences: list[int] = field(default_factory=list)  # preference indices leaned on
    facts: list[str] = field(default_factory=list)  # genre/category claims (lower case)

    @property
    def ok(self) -> bool:
        return self.problem is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "sentence": self.sentence,
            "problem": self.problem,
            "titles": self.titles,
            "preferences": self.preferences,
            "facts": self.facts,
        }


@dataclass
class Verification:
    """The verified reason: kept sentences, removed ones, and whether it names its evidence."""

    text: str
    checks: list[SentenceCheck]
    names_evidence: bool

    @property
    def kept(self) -> list[SentenceCheck]:
        return [c for c in self.checks if c.ok]

    @property
    def removed(self) -> list[SentenceCheck]:
        return [c for c in self.checks if not c.ok]

    def problems(self) -> list[str]:
        return [f"removed {c.sentence[:80]!r}: {c.problem}" for c in self.removed]

    @property
    def named_preferences(self) -> set[int]:
        """Indices of the preferences the kept sentences lean on."""
        return {j for c in self.kept for j in c.preferences}

    @property
    def named_titles(self) -> set[int]:
        """Items (the target or history items) the kept sentences name."""
        return {t for c in self.kept for t in c.titles}


def leaned_preferences(
    sentence: str,
    preferences: Sequence[str],
    catalogue: Catalogue,
    *,
    target: int | None = None,
    history: Sequence[int] = (),
) -> list[int]:
    """Indices of the preferences a sentence leans on: quoted, or half of the
    preference's content words used — genre words not counted (they are the item's or a
    history item's facts, checked as such)."""
    spans = quoted_spans(sentence, preferences)
    quoted = {j for _, _, j in spans}
    chars = list(sentence)  # a title the sentence names is not a taste it leans on
    for m in catalogue.find_titles(sentence, target=target, history=history):
        chars[m.start : m.end] = " " * (m.end - m.start)
    for a, b, _ in spans:  # nor are the words of a taste it quotes another taste's
        chars[a:b] = " " * (b - a)
    rest = "".join(chars)
    sent_words = content_words(rest)
    sent_genres: set[str] | None = None
    out = []
    for j, p in enumerate(preferences):
        if j in quoted:
            out.append(j)
            continue
        own = _own_words(str(p), catalogue)
        if not own or len(own & sent_words) / len(own) < PREFERENCE_COVERAGE:
            continue
        # tastes alike but for the genre they name ("Picks Comedy titles more often than
        # most users", "Picks Drama titles …"): the sentence must name that genre too
        named = _taste_genres(str(p), catalogue)
        if named:
            if sent_genres is None:
                sent_genres = set(catalogue.genre_claims(rest))
            if not named & sent_genres:
                continue
        out.append(j)
    return out


def _taste_genres(text: str, catalogue: Catalogue) -> set[str]:
    """The genre tags a taste names outside the titles it gives as examples."""
    cache: dict[str, set[str]] = catalogue.__dict__.setdefault("_taste_genres", {})
    hit = cache.get(text)
    if hit is None:
        chars = list(text)
        for m in catalogue.find_titles(text):
            chars[m.start : m.end] = " " * (m.end - m.start)
        hit = cache[text] = set(catalogue.genre_claims("".join(chars)))
    return hit


def _own_words(text: str, catalogue: Catalogue) -> frozenset[str]:
    """A preference's own content words: without the titles it names as examples and
    without genre words (those are facts, checked as such). Cached on the catalogue."""
    cache: dict[str, frozenset[str]] = catalogue.__dict__.setdefault("_own_words", {})
    hit = cache.get(text)
    if hit is None:
        chars = list(text)
        for m in catalogue.find_titles(text):  # titles named as examples are not the taste
            chars[m.start : m.end] = " " * (m.end - m.start)
        rest = "".join(chars)
        genre_words = content_words(" ".join(catalogue.genre_claims(rest)))
        hit = cache[text] = frozenset(content_words(rest) - genre_words)
    return hit


def split_sentences(text: str, catalogue: Catalogue) -> list[str]:
    """Sentences of ``text``; a boundary inside a title ("… Everything! Julie Newmar
    (1995)") is not a boundary."""
    parts = sentences(text or "")
    if len(parts) < 2:
        return parts
    spans = [(m.start, m.end) for m in catalogue.find_titles(text)]
    out: list[str] = []
    pos = 0
    for part in parts:
        at = text.find(part, pos)
        inside = at > 0 and any(a < at < b for a, b in spans)
        if inside and out:
            out[-1] = out[-1] + " " + part
        else:
            out.append(part)
        pos = max(pos, at + len(part)) if at >= 0 else pos
    return out


def _norm_key(text: str) -> str:
    return " ".join(w for w in words(text) if not w.isdigit())


class BoilerplateDetector:
    """Sentences that are the same, or nearly the same by the text encoder, for many users.

    ``fit`` with every user's sentences; a sentence is boilerplate when at least
    ``min_users`` users (counting its own) have a sentence with the same normalised words
    or, with an encoder, a cosine similarity of at least ``similarity``.
    """

    def __init__(
        self, encoder: Any = None, *, min_users: int = 3, similarity: float = 0.92
    ) -> None:
        self.encoder = encoder
        self.min_users = min_users
        self.similarity = similarity
        self._keys: list[str] = []
        self._users: list[set[str]] = []
        self._vecs: np.ndarray | None = None

    def fit(self, sentences_by_user: Mapping[str, Iterable[str]]) -> BoilerplateDetector:
        index: dict[str, int] = {}
        for user, sents in sentences_by_user.items():
            for s in sents:
                key = _norm_key(s)
                if not key:
                    continue
                if key not in index:
                    index[key] = len(self._keys)
                    self._keys.append(key)
                    self._users.append(set())
                self._users[index[key]].add(str(user))
        if self.encoder is not None and self._keys:
            v = np.asarray(self.encoder.encode(self._keys), dtype=np.float32)
            v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
            self._vecs = v
        return self

    def users_writing(self, sentence: str) -> set[str]:
        """The users (from ``fit``) with this sentence or a near-identical one."""
        key = _norm_key(sentence)
        out: set[str] = set()
        for k, users in zip(self._keys, self._users, strict=True):
            if k == key:
                out |= users
        if self._vecs is not None and key:
            q = np.asarray(self.encoder.encode([key]), dtype=np.float32)[0]
            q /= max(float(np.linalg.norm(q)), 1e-12)
            for i in np.flatnonzero(self._vecs @ q >= self.similarity):
                out |= self._users[int(i)]
        return out

    def is_boilerplate(self, sentence: str, user: str | None = None) -> bool:
        users = self.users_writing(sentence)
        if user is not None:
            users = users | {str(user)}
        return len(users) >= self.min_users

    def summary(self) -> dict[str, Any]:
        """How many distinct sentences were fitted and how many are boilerplate."""
        flagged = sum(len(u) >= self.min_users for u in self._users)
        return {"distinct_sentences": len(self._keys), "boilerplate_sentences": flagged}


class ClaimVerifier:
    """Check every sentence of a reason against the data (see the module docstring)."""

    def __init__(
        self, catalogue: Catalogue, *, boilerplate: BoilerplateDetector | None = None
    ) -> None:
        self.catalogue = catalogue
        self.boilerplate = boilerplate

    def check_sentence(
        self,
        sentence: str,
        evidence: ItemEvidence,
        history: Sequence[int],
        user: str | None = None,
    ) -> SentenceCheck:
        cat = self.catalogue
        check = SentenceCheck(sentence)
        if unfinished(sentence):
            check.problem = "unfinished: stops on 'e.g.' before its example"
            return check
        mentions = cat.find_titles(
            sentence, target=evidence.item, history=history, preferences=evidence.preferences
        )
        for m in mentions:
            if not m.grounded:
                check.problem = (
                    f"names {m.text[:60]!r}, which is neither the item nor in the history"
                )
                return check
            if m.item is not None:
                check.titles.append(int(m.item))
        quoted = quoted_spans(sentence, evidence.preferences)
        spans = [(m.start, m.end) for m in mentions] + [(a, b) for a, b, _ in quoted]
        claims = cat.genre_claims(sentence, spans)  # a quoted taste is not a claim
        check.facts = list(claims)
        # a genre is backed by the items the sentence names; a sentence naming no title
        # speaks of the item and its cited evidence
        named = [i for i in check.titles if i != evidence.item]
        if check.titles:
            backing = named
        else:
            backing = [h["item"] for h in evidence.cited_history_effects()]
        supported = cat.tags_of([evidence.item, *backing])
        bad = [g for g in claims if g not in supported]
        if bad:
            check.problem = (
                f"claims {', '.join(bad)}, which neither the item nor the history items it "
                "names carry"
            )
            return check
        effects = {int(p["index"]): p for p in evidence.preference_effects}
        leaned = leaned_preferences(
            sentence, evidence.preferences, cat, target=evidence.item, history=history
        )
        for j in leaned:
            p = effects.get(j)
            if p is None:
                continue
            if p["score_drop"] <= 0:
                check.problem = (
                    f"leans on the taste {str(p.get('preference'))[:50]!r}, whose removal "
                    "does not lower this item's score"
                )
                return check
            check.preferences.append(j)
        item_tags = cat.tags_of([evidence.item])
        others = [t for t in check.titles if t != evidence.item]
        if not (others or check.preferences or set(claims) & item_tags):
            check.problem = (
                "names only the item, none of its evidence (no history item, taste or fact)"
                if check.titles
                else "names nothing of the item, its facts, the history or a taste (generic)"
            )
            return check
        if self.boilerplate is not None and self.boilerplate.is_boilerplate(sentence, user):
            check.problem = "boilerplate: the same sentence is written for many users"
        return check

    def verify(
        self,
        text: str,
        evidence: ItemEvidence,
        history: Sequence[int],
        user: str | None = None,
    ) -> Verification:
        checks = [
            self.check_sentence(s, evidence, history, user)
            for s in split_sentences(text or "", self.catalogue)
        ]
        kept = [c for c in checks if c.ok]
        cited_items = {int(h["item"]) for h in evidence.cited_history_effects()}
        cited_prefs = set(evidence.cited_preferences)
        shared = {f.lower() for f in evidence.shared_facts}
        item_facts = {f.lower() for f in evidence.facts}

        def names(c: SentenceCheck) -> bool:
            if set(c.titles) & cited_items or set(c.preferences) & cited_prefs:
                return True
            if set(c.facts) & shared:
                return True
            # with nothing to cite, the item's own facts are its evidence
            return evidence.empty and bool(set(c.facts) & item_facts)

        return Verification(
            text=" ".join(c.sentence for c in kept),
            checks=checks,
            names_evidence=any(names(c) for c in kept),
        )
