import math

import numpy as np
import pytest

from whyrec.evaluate import (
    hit_rate_at_k,
    mask_history,
    mrr,
    ndcg_at_k,
    rank_of_target,
    sample_negatives,
    summarize,
)


def test_rank_counts_items_scored_at_least_as_high():
    scores = np.array([[0.1, 0.9, 0.5, 0.3], [0.4, 0.3, 0.2, 0.1]])
    assert rank_of_target(scores, np.array([2, 0])).tolist() == [1, 0]


def test_ties_count_against_the_model():
    # a constant model must not look perfect
    assert rank_of_target(np.zeros((1, 5)), np.array([3])).tolist() == [4]
    assert rank_of_target(np.array([[0.5, 0.7, 0.5, 0.1]]), np.array([0])).tolist() == [2]


def test_nan_scores_rank_last():
    scores = np.array([[np.nan, 0.2, 0.1], [0.3, np.nan, 0.1]])
    assert rank_of_target(scores, np.array([0, 0])).tolist() == [2, 0]


def test_excluded_minus_inf_columns_do_not_count():
    scores = np.array([[-np.inf, 0.2, -np.inf, 0.1]])
    assert rank_of_target(scores, np.array([3])).tolist() == [1]


def test_metrics_on_hand_computed_ranks():
    ranks = np.array([0, 1, 4, 10, 25])
    assert hit_rate_at_k(ranks, 5) == pytest.approx(3 / 5)
    assert hit_rate_at_k(ranks, 10) == pytest.approx(3 / 5)  # rank 10 is the 11th item
    assert hit_rate_at_k(ranks, 20) == pytest.approx(4 / 5)
    assert ndcg_at_k(ranks, 5) == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6)) / 5)
    assert ndcg_at_k(ranks, 20) == pytest.approx(
        (1 + 1 / math.log2(3) + 1 / math.log2(6) + 1 / math.log2(12)) / 5
    )
    assert mrr(ranks) == pytest.approx((1 + 1 / 2 + 1 / 5 + 1 / 11 + 1 / 26) / 5)


def test_summarize_keys_and_values():
    out = summarize(np.array([0, 3]), ks=(10, 5))
    assert list(out) == ["HR@5", "HR@10", "NDCG@5", "NDCG@10", "MRR"]
    assert out["HR@5"] == 1.0
    assert out["NDCG@5"] == pytest.approx((1 + 1 / math.log2(5)) / 2)
    assert out["MRR"] == pytest.approx((1 + 1 / 4) / 2)


def test_mask_history_keeps_the_target_even_if_seen():
    scores = np.arange(12, dtype=np.float32).reshape(2, 6)
    mask_history(scores, [np.array([0, 5]), np.array([1, 2, 3])], np.array([1, 3]))
    assert np.isneginf(scores[0, [0, 5]]).all() and scores[0, 1] == 1
    assert np.isneginf(scores[1, [1, 2]]).all() and scores[1, 3] == 9


def test_sample_negatives_avoids_seen_items_and_is_uniform():
    seen = np.array([0, 1, 2, 7, 8, 19])
    rng = np.random.default_rng(0)
    counts = np.zeros(20)
    for _ in range(2000):
        neg = sample_negatives(seen, 20, 5, rng)
        assert len(set(neg.tolist())) == 5
        assert not np.isin(neg, seen).any()
        assert ((neg >= 0) & (neg < 20)).all()
        counts[neg] += 1
    free = np.setdiff1d(np.arange(20), seen)
    expected = 2000 * 5 / len(free)
    assert counts[seen].sum() == 0
    assert np.abs(counts[free] - expected).max() < 0.15 * expected


def test_sample_negatives_all_unseen_and_too_few():
    from whyrec.errors import DataError

    neg = sample_negatives(np.array([1, 3]), 5, 3, np.random.default_rng(1))
    assert sorted(neg.tolist()) == [0, 2, 4]
    with pytest.raises(DataError, match="cannot draw 4 negatives"):
        sample_negatives(np.array([1, 3]), 5, 4, np.random.default_rng(1))
