"""The grounded template reason: shown when the LLM's reason fails verification, and a
comparison system.

It says only what the recommender computed for *this* item (see
:mod:`whyrec.explain.evidence`): the item and its facts, the preference whose removal
lowers its score most (with the rank it would fall to), the history items whose removal
lowers it most, and the facts those share with the item. Titles and preference texts are
untrusted: they pass :func:`whyrec.safety.safe_title` (control strings removed, capped).
"""

from __future__ import annotations

from collections.abc import Sequence

from whyrec.explain.evidence import ItemEvidence
from whyrec.explain.schemas import MAX_PREFERENCE_CHARS
from whyrec.safety import safe_title

#: Longest preference sentence quoted inside a reason: every validated preference fits
#: whole (a cut one would read as an unfinished sentence).
PREFERENCE_CAP = MAX_PREFERENCE_CHARS


def join_words(parts: Sequence[str]) -> str:
    """ "A", "A and B", "A, B and C"."""
    parts = list(parts)
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + f" and {parts[-1]}"


def preference_sentence(evidence: ItemEvidence, effect: dict, *, first: bool = True) -> str:
    """The template's sentence for one cited preference (with the rank it would fall to)."""
    pref = safe_title(str(effect["preference"]).rstrip(". "), PREFERENCE_CAP)
    fall = (
        f"without it, it would fall from rank {evidence.rank} to {effect['rank_without']}"
        if effect["rank_without"] > evidence.rank
        else "without it, it would score lower"
    )
    lead = "A taste of yours raises its score" if first else "So does another"
    return f"{lead} ({fall}): {pref}."


def history_sentence(
    evidence: ItemEvidence, hist: Sequence[dict], *, fact_label: str = "genre"
) -> str:
    """The template's sentence for cited history items and the facts they share."""
    names = join_words([safe_title(h["title"]) for h in hist])
    verb = "raises" if len(hist) == 1 else "raise"
    sentence = f"In your history, {names} {verb} its score the most"
    shared_hist = [f for f in evidence.shared_facts[:2] if any(f in h["facts"] for h in hist)]
    if shared_hist:
        label = fact_label + ("s" if len(shared_hist) > 1 else "")
        # name who shares the facts: all of them, or only some ("Sleeper (1973) shares …")
        sharing = [h for h in hist if all(f in h["facts"] for f in shared_hist)]
        if len(sharing) == len(hist):
            who = "it shares" if len(hist) == 1 else "they share"
        elif len(sharing) == 1:
            who = f"{safe_title(sharing[0]['title'])} shares"
        else:  # each shares some of them: keep to the first fact, which one item has
            shared_hist = shared_hist[:1]
            label = fact_label
            holders = [h for h in hist if shared_hist[0] in h["facts"]]
            who = (
                "they share"
                if len(holders) == len(hist)
                else f"{join_words([safe_title(h['title']) for h in holders])} "
                + ("shares" if len(holders) == 1 else "share")
            )
        sentence += f"; {who} its {join_words([safe_title(f, 40) for f in shared_hist])} {label}"
    return sentence + "."


def completion_sentences(
    evidence: ItemEvidence,
    named_preferences: set[int],
    named_history: set[int],
    *,
    fact_label: str = "genre",
) -> list[str]:
    """Template sentences for the cited evidence a written reason left out: each cited
    preference it does not lean on, and the cited history items it does not name."""
    out = []
    missing_p = [
        p for p in evidence.cited_preference_effects() if int(p["index"]) not in named_preferences
    ]
    for n, p in enumerate(missing_p):
        out.append(preference_sentence(evidence, p, first=n == 0))
    missing_h = [h for h in evidence.cited_history_effects() if int(h["item"]) not in named_history]
    if missing_h:
        out.append(history_sentence(evidence, missing_h, fact_label=fact_label))
    return out


def template_reason(evidence: ItemEvidence, *, fact_label: str = "genre") -> str:
    """A short, factual reason built from the item-specific evidence."""
    title = safe_title(evidence.title)
    facts = [safe_title(f, 40) for f in evidence.facts[:5]]
    first = f"We suggest {title}" + (f" ({join_words(facts)})." if facts else ".")
    parts = [first]
    for n, p in enumerate(evidence.cited_preference_effects()):
        parts.append(preference_sentence(evidence, p, first=n == 0))
    hist = evidence.cited_history_effects()
    if hist:
        parts.append(history_sentence(evidence, hist, fact_label=fact_label))
    if evidence.empty:
        parts.append(
            "It ranks high for your history as a whole; no single item or taste of yours "
            "raises its score on its own."
        )
    return " ".join(parts)
