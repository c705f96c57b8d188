"""What a reason for one item may cite: evidence chosen by its counterfactual effect.

The recommender's attribution (:meth:`Recommender.attribution`) says how much the item's
score falls without each preference and each recent history item. A reason cites:

* **preferences** whose removal lowers *this item's* score: the largest drop, and a
  second one when its drop is at least half of the first (never one whose removal
  raises the score). A taste is cited only when it names a fact the item has (a reader
  would find "your love of drama" absurd for a comedy, whatever the model computed) and
  when it is *material*: its drop is at least :data:`MATERIAL_SHARE` of the largest
  history-item drop. Every cited piece carries its ``share`` of the largest cited drop,
  which the reason turns into words ("mostly", "also", "a little");
* **history items** whose removal lowers it most: up to :data:`MAX_HISTORY`, positive
  drops only;
* **item facts** (genres, categories — any item text) of the item that the cited history
  items share, or that a cited preference names: what connects the evidence to the item.

LANE's per-preference weights are user-level (the same for every candidate item); they
are kept in the evidence as ``lane_weights`` and shown as such, never cited as the reason
for an item.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from whyrec.data.facts import split_tags

#: At most this many preferences and history items are cited.
MAX_PREFERENCES = 2
MAX_HISTORY = 2
#: A second preference is cited when its drop is at least this share of the first's.
SECOND_PREFERENCE_SHARE = 0.5
#: A taste is material (may be cited as a cause) when its drop is at least this share of
#: the largest history-item drop for the same item.
MATERIAL_SHARE = 0.1
#: Bump when the selection rule changes (part of cache keys).
EVIDENCE_VERSION = "ev-2"


def item_facts(text: str | None) -> list[str]:
    """The facts in an item's text field ("Action|Adventure" → ["Action", "Adventure"])."""
    return split_tags(text)


def _mentions_fact(text: str, fact: str) -> bool:
    stem = fact.lower().rstrip("s")
    stem = stem[:-1] if stem.endswith("ie") else stem
    return re.search(rf"(?<![\w]){re.escape(stem[:6])}", text.lower()) is not None


@dataclass
class ItemEvidence:
    """The recommender's evidence for one (user, item) and what a reason may cite."""

    item: int
    item_id: str
    title: str
    facts: list[str]
    rank: int
    score: float
    preferences: list[str]
    preference_source: str
    lane_weights: list[float]
    preference_effects: list[dict[str, Any]]  # index, preference, weight, score_drop, rank_without
    history_effects: list[dict[str, Any]]  # item, title, position, score_drop, rank_without, facts
    cited_preferences: list[int] = field(default_factory=list)  # indices into preferences
    cited_history: list[int] = field(default_factory=list)  # indices into history_effects
    shared_facts: list[str] = field(default_factory=list)
    #: the item's facts as fact keys (``genre:Comedy``, ``decade:1990s``)
    fact_keys: list[str] = field(default_factory=list)
    #: tastes left uncited, with why ("names no fact of the item", "immaterial")
    uncited_tastes: list[dict[str, Any]] = field(default_factory=list)

    def cited_preference_effects(self) -> list[dict[str, Any]]:
        return [self.preference_effects[j] for j in self.cited_preferences]

    def cited_history_effects(self) -> list[dict[str, Any]]:
        return [self.history_effects[i] for i in self.cited_history]

    @property
    def top_drop(self) -> float:
        """The largest score drop among the cited pieces (0 when nothing is cited)."""
        drops = [p["score_drop"] for p in self.cited_preference_effects()]
        drops += [h["score_drop"] for h in self.cited_history_effects()]
        return max(drops, default=0.0)

    def share(self, effect: dict[str, Any]) -> float:
        """An effect's drop as a share of the largest cited drop."""
        top = self.top_drop
        return float(effect["score_drop"]) / top if top > 0 else 0.0

    @property
    def empty(self) -> bool:
        return not self.cited_preferences and not self.cited_history

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def select_evidence(
    attribution: Any,
    *,
    item_id: str,
    title: str,
    titles: Sequence[str],
    item_texts: Sequence[str] | None,
    preferences: Sequence[str],
    preference_source: str,
    taste_facts: Sequence[Sequence[str]] | None = None,
    fact_keys: Sequence[str] | None = None,
) -> ItemEvidence:
    """Choose what a reason for ``attribution.item`` cites (see the module docstring).

    ``taste_facts[j]`` are the fact keys preference ``j`` names and ``fact_keys`` the
    item's (:class:`whyrec.data.facts.ItemFacts`); without them a taste is matched to the
    item's facts by its words.
    """
    texts = list(item_texts) if item_texts is not None else None
    facts = item_facts(texts[attribution.item]) if texts is not None else []
    keys = list(fact_keys) if fact_keys is not None else [f"genre:{f}" for f in facts]
    pref_effects = []
    for p in attribution.preferences:
        j = p["index"]
        text = str(preferences[j]) if j < len(preferences) else ""
        if taste_facts is not None and j < len(taste_facts):
            named = list(taste_facts[j])
        else:
            named = [f"genre:{f}" for f in facts if _mentions_fact(text, f)]
        pref_effects.append(
            {**p, "preference": text, "names": named, "matching": [f for f in named if f in keys]}
        )
    hist_effects = [
        {
            **h,
            "title": str(titles[h["item"]]),
            "facts": item_facts(texts[h["item"]]) if texts is not None else [],
        }
        for h in attribution.history
    ]
    top_history = max((h["score_drop"] for h in hist_effects), default=0.0)
    cited_p, uncited = _cite_preferences(pref_effects, top_history)
    cited_h = _cite_history(hist_effects)
    counts: Counter[str] = Counter()
    for i in cited_h:
        for f in hist_effects[i]["facts"]:
            if f in facts:
                counts[f] += 1
    for j in cited_p:
        for f in facts:
            if f"genre:{f}" in pref_effects[j]["matching"]:
                counts[f] += 1
    shared = sorted(counts, key=lambda f: (-counts[f], facts.index(f)))
    return ItemEvidence(
        item=int(attribution.item),
        item_id=str(item_id),
        title=str(title),
        facts=facts,
        rank=int(attribution.rank),
        score=float(attribution.score),
        preferences=[str(p) for p in preferences],
        preference_source=preference_source,
        lane_weights=[float(w) for w in attribution.weights],
        preference_effects=pref_effects,
        history_effects=hist_effects,
        cited_preferences=cited_p,
        cited_history=cited_h,
        shared_facts=shared,
        fact_keys=keys,
        uncited_tastes=uncited,
    )


def _cite_preferences(
    pref_effects: list[dict[str, Any]], top_history: float
) -> tuple[list[int], list[dict[str, Any]]]:
    """``(cited, uncited)``: the preferences a reason cites (largest drop first, a second
    one at half the first's drop or more), and the tastes left out with why."""
    uncited: list[dict[str, Any]] = []
    candidates = []
    for j, p in enumerate(pref_effects):
        if p["score_drop"] <= 0:
            continue
        if not p["matching"]:
            uncited.append({"index": j, "why": "names no fact of the item"})
        elif top_history > 0 and p["score_drop"] < MATERIAL_SHARE * top_history:
            uncited.append({"index": j, "why": "immaterial"})
        else:
            candidates.append(j)
    positive = sorted(candidates, key=lambda j: (-pref_effects[j]["score_drop"], j))
    cited_p = positive[:1]
    if len(positive) > 1 and (
        pref_effects[positive[1]]["score_drop"]
        >= SECOND_PREFERENCE_SHARE * pref_effects[positive[0]]["score_drop"]
    ):
        cited_p.append(positive[1])
    return cited_p[:MAX_PREFERENCES], uncited


def _cite_history(hist_effects: list[dict[str, Any]]) -> list[int]:
    """The history items a reason cites: the largest positive drops, each item once."""
    seen_items: set[int] = set()
    cited_h: list[int] = []
    for i, h in enumerate(hist_effects):  # already ordered by drop
        if h["score_drop"] <= 0 or len(cited_h) >= MAX_HISTORY:
            break
        if h["item"] in seen_items:
            continue
        seen_items.add(h["item"])
        cited_h.append(i)
    return cited_h


def evidence_pieces(ev: ItemEvidence) -> list[dict[str, Any]]:
    """One entry per cited piece of evidence (history items first, then tastes): what an
    LLM is asked to turn into one sentence each. ``{"kind": "history", "title", "shared"}``
    or ``{"kind": "taste", "taste"}`` (the taste without its "e.g. …" examples, which
    small models copy verbatim)."""
    pieces: list[dict[str, Any]] = []
    for h in ev.cited_history_effects():
        shared = [f for f in ev.shared_facts if f in h["facts"]][:2]
        pieces.append({"kind": "history", "title": str(h["title"]), "shared": shared})
    for p in ev.cited_preference_effects():
        short = re.split(r",?\s+e\.g\.", str(p["preference"]), maxsplit=1)[0].rstrip(". ")
        pieces.append({"kind": "taste", "taste": short})
    return pieces
