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
from whyrec.safety import safe_title

#: Longest preference sentence quoted inside a reason.
PREFERENCE_CAP = 120


def join_words(parts: Sequence[str]) -> str:
    """ "A", "A and B", "A, B and C"."""
    parts = list(parts)
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + f" and {parts[-1]}"


def template_reason(evidence: ItemEvidence, *, fact_label: str = "genre") -> str:
    """A short, factual reason built from the item-specific evidence."""
    title = safe_title(evidence.title)
    facts = [safe_title(f, 40) for f in evidence.facts[:5]]
    first = f"We suggest {title}" + (f" ({join_words(facts)})." if facts else ".")
    parts = [first]
    for n, p in enumerate(evidence.cited_preference_effects()):
        pref = safe_title(str(p["preference"]).rstrip(". "), PREFERENCE_CAP)
        fall = (
            f"without it, it would fall from rank {evidence.rank} to {p['rank_without']}"
            if p["rank_without"] > evidence.rank
            else "without it, it would score lower"
        )
        lead = "A taste of yours raises its score" if n == 0 else "So does another"
        parts.append(f"{lead} ({fall}): {pref}.")
    hist = evidence.cited_history_effects()
    if hist:
        names = join_words([safe_title(h["title"]) for h in hist])
        verb = "raises" if len(hist) == 1 else "raise"
        sentence = f"In your history, {names} {verb} its score the most"
        shared_hist = [f for f in evidence.shared_facts[:2] if any(f in h["facts"] for h in hist)]
        if shared_hist:
            label = fact_label + ("s" if len(shared_hist) > 1 else "")
            pron = "it shares" if len(hist) == 1 else "they share"
            sentence += (
                f"; {pron} its {join_words([safe_title(f, 40) for f in shared_hist])} {label}"
            )
        parts.append(sentence + ".")
    if evidence.empty:
        parts.append(
            "It ranks high for your history as a whole; no single item or taste of yours "
            "raises its score on its own."
        )
    return " ".join(parts)
