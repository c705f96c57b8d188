"""Item facts: the checkable things a taste or a reason can name about an item.

A fact is a genre or category tag from the item's text field (``genre:Comedy``) or the
decade of its release year, read from the title's ``(1995)`` (``decade:1990s``). The
same vocabulary serves three jobs, so they agree with each other:

* the recommender's taste channel (:class:`whyrec.models.lane.Lane`, ``additive``): a
  taste raises exactly the items that have the facts it names;
* grounded tastes: what a user watches *more than most users do* (:func:`fact_lift`);
* the specificity check of LLM tastes: a taste must name a fact found in the user's
  history (:meth:`ItemFacts.parse`).

Parsing is plain word matching (genre names with their common surface forms — plurals,
"romantic", "sci-fi", "noir", "kids" — and decades written "1990s", "'90s", "90s",
"nineties"); it never guesses from meaning, so what it finds is checkable.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

#: Extra surface forms of common genre names (MovieLens, Amazon and Steam style tags).
GENRE_ALIASES: dict[str, tuple[str, ...]] = {
    "sci-fi": ("science fiction", "science-fiction", "scifi", "sci fi"),
    "science fiction": ("sci-fi", "scifi", "sci fi"),
    "children's": ("children", "childrens", "kids", "family film", "family films"),
    "animation": ("animated", "cartoon", "cartoons"),
    "comedy": ("comedies", "comedic"),
    "romance": ("romantic", "romances"),
    "film-noir": ("film noir", "noir"),
    "documentary": ("documentaries",),
    "mystery": ("mysteries",),
    "fantasy": ("fantasies",),
    "drama": ("dramas",),
    "thriller": ("thrillers",),
    "western": ("westerns",),
    "musical": ("musicals",),
    "war": ("war films", "war movies"),
}

_SPLIT = re.compile(r"\s*[|,;/]\s*")
_YEAR = re.compile(r"\((1[89]\d\d|20\d\d)\)")
_DECADE_WORDS = {
    "twenties": 1920, "thirties": 1930, "forties": 1940, "fifties": 1950, "sixties": 1960,
    "seventies": 1970, "eighties": 1980, "nineties": 1990,
}  # fmt: skip
# "1990s", "1990's", "'90s", "90s" (not "90" alone: a number is not a decade)
_DECADE = re.compile(
    r"(?<![\w'])(?:(1[89]\d0|20[0-2]0)'?s|['’]?([2-9]0)'?s)(?!\w)|"
    r"(?<!\w)(" + "|".join(_DECADE_WORDS) + r")(?!\w)",
    re.IGNORECASE,
)
#: Quoted spans (titles named as examples) are not read for facts.
_QUOTED = re.compile(r"\"[^\"]*\"|“[^”]*”|«[^»]*»")


def split_tags(value: str | None) -> list[str]:
    """The tags of a text field ("Action|Adventure" → ["Action", "Adventure"])."""
    if not value:
        return []
    out: list[str] = []
    for part in _SPLIT.split(str(value)):
        part = " ".join(part.split())
        if part and part.lower() not in ("unknown", "nan", "none") and part not in out:
            out.append(part)
    return out


def genre_pattern(tag: str) -> re.Pattern[str]:
    """A case-insensitive pattern of a genre tag's surface forms: the tag, its plural,
    with spaces for hyphens, and :data:`GENRE_ALIASES` ("comedies", "sci-fi", "noir")."""
    low = tag.lower()
    forms = {tag, tag + "s", tag.replace("-", " ")}
    if low.endswith("y"):
        forms.add(tag[:-1] + "ies")
    forms.update(GENRE_ALIASES.get(low, ()))
    alts = "|".join(
        r"\W+".join(re.escape(w) for w in re.split(r"[\s-]+", f))
        for f in sorted(forms, key=len, reverse=True)
        if f
    )
    return re.compile(rf"(?<![\w-])(?:{alts})(?![\w-])", re.IGNORECASE)


def title_decade(title: str) -> int | None:
    """The decade of the year written in a title ("Heat (1995)" → 1990), or None."""
    m = _YEAR.findall(str(title))
    return (int(m[-1]) // 10) * 10 if m else None


def decade_fact(decade: int) -> str:
    return f"decade:{decade}s"


def fact_label(fact: str) -> str:
    """How a fact reads in a sentence: "Comedy", "1990s films"."""
    kind, _, value = fact.partition(":")
    return f"{value} films" if kind == "decade" else value


@dataclass
class ItemFacts:
    """The facts of every item of a catalogue and the vocabulary to find them in text.

    ``names[f]`` is fact ``f`` (``genre:Comedy``, ``decade:1990s``); ``matrix`` is the
    ``(n_items, n_facts)`` 0/1 table of which item has which fact.
    """

    names: list[str]
    matrix: np.ndarray
    tag_field: str | None = None
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.matrix = np.asarray(self.matrix, dtype=np.float32)
        if self.matrix.ndim != 2 or self.matrix.shape[1] != len(self.names):
            raise ValueError(
                f"fact matrix must be (n_items, {len(self.names)}), got {self.matrix.shape}"
            )
        self._index = {n: i for i, n in enumerate(self.names)}

    # ------------------------------------------------------------ building
    @classmethod
    def from_texts(
        cls,
        titles: Sequence[str],
        tags: Sequence[str | None] | None = None,
        *,
        tag_field: str | None = "genres",
        decades: bool = True,
    ) -> ItemFacts:
        """Facts from titles (decades) and one text field's tags (genres, categories)."""
        per_item: list[list[str]] = []
        for i, title in enumerate(titles):
            facts = [f"genre:{t}" for t in split_tags(tags[i] if tags is not None else None)]
            d = title_decade(title) if decades else None
            if d is not None:
                facts.append(decade_fact(d))
            per_item.append(facts)
        names = sorted({f for fs in per_item for f in fs}, key=_fact_order)
        index = {n: j for j, n in enumerate(names)}
        matrix = np.zeros((len(titles), len(names)), dtype=np.float32)
        for i, fs in enumerate(per_item):
            for f in fs:
                matrix[i, index[f]] = 1.0
        return cls(names, matrix, tag_field)

    @classmethod
    def from_dataset(cls, dataset: Any, field: str | None = None) -> ItemFacts:
        """Facts of a :class:`~whyrec.data.Dataset`: ``field`` (default ``genres``, else its
        first text field) plus release decades from the titles."""
        fields = list(getattr(dataset, "text_fields", []))
        name = field or ("genres" if "genres" in fields else (fields[0] if fields else None))
        tags = dataset.items[name].fillna("").astype(str).tolist() if name else None
        return cls.from_texts(dataset.titles, tags, tag_field=name)

    def to_dict(self) -> dict[str, Any]:
        return {"names": self.names, "field": self.tag_field}

    @property
    def n_facts(self) -> int:
        return len(self.names)

    def index(self, fact: str) -> int | None:
        return self._index.get(fact)

    def of_item(self, item: int) -> list[str]:
        return [self.names[j] for j in np.flatnonzero(self.matrix[int(item)])]

    def of_items(self, items: Iterable[int]) -> set[str]:
        idx = np.asarray(list(items), dtype=np.int64)
        if idx.size == 0:
            return set()
        return {self.names[j] for j in np.flatnonzero(self.matrix[idx].max(0))}

    # ------------------------------------------------------------- parsing
    @cached_property
    def _genre_patterns(self) -> list[tuple[str, re.Pattern[str]]]:
        return [
            (name, genre_pattern(name.partition(":")[2]))
            for name in self.names
            if name.startswith("genre:")
        ]

    def parse(self, text: str) -> list[str]:
        """The facts of this vocabulary that ``text`` names, in vocabulary order.

        Quoted spans (example titles) are skipped: "Enjoys Comedy, e.g. "Heat"" names
        Comedy, not what "Heat" is.
        """
        clean = _QUOTED.sub(" ", str(text))
        found = {name for name, rx in self._genre_patterns if rx.search(clean)}
        for m in _DECADE.finditer(clean):
            if m.group(1):
                decade = int(m.group(1))
            elif m.group(2):
                two = int(m.group(2))
                decade = 1900 + two  # '90s → 1990s ('20s → 1920s)
            else:
                decade = _DECADE_WORDS[m.group(3).lower()]
            name = decade_fact(decade)
            if name in self._index:
                found.add(name)
        return [n for n in self.names if n in found]

    def vector(self, facts: Iterable[str]) -> np.ndarray:
        """A 0/1 row over the vocabulary for ``facts`` (unknown ones ignored)."""
        v = np.zeros(self.n_facts, dtype=np.float32)
        for f in facts:
            j = self._index.get(f)
            if j is not None:
                v[j] = 1.0
        return v

    def parse_matrix(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), n_facts)``: the facts each text names."""
        if not texts:
            return np.zeros((0, self.n_facts), dtype=np.float32)
        return np.stack([self.vector(self.parse(t)) for t in texts])


def _fact_order(name: str) -> tuple[int, str]:
    return (0 if name.startswith("genre:") else 1, name)


def fact_baseline(facts: ItemFacts, items: np.ndarray) -> np.ndarray:
    """Share of the interactions ``items`` (item indices) that have each fact: what "most
    users" watch, against which a user's own share is compared."""
    items = np.asarray(items, dtype=np.int64)
    if items.size == 0:
        return np.zeros(facts.n_facts, dtype=np.float64)
    counts = np.bincount(items, minlength=facts.matrix.shape[0]).astype(np.float64)
    return (counts @ facts.matrix) / items.size


def fact_lift(
    facts: ItemFacts,
    history: Sequence[int],
    baseline: np.ndarray,
    *,
    prior: float = 5.0,
) -> list[tuple[str, float, int]]:
    """The facts a history has *more than most* users: ``(fact, lift, count)`` sorted by
    how much they distinguish it (count × log lift, the fact's share of the history's
    KL divergence from the baseline), over-represented facts only.

    ``lift`` is the history's share of the fact, shrunk towards the baseline by ``prior``
    pseudo-interactions, divided by the baseline share.
    """
    hist = np.asarray(list(history), dtype=np.int64)
    if hist.size == 0:
        return []
    counts = facts.matrix[hist].sum(0).astype(np.float64)
    n = float(hist.size)
    base = np.maximum(np.asarray(baseline, dtype=np.float64), 1e-6)
    share = (counts + prior * base) / (n + prior)
    lift = share / base
    score = counts * np.log(np.maximum(lift, 1e-12))
    order = np.argsort(-score, kind="stable")
    return [
        (facts.names[j], float(lift[j]), int(counts[j]))
        for j in order
        if counts[j] > 0 and lift[j] > 1.0
    ]
