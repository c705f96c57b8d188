"""The grounded template reason: used when the LLM fails, and as a comparison system.

It states only what the recommender computed: the highest-weighted preferences and the
history items whose removal lowers the item's score the most.
"""

from __future__ import annotations

from collections.abc import Sequence


def template_reason(
    item_title: str,
    preferences: Sequence[str],
    weights: Sequence[float],
    influential_titles: Sequence[str],
    *,
    top_preferences: int = 2,
) -> str:
    """A short, factual reason built from the model's own evidence."""
    order = sorted(range(len(preferences)), key=lambda j: -weights[j])[:top_preferences]
    parts = [f"We suggest {item_title} because it matches what drives your recommendations"]
    if order:
        prefs = "; ".join(
            f"“{preferences[j].rstrip('.')}” ({weights[j]:.0%} of the weight)" for j in order
        )
        parts[0] += f": {prefs}."
    else:
        parts[0] += "."
    if influential_titles:
        shown = list(dict.fromkeys(influential_titles))[:3]
        joined = shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + f" and {shown[-1]}"
        parts.append(f"Among what you watched, {joined} raised its score the most.")
    return " ".join(parts)
