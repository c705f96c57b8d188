"""The grounded template reason: shown when the LLM's reason fails verification, and a
comparison system.

It says only what the recommender computed for *this* item (see
:mod:`whyrec.explain.evidence`): the item and its facts, the preference whose removal
lowers its score most (with the rank it would fall to), the history items whose removal
lowers it most, and the facts those share with the item. Titles and preference texts are
untrusted: they pass :func:`whyrec.safety.safe_title` (control strings removed, capped).
Titles are named as a reader says them (:func:`whyrec.explain.grounding.spoken_title`:
"The Devil's Own (1997)", not the catalogue's "Devil's Own, The (1997)").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from whyrec.data.facts import fact_label as fact_words
from whyrec.explain.evidence import ItemEvidence
from whyrec.explain.grounding import spoken_title
from whyrec.explain.schemas import MAX_PREFERENCE_CHARS
from whyrec.safety import safe_title

#: Longest preference sentence quoted inside a reason: every validated preference fits
#: whole (a cut one would read as an unfinished sentence).
PREFERENCE_CAP = MAX_PREFERENCE_CHARS


def named(title: str) -> str:
    """An item's title as a reason shows it: article in front, untrusted text made safe."""
    return safe_title(spoken_title(title))


def join_words(parts: Sequence[str]) -> str:
    """ "A", "A and B", "A, B and C"."""
    parts = list(parts)
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + f" and {parts[-1]}"


def strength(share: float) -> str:
    """How much a piece of evidence matters, in words, from its share of the largest
    cited drop (see :attr:`ItemEvidence.share`)."""
    if share >= 0.5:
        return "strongly"
    if share >= 0.2:
        return "somewhat"
    return "a little"


def taste_label(effect: dict) -> str:
    """The taste as a reader knows it: the item facts it names that the item has
    ("Comedy", "1990s films"), else its sentence."""
    matching = [fact_words(f) for f in effect.get("matching") or []]
    if matching:
        return join_words([safe_title(f, 40) for f in matching[:2]])
    return safe_title(str(effect["preference"]).rstrip(". "), PREFERENCE_CAP)


def preference_sentence(evidence: ItemEvidence, effect: dict, *, first: bool = True) -> str:
    """The template's sentence for one cited taste: how much it matters, what it does
    to the item's rank, and the taste itself."""
    pref = safe_title(str(effect["preference"]).rstrip(". "), PREFERENCE_CAP)
    fall = (
        f"without it, it would fall from rank {evidence.rank} to {effect['rank_without']}"
        if effect["rank_without"] > evidence.rank
        else "without it, it would score lower but keep its rank"
    )
    label = taste_label(effect)
    how = strength(evidence.share(effect))
    if first and how == "strongly":
        lead = f"You are seeing it mostly because of your taste for {label}"
    elif how == "a little":
        lead = f"Your taste for {label} adds a little"
    else:
        lead = f"Your taste for {label} {'also ' if not first else ''}raises it {how}"
    return f"{lead} ({fall}): {pref}."


def history_sentence(
    evidence: ItemEvidence,
    hist: Sequence[dict],
    *,
    fact_label: str = "genre",
    first: bool = True,
) -> str:
    """The template's sentence for cited history items and the facts they share."""
    names = join_words([named(h["title"]) for h in hist])
    how = strength(max((evidence.share(h) for h in hist), default=0.0))
    if first and how == "strongly":
        sentence = f"You are seeing it mostly because you watched {names}"
    elif how == "a little":
        sentence = f"Having watched {names} adds a little"
    else:
        verb = "raises" if len(hist) == 1 else "raise"
        sentence = f"{names} from your history {'also ' if not first else ''}{verb} it {how}"
    shared_hist = [f for f in evidence.shared_facts[:2] if any(f in h["facts"] for h in hist)]
    if shared_hist:
        label = fact_label + ("s" if len(shared_hist) > 1 else "")
        # name who shares the facts: all of them, or only some ("Sleeper (1973) shares …")
        sharing = [h for h in hist if all(f in h["facts"] for f in shared_hist)]
        if len(sharing) == len(hist):
            who = "it shares" if len(hist) == 1 else "they share"
        elif len(sharing) == 1:
            who = f"{named(sharing[0]['title'])} shares"
        else:  # each shares some of them: keep to the first fact, which one item has
            shared_hist = shared_hist[:1]
            label = fact_label
            holders = [h for h in hist if shared_hist[0] in h["facts"]]
            who = (
                "they share"
                if len(holders) == len(hist)
                else f"{join_words([named(h['title']) for h in holders])} "
                + ("shares" if len(holders) == 1 else "share")
            )
        sentence += f"; {who} its {join_words([safe_title(f, 40) for f in shared_hist])} {label}"
    return sentence + "."


def _ordered(
    evidence: ItemEvidence, tastes: Sequence[dict], hist: Sequence[dict], fact_label: str
) -> list[str]:
    """The sentences for cited tastes and history items, largest effect first."""
    groups: list[tuple[float, str, Any]] = [(float(p["score_drop"]), "taste", p) for p in tastes]
    # history items that matter alike are named together; a much weaker one on its own
    by_strength: dict[str, list[dict]] = {}
    for h in hist:
        by_strength.setdefault(strength(evidence.share(h)), []).append(h)
    for group in by_strength.values():
        groups.append((max(float(h["score_drop"]) for h in group), "history", group))
    groups.sort(key=lambda g: -g[0])
    out = []
    for n, (_, kind, what) in enumerate(groups):
        if kind == "taste":
            out.append(preference_sentence(evidence, what, first=n == 0))
        else:
            out.append(history_sentence(evidence, what, fact_label=fact_label, first=n == 0))
    return out


def completion_sentences(
    evidence: ItemEvidence,
    named_preferences: set[int],
    named_history: set[int],
    *,
    fact_label: str = "genre",
) -> list[str]:
    """Template sentences for the cited evidence a written reason left out: each cited
    preference it does not lean on, and the cited history items it does not name."""
    missing_p = [
        p for p in evidence.cited_preference_effects() if int(p["index"]) not in named_preferences
    ]
    missing_h = [h for h in evidence.cited_history_effects() if int(h["item"]) not in named_history]
    sentences = _ordered(evidence, missing_p, missing_h, fact_label)
    # the written reason came first: these are additions, never "mostly because"
    lead = "You are seeing it mostly because"
    return [s.replace(lead, "It is also here because") for s in sentences]


def template_reason(evidence: ItemEvidence, *, fact_label: str = "genre") -> str:
    """A short, factual reason built from the item-specific evidence, its largest effect
    first and each piece's weight said in words."""
    title = named(evidence.title)
    facts = [safe_title(f, 40) for f in evidence.facts[:5]]
    first = f"We suggest {title}" + (f" ({join_words(facts)})." if facts else ".")
    parts = [first]
    parts += _ordered(
        evidence,
        evidence.cited_preference_effects(),
        evidence.cited_history_effects(),
        fact_label,
    )
    if evidence.empty:
        parts.append(
            "It ranks high for your history as a whole; no single item or taste of yours "
            "raises its score on its own."
        )
    return " ".join(parts)
