"""Evaluation streams over batches of users: the same ranks at any batch size, and
memory that does not grow with users x items."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from whyrec.errors import ConfigError
from whyrec.evaluate import evaluate, full_ranking, sampled_ranking
from whyrec.evaluate.ranking import compute_ranks

from .conftest import make_dataset


class HistoryScorer:
    """Scores that depend on the user and on the history (so masks and batching show).

    Per user a seeded random vector; every history item gets a bonus, so an unmasked
    history would crowd the top of the ranking.
    """

    name = "history-scorer"

    def __init__(self, n_items: int, fingerprint: str = ""):
        self.n_items = n_items
        self.fingerprint = fingerprint
        self.batches: list[int] = []

    def score_batch(self, histories, users=None):
        self.batches.append(len(histories))
        out = np.empty((len(histories), self.n_items), dtype=np.float32)
        for row, (u, h) in enumerate(zip(users, histories, strict=True)):
            out[row] = np.random.default_rng(int(u)).random(self.n_items)
            out[row, h] += 2.0
        return out

    def check_dataset(self, dataset):
        assert dataset.fingerprint() == self.fingerprint


@pytest.fixture(scope="module")
def random_ds():
    rng = np.random.default_rng(7)
    seqs = {
        f"u{u}": [f"i{int(i)}" for i in rng.integers(0, 40, size=int(rng.integers(4, 15)))]
        for u in range(57)
    }
    return make_dataset(seqs, n_items=40, name="tiny-stream")


@pytest.mark.parametrize("batch_size", [1, 5, 16])
def test_streaming_evaluation_agrees_with_one_batch(random_ds, batch_size):
    ds = random_ds
    protos = [full_ranking(), sampled_ranking(10, seed=3)]
    one = HistoryScorer(ds.n_items, ds.fingerprint())
    whole = evaluate(one, ds, protocols=protos, batch_size=10_000, keep_ranks=True)
    many = HistoryScorer(ds.n_items, ds.fingerprint())
    streamed = evaluate(many, ds, protocols=protos, batch_size=batch_size, keep_ranks=True)
    n_users = whole.results[0].n_users
    assert one.batches == [n_users]
    assert max(many.batches) == batch_size and sum(many.batches) == n_users
    for a, b in zip(whole.results, streamed.results, strict=True):
        assert a.protocol == b.protocol
        assert a.users == b.users and a.ranks == b.ranks
        assert a.metrics == b.metrics
    # the ranks are not trivial: the full protocol differs from the sampled one
    assert whole.results[0].ranks != whole.results[1].ranks


def test_evaluation_memory_does_not_grow_with_users_times_items():
    # 20,000 users x 400 items: one score matrix is 32 MB, the sampled negatives of
    # every user at once 16 MB; a batch of 200 users needs well under 2 MB
    n_users, n_items, batch = 20_000, 400, 200
    rng = np.random.default_rng(0)
    users = np.arange(n_users)
    histories = [rng.choice(n_items, size=5, replace=False) for _ in range(n_users)]
    targets = np.array([(h[-1] + 1) % n_items for h in histories])
    interacted = [np.unique(np.append(h, t)) for h, t in zip(histories, targets, strict=True)]

    class Random:
        name = "random"

        def score_batch(self, hist, u=None):
            return np.random.default_rng(int(u[0])).random((len(hist), n_items), np.float32)

    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        ranks = compute_ranks(
            Random(),
            users,
            histories,
            targets,
            [full_ranking(), sampled_ranking(100)],
            n_items=n_items,
            interacted=interacted,
            batch_size=batch,
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert all(len(r) == n_users and r.min() >= 0 for r in ranks)
    assert peak < 4_000_000, f"peak {peak / 1e6:.1f} MB for batches of {batch} users"


def test_batch_size_must_be_positive(random_ds):
    ds = random_ds
    with pytest.raises(ConfigError, match="batch_size"):
        evaluate(HistoryScorer(ds.n_items, ds.fingerprint()), ds, protocols="full", batch_size=0)
