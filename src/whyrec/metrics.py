"""Ranking metrics from the 0-based rank of the held-out item.

They sit low in the layers (numpy only) so that models can use them while they train
(early stopping on validation NDCG) and :mod:`whyrec.evaluate` for its reports.

Every metric here takes ``ranks``: for each user, how many candidate items the model
scored *at least as high* as the true item (0 = the true item is first). Ties count
against the model, so a model that scores everything equally gets the worst rank, not
the best one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

DEFAULT_KS = (5, 10, 20)


def rank_of_target(scores: np.ndarray, target_col: np.ndarray) -> np.ndarray:
    """0-based pessimistic rank of ``scores[b, target_col[b]]`` within each row.

    Columns already excluded by the caller should hold ``-inf``; NaN scores are
    treated as the lowest possible score so a broken model cannot look good.
    """
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D (users x candidates), got shape {scores.shape}")
    rows = np.arange(scores.shape[0])
    target_col = np.asarray(target_col, dtype=np.int64)
    clean = np.where(np.isnan(scores), -np.inf, scores)
    target = clean[rows, target_col]
    # minus one for the target itself; a target at -inf ties with everything: last
    return ((clean >= target[:, None]).sum(axis=1) - 1).astype(np.int64)


def hit_rate_at_k(ranks: np.ndarray, k: int) -> float:
    """Share of users whose true item is in the top ``k``."""
    ranks = np.asarray(ranks)
    return float((ranks < k).mean()) if ranks.size else 0.0


def ndcg_gains(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-user NDCG@k with one relevant item: ``1/log2(rank + 2)`` inside the top ``k``,
    else 0 (for paired comparisons; :func:`ndcg_at_k` is their mean)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    return np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)


def ndcg_at_k(ranks: np.ndarray, k: int) -> float:
    """NDCG@k with one relevant item: ``1/log2(rank + 2)`` inside the top ``k``, else 0."""
    gains = ndcg_gains(ranks, k)
    return float(gains.mean()) if gains.size else 0.0


def mrr(ranks: np.ndarray) -> float:
    """Mean reciprocal rank over the whole candidate list (no cut-off)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    return float((1.0 / (ranks + 1.0)).mean()) if ranks.size else 0.0


def summarize(ranks: np.ndarray, ks: Iterable[int] = DEFAULT_KS) -> dict[str, float]:
    """HR@k and NDCG@k for every ``k`` plus MRR, in a stable key order."""
    out: dict[str, float] = {}
    ks = sorted(set(int(k) for k in ks))
    for k in ks:
        out[f"HR@{k}"] = hit_rate_at_k(ranks, k)
    for k in ks:
        out[f"NDCG@{k}"] = ndcg_at_k(ranks, k)
    out["MRR"] = mrr(ranks)
    return out


def mask_history(scores: np.ndarray, histories: Sequence[np.ndarray], targets: np.ndarray) -> None:
    """Set history items to ``-inf`` in place, keeping each row's target score."""
    rows = np.arange(len(targets))
    keep = scores[rows, targets].copy()
    lens = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
    if lens.sum():
        scores[np.repeat(rows, lens), np.concatenate(histories).astype(np.int64)] = -np.inf
    scores[rows, targets] = keep
