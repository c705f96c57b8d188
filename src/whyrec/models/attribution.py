"""Item-specific evidence by counterfactual re-scoring, shared by every recommender.

:meth:`Recommender.counterfactual` re-scores one item with parts of the input removed
(history positions; for LANE also preferences) and returns its score and rank in each
variant. :meth:`Recommender.attribution` builds on it: the item's score and rank, then
the same without each recent history item (LANE adds each preference). What a reason
cites for an item is chosen from these numbers, and the explanation-quality harness uses
:meth:`~Recommender.counterfactual` again to check that removing what a reason cites
really lowers the item more than removing the same amount of uncited evidence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: History items the generic attribution removes one at a time (the most recent).
DEFAULT_WINDOW = 50


@dataclass(frozen=True)
class Removal:
    """What one counterfactual variant leaves out: history *positions* (indices into the
    full history, oldest first) and preference indices (LANE only)."""

    history: tuple[int, ...] = ()
    preferences: tuple[int, ...] = ()


@dataclass
class Attribution:
    """How much each preference and each history item drives one item's score.

    ``weights`` are LANE's user-level weights (empty for other models): the same for every
    candidate item of the user, so they never stand in for item-specific evidence.
    """

    item: int
    score: float
    rank: int  # 1-based among unseen items
    weights: list[float] = field(default_factory=list)
    preferences: list[dict[str, Any]] = field(default_factory=list)  # index, weight, drop, rank
    history: list[dict[str, Any]] = field(default_factory=list)  # item, position, drop, rank

    def to_dict(self) -> dict[str, Any]:
        return {
            "item": self.item,
            "score": self.score,
            "rank": self.rank,
            "weights": self.weights,
            "preferences": self.preferences,
            "history": self.history,
        }


def ranks_of(scores: np.ndarray, item: int, seen: np.ndarray) -> np.ndarray:
    """1-based rank of ``item`` in each row of ``scores``, items in ``seen`` excluded."""
    s = scores.astype(np.float64, copy=True)
    s[:, seen] = -np.inf
    target = s[:, item : item + 1]
    return (s > target).sum(1) + 1


def drop_positions(history: np.ndarray, positions: Sequence[int]) -> np.ndarray:
    """``history`` without the given positions (the last item is never left empty: a
    variant that would remove every item keeps the history as it is)."""
    if not positions:
        return history
    keep = np.ones(len(history), dtype=bool)
    keep[np.asarray(list(positions), dtype=np.int64)] = False
    return history[keep] if keep.any() else history


def history_effects(
    history: np.ndarray,
    base_score: float,
    results: Sequence[tuple[float, int]],
    positions: Sequence[int],
    top: int,
) -> list[dict[str, Any]]:
    """Per removed history position: item, position, score drop, rank without it; the
    ``top`` largest drops first (stable for ties)."""
    drops = np.array([base_score - s for s, _ in results], dtype=np.float64)
    order = np.argsort(-drops, kind="stable")[:top]
    return [
        {
            "item": int(history[positions[i]]),
            "position": int(positions[i]),
            "score_drop": float(drops[i]),
            "rank_without": int(results[i][1]),
        }
        for i in order
    ]
