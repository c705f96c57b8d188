"""Counterfactual faithfulness: does removing what a reason cites lower the item?

What a text cites is read from the text itself — the history titles it names (title
grounding) and the preferences it leans on (half of a preference's content words, or a
quoted preference) — so every system is measured the same way, whatever it was given.
The recommender is then re-scored (:meth:`Recommender.counterfactual`):

* **necessity** — with the cited evidence removed, the item's score and rank drop
  (``cf_score_drop``, ``cf_rank_drop``); as the control, the same number of *uncited*
  preferences and history items (from the model's input window) is removed at random,
  ``draws`` times with a seeded generator (``cf_control_rank_drop``,
  ``cf_control_score_drop``: means over the draws). ``necessity_win`` is 1 when the cited
  evidence lowers the item's rank more than the control does on average (a tie in rank
  is decided by the score drop);
* **sufficiency** — with everything *but* the cited evidence removed (the other
  preferences masked, the uncited history items of the window dropped), whether the
  item stays in the top ``k`` (``sufficiency_topk``) and its rank (``sufficiency_rank``).

A text that cites nothing checkable gets no counterfactual numbers (``cf_cited`` = 0);
the summary's N says how many explanations each figure covers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from whyrec.evaluate.explanations.cases import ExplanationCase
from whyrec.explain.grounding import Catalogue

#: Random control draws per explanation.
CONTROL_DRAWS = 5
#: Sufficiency: does the item stay within this many items?
SUFFICIENCY_K = 10


def cited_evidence(
    text: str, case: ExplanationCase, catalogue: Catalogue, window: int
) -> tuple[list[int], list[int]]:
    """(preference indices, history positions) that ``text`` cites."""
    from whyrec.explain.grounding import quoted_spans
    from whyrec.explain.verify import leaned_preferences, split_sentences

    prefs = sorted(
        {
            j
            for s in split_sentences(text, catalogue)
            for j in leaned_preferences(
                s, case.preferences, catalogue, target=case.item, history=case.history
            )
        }
    )
    hist = list(case.history)
    start = max(0, len(hist) - window)
    mentions = catalogue.find_titles(
        text, target=case.item, history=hist, preferences=case.preferences
    )
    # titles inside a quoted taste are the taste's examples, not history items cited
    quoted = [(a, b) for a, b, _ in quoted_spans(text, case.preferences)]
    named = {
        int(m.item)
        for m in mentions
        if m.status == "history"
        and m.item is not None
        and not any(a <= m.start < b for a, b in quoted)
    }
    positions = []
    for item in named:  # the most recent occurrence inside the model's window
        pos = [p for p in range(start, len(hist)) if hist[p] == item]
        if pos:
            positions.append(pos[-1])
    return prefs, sorted(positions)


def counterfactual_metrics(
    model: Any,
    case: ExplanationCase,
    catalogue: Catalogue,
    *,
    user: int,
    seed: int = 0,
    draws: int = CONTROL_DRAWS,
    k: int = SUFFICIENCY_K,
) -> dict[str, float | None]:
    """The necessity and sufficiency figures of one explanation (see the module doc)."""
    from whyrec.models.attribution import Removal

    # the history items the model's evidence looks at (0: all of them)
    window = int(getattr(model, "evidence_window", 50)) or len(case.history)
    prefs, positions = cited_evidence(str(case.text or ""), case, catalogue, window)
    out: dict[str, float | None] = {"cf_cited": float(len(prefs) + len(positions))}
    if not prefs and not positions:
        return out
    m = len(case.preferences) if model.has_preferences else 0
    hist = list(case.history)
    start = max(0, len(hist) - window)
    other_p = [j for j in range(m) if j not in prefs]
    other_h = [p for p in range(start, len(hist)) if p not in positions]
    # a stable per-case seed: the same explanation always gets the same control draws
    key = sum(ord(c) for c in f"{case.user}:{case.item}") + seed
    rng = np.random.default_rng(key)
    controls = []
    for _ in range(draws):
        cp = rng.choice(other_p, size=min(len(prefs), len(other_p)), replace=False)
        ch = rng.choice(other_h, size=min(len(positions), len(other_h)), replace=False)
        controls.append(
            Removal(history=tuple(int(x) for x in ch), preferences=tuple(int(x) for x in cp))
        )
    removals = [
        Removal(history=tuple(positions), preferences=tuple(prefs)),
        *controls,
        # sufficiency: every uncited history item goes (older ones too, or they would
        # slide into the model's window), and every uncited preference
        Removal(
            history=tuple(p for p in range(len(hist)) if p not in positions),
            preferences=tuple(other_p),
        ),
    ]
    res = model.counterfactual(case.item, user, removals=removals)
    (score, rank), cited, ctrl, keep_only = res[0], res[1], res[2:-1], res[-1]
    c_rank = float(np.mean([r - rank for _, r in ctrl]))
    c_score = float(np.mean([score - s for s, _ in ctrl]))
    rank_drop, score_drop = cited[1] - rank, score - cited[0]
    win = rank_drop > c_rank or (rank_drop == c_rank and score_drop > c_score)
    out.update(
        {
            "cf_score_drop": float(score_drop),
            "cf_rank_drop": float(rank_drop),
            "cf_control_score_drop": c_score,
            "cf_control_rank_drop": c_rank,
            "necessity_win": float(win),
            "sufficiency_rank": float(keep_only[1]),
            "sufficiency_topk": float(keep_only[1] <= k),
        }
    )
    return out


def score_counterfactual(
    model: Any,
    cases: Sequence[ExplanationCase],
    catalogue: Catalogue,
    *,
    seed: int = 0,
    draws: int = CONTROL_DRAWS,
    k: int = SUFFICIENCY_K,
) -> None:
    """Add the counterfactual metrics to every explained case (``case.metrics``)."""
    users = {str(u): i for i, u in enumerate(model.user_ids)}
    for c in cases:
        if not c.ok or c.user not in users:
            continue
        c.metrics.update(
            counterfactual_metrics(
                model, c, catalogue, user=users[c.user], seed=seed, draws=draws, k=k
            )
        )
