"""Recommender.top_k: batch top-k over precomputed score rows, ordered as recommend."""

import numpy as np
import pytest

from whyrec.errors import ModelError


@pytest.mark.parametrize("name", ["popularity", "bpr-mf", "sasrec"])
def test_top_k_of_score_rows_equals_recommend(fitted, seq_ds, name, float32_checks):
    model = fitted[name]
    users = np.arange(0, 12)
    hists = [model.histories[u] for u in users]
    tops = model.top_k(model.score_batch(hists, users), hists, 7)
    assert len(tops) == len(users)
    for u, (items, scores) in zip(users, tops, strict=True):
        want = model.recommend(int(u), k=7)
        # a batch of 12 rows and one row go through different float32 kernels
        float32_checks.ranking(items, scores, want.items, want.scores)
        assert items.dtype == np.int64 and scores.dtype == np.float32


def test_top_k_breaks_ties_by_index_and_leaves_out_seen(fitted):
    model = fitted["popularity"]
    n = model.n_items
    row = np.zeros(n, dtype=np.float32)
    row[[5, 2, 9]] = 3.0  # a three-way tie: lowest index first
    row[7] = 4.0
    row[1] = 5.0
    (items, scores), (items2, _) = model.top_k(np.stack([row, row]), [[1], []], 4)
    assert items.tolist() == [7, 2, 5, 9]
    assert scores.tolist() == [4.0, 3.0, 3.0, 3.0]
    assert items2.tolist() == [1, 7, 2, 5]


def test_top_k_gives_fewer_items_when_few_are_left(fitted):
    model = fitted["popularity"]
    n = model.n_items
    row = np.full(n, -np.inf, dtype=np.float32)
    row[[3, 4]] = [1.0, 2.0]
    (items, _), (empty, empty_scores) = model.top_k(np.stack([row, row]), [[], [3, 4]], 10)
    assert items.tolist() == [4, 3]
    assert len(empty) == 0 and len(empty_scores) == 0
    no_seen, _ = model.top_k(row[None, :], None, 2)[0]
    assert no_seen.tolist() == [4, 3]


def test_top_k_rejects_bad_input(fitted):
    model = fitted["popularity"]
    n = model.n_items
    with pytest.raises(ModelError, match="k must be a positive integer"):
        model.top_k(np.zeros((1, n)), None, 0)
    with pytest.raises(ModelError, match=rf"shape \(n, {n}\)"):
        model.top_k(np.zeros((1, n + 1)), None, 3)
    with pytest.raises(ModelError, match="seen has 2 rows but scores has 1"):
        model.top_k(np.zeros((1, n)), [[], []], 3)
    with pytest.raises(ModelError, match=r"unknown item indices in seen\[0\]"):
        model.top_k(np.zeros((1, n)), [[n + 3]], 3)
