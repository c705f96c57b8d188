import json
import math

import numpy as np
import pytest

from whyrec.errors import ConfigError, DataError, ModelError
from whyrec.evaluate import evaluate, full_ranking, parse_protocols, sampled_ranking


class FixedScores:
    """A stand-in model: the same item scores for every user."""

    name = "fixed"

    def __init__(self, scores, fingerprint):
        self.scores = np.asarray(scores, dtype=np.float32)
        self.fingerprint = fingerprint
        self.calls = 0

    def score_batch(self, histories, users=None):
        self.calls += 1
        return np.tile(self.scores, (len(histories), 1))

    def check_dataset(self, dataset):
        if dataset.fingerprint() != self.fingerprint:
            raise ModelError("other dataset")


class Oracle(FixedScores):
    """Scores the held-out test item highest (or lowest with ``invert``)."""

    def __init__(self, ds, invert=False):
        super().__init__(np.zeros(ds.n_items), ds.fingerprint())
        users, _, targets = ds.histories_for("test")
        self.target = dict(zip(users.tolist(), targets.tolist(), strict=True))
        self.sign = -1.0 if invert else 1.0

    def score_batch(self, histories, users=None):
        out = np.zeros((len(users), len(self.scores)), dtype=np.float32)
        for row, u in enumerate(users):
            out[row, self.target[int(u)]] = self.sign
        return out


def idx(ds, item_id):
    return ds.item_index(item_id)


def test_full_ranking_matches_hand_computation(small_ds):
    ds = small_ds
    # scores by source item: i0 .. i5 = 6, 5, 4, 3, 2, 1 (i0 best)
    scores = np.zeros(ds.n_items)
    for i in range(6):
        scores[idx(ds, f"i{i}")] = 6 - i
    model = FixedScores(scores, ds.fingerprint())
    report = evaluate(model, ds, protocols="full")
    # a: history i0 i1 i2 masked, target i3 (3) vs unmasked i4 (2), i5 (1) -> rank 0
    # b: history i5 i4 masked, target i0 (6) -> rank 0 ... but i0 is best anyway
    # c: history i1 i2 i5 i4 (+ target i1 kept), target i1 (5) vs i0 (6), i3 (3) -> rank 1
    ranks = [0, 0, 1]
    r = report["full"]
    assert r.n_users == 3 and r.protocol == "full" and r.split == "test"
    assert r["HR@5"] == 1.0
    assert r["NDCG@5"] == pytest.approx((1 + 1 + 1 / math.log2(3)) / 3)
    assert r["MRR"] == pytest.approx(sum(1 / (x + 1) for x in ranks) / 3)
    assert "ranks" not in report.to_dict()["results"][0]
    kept = evaluate(model, ds, protocols="full", keep_ranks=True)["full"]
    by_user = dict(zip(kept.users, kept.ranks, strict=True))
    assert [by_user[ds.user_index(u)] for u in "abc"] == ranks


def test_validation_split_uses_train_history(small_ds):
    ds = small_ds
    scores = np.zeros(ds.n_items)
    for i in range(6):
        scores[idx(ds, f"i{i}")] = i  # i5 best
    report = evaluate(FixedScores(scores, ds.fingerprint()), ds, protocols="full", split="valid")
    # a: hist i0 i1, target i2 (2) vs i3 (3), i4 (4), i5 (5) -> rank 3
    # b: hist i5, target i4 (4) vs nothing higher unmasked -> rank 0
    # c: hist i1 i2 i5, target i4 (4) -> rank 0
    assert report["full"]["MRR"] == pytest.approx((1 / 4 + 1 + 1) / 3)


def test_sampled_protocol_oracle_and_anti_oracle(small_ds):
    big = small_ds
    best = evaluate(Oracle(big), big, protocols=sampled_ranking(n_negatives=2, seed=3))
    assert best["sampled"]["HR@5"] == 1.0 and best["sampled"]["MRR"] == 1.0
    worst = evaluate(Oracle(big, invert=True), big, protocols=sampled_ranking(2, seed=3))
    # target scored -1 against two negatives scored 0: rank 2 for everyone
    assert worst["sampled"]["MRR"] == pytest.approx(1 / 3)
    assert worst["sampled"].n_candidates == 3


def test_sampled_negatives_do_not_depend_on_batching_or_user_subset(small_ds):
    ds = small_ds
    rng = np.random.default_rng(0)
    scores = rng.random(ds.n_items)
    m = FixedScores(scores, ds.fingerprint())
    proto = sampled_ranking(n_negatives=2, seed=7)
    a = evaluate(m, ds, protocols=proto, batch_size=1)
    b = evaluate(m, ds, protocols=proto, batch_size=100)
    assert a["sampled"].metrics == b["sampled"].metrics
    c = evaluate(m, ds, protocols=proto, seed=7, users=[ds.user_index("b")])
    assert c["sampled"].n_users == 1


def test_both_protocols_share_one_scoring_pass_and_are_labelled(small_ds):
    ds = small_ds
    m = FixedScores(np.arange(ds.n_items), ds.fingerprint())
    report = evaluate(m, ds, n_negatives=2)
    assert m.calls == 1
    assert [r.protocol for r in report.results] == ["full", "sampled-2"]
    data = json.loads(report.to_json())
    labels = [r["label"] for r in data["results"]]
    assert "full ranking" in labels[0] and "seen items excluded" in labels[0]
    assert "2 negatives" in labels[1] and "seed 0" in labels[1]
    table = report.table()
    assert "full ranking" in str(table.caption) and "sampled" in str(table.caption)


def test_errors_name_the_problem(small_ds):
    ds = small_ds
    m = FixedScores(np.zeros(ds.n_items), ds.fingerprint())
    with pytest.raises(ModelError):
        evaluate(FixedScores(np.zeros(ds.n_items), "other"), ds)
    with pytest.raises(DataError, match="unknown user indices"):
        evaluate(m, ds, users=[99])
    with pytest.raises(ConfigError, match="unknown protocol"):
        evaluate(m, ds, protocols="roc")
    with pytest.raises(ConfigError):
        sampled_ranking(0)
    with pytest.raises(DataError, match="cannot draw"):
        evaluate(m, ds, protocols="sampled")  # 100 negatives from a 6-item catalogue

    class Broken(FixedScores):
        def score_batch(self, histories, users=None):
            return np.full((len(histories), ds.n_items), np.nan)

    with pytest.raises(ModelError, match="NaN"):
        evaluate(Broken(np.zeros(1), ds.fingerprint()), ds, protocols="full")


def test_parse_protocols():
    assert [p.name for p in parse_protocols("both", n_negatives=50)] == ["full", "sampled-50"]
    assert parse_protocols(full_ranking())[0].kind == "full"
