"""LANE's leak-free preference rule: a training position sees the user's preferences only
when they were written from interactions before its target."""

import numpy as np
import pandas as pd
import pytest
import torch

from whyrec.data import RawData, build_dataset
from whyrec.errors import ConfigError, ModelError
from whyrec.explain.preferences import PreferenceExtractor
from whyrec.models import load_model
from whyrec.models.lane import (
    Lane,
    LaneTask,
    preference_cut_points,
    window_target_positions,
)
from whyrec.models.sequential import training_windows


@pytest.fixture(scope="module")
def data():
    """Users with 6 to 30 interactions, so windows of 8 cut long sequences in pieces."""
    rng = np.random.default_rng(3)
    rows = []
    for u in range(24):
        n = 6 + (u * 5) % 25
        for t, k in enumerate(rng.permutation(40)[:n]):
            rows.append((f"u{u}", f"i{k}", t))
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    items = pd.DataFrame(
        {
            "item_id": [f"i{k}" for k in range(40)],
            "title": [f"Film {k} ({1950 + k})" for k in range(40)],
            "genres": [["Drama", "Comedy", "Horror", "Western"][k % 4] for k in range(40)],
        }
    )
    return build_dataset(RawData(inter, items), name="tiny-timeaware")


def test_cut_points_follow_the_rule():
    n = np.array([0, 1, 2, 3, 5, 12, 13, 40])
    cut = preference_cut_points(n, holdout=10, min_history=3)
    # n - holdout, but keep at least min_history before the cut (and at least one target
    # after it when the user has two or more interactions)
    assert cut.tolist() == [0, 1, 1, 2, 3, 3, 3, 30]
    assert (cut <= n).all()
    assert ((n - cut) >= np.minimum(n - 1, 1)).all()
    with pytest.raises(ConfigError):
        preference_cut_points(n, holdout=0)


def test_target_positions_line_up_with_training_windows(data):
    seqs = data.user_sequences(("train",))
    _, targets, users = training_windows(seqs, 8)
    pos = window_target_positions(seqs, 8)
    assert pos.shape == targets.shape
    for r in range(len(pos)):
        live = pos[r] >= 0
        assert ((targets[r] != 0) == live).all()
        assert (np.asarray(seqs[users[r]])[pos[r][live]] + 1 == targets[r][live]).all()


def _prefs(ds, scale=1.0, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(ds.n_users, 3, 8)) * scale).astype(np.float32)


def test_only_positions_after_the_cut_see_preferences(data):
    seqs = data.user_sequences(("train",))
    cuts = preference_cut_points([len(s) for s in seqs], holdout=4)
    m = Lane(dim=16, max_len=8, epochs=1, item_table="id", seed=0, pref_channel="attention")
    m.set_preferences(_prefs(data), cuts=cuts)
    m.fit(data, progress=False)
    task = LaneTask(m.module, data, m.config, cuts)
    pos = window_target_positions(seqs, 8)
    users = task.users.numpy()
    gate = task.gate.numpy()
    live = pos >= 0
    # the rule, position by position: seen ⇔ the target comes at or after the cut
    assert (gate[live] == (pos >= cuts[users][:, None])[live]).all()
    # every user contributes exactly min(holdout, ...) = n - cut targets after the cut
    per_user = np.bincount(users, weights=(gate & live).sum(1), minlength=data.n_users)
    assert per_user.tolist() == [len(s) - c for s, c in zip(seqs, cuts, strict=True)]
    assert m.training["preference_positions"] == int((gate & live).sum())

    # and the module honours it: outputs before the cut do not depend on the preferences
    m.module.eval()
    batch = task.make_batch(torch.arange(len(task.inputs)), 8)
    x, _, u, g = batch
    table = m.module.item_table()
    with torch.no_grad():
        a = m.module.query(x, u, table, gate=g)
        m.module.user_prefs.mul_(-3.0)  # very different preferences
        b = m.module.query(x, u, table, gate=g)
    same = torch.isclose(a, b, atol=1e-5).all(-1)
    real = x != 0
    assert bool(same[~g & real].all())
    assert not bool(same[g & real].any())


def test_a_leak_is_visible_in_what_the_extractor_reads(data):
    """Grounded preferences name titles from the history they were written from: with the
    cut, no user's preferences mention an item at or after the cut (a leak would)."""
    seqs = data.user_sequences(("train",))
    cuts = preference_cut_points([len(s) for s in seqs], holdout=4)
    ex = PreferenceExtractor(None, m=3, window=50)
    leaky = ex.extract_dataset(data, progress=False, ask=[])
    clean = ex.extract_dataset(data, progress=False, ask=[], cuts=cuts)

    def after_cut_named(prefs):
        hits = 0
        for u, p in prefs.items():
            text = " ".join(p.preferences)
            hits += any(data.titles[i] in text for i in seqs[u][int(cuts[u]) :])
        return hits

    assert after_cut_named(leaky) > 0  # the whole sequence: future targets are named
    assert after_cut_named(clean) == 0


def test_cuts_are_checked_saved_and_loaded(data, tmp_path):
    seqs = data.user_sequences(("train",))
    cuts = preference_cut_points([len(s) for s in seqs], holdout=4)
    with pytest.raises(ModelError, match="one per user"):
        Lane().set_preferences(_prefs(data), cuts=cuts[:-1])
    too_long = cuts.copy()
    too_long[2] = len(seqs[2]) + 1
    with pytest.raises(ModelError, match="preferences written from"):
        Lane(dim=16, max_len=8, epochs=1, pref_channel="attention").set_preferences(
            _prefs(data), cuts=too_long
        ).fit(data, progress=False)
    m = Lane(dim=16, max_len=8, epochs=1, item_table="id", seed=0, pref_channel="attention")
    m.set_preferences(_prefs(data), cuts=cuts).fit(data, progress=False)
    m.save(tmp_path / "run")
    again = load_model(tmp_path / "run")
    assert again.preference_cuts.tolist() == cuts.tolist()
    np.testing.assert_allclose(again.recommend(0, k=5).scores, m.recommend(0, k=5).scores)


def test_store_keeps_each_cut_point_and_migrates_old_stores(tmp_path, data):
    import json
    import sqlite3

    from whyrec.explain.preferences import PreferenceStore

    seqs = data.user_sequences(("train",))
    ex = PreferenceExtractor(None, m=3, window=50)
    whole = ex.extract_dataset(data, [0], progress=False, ask=[])[0]
    cut = ex.extract_dataset(data, [0], progress=False, ask=[], cuts=[3] * data.n_users)[0]
    assert whole.history_hash != cut.history_hash and len(seqs[0]) > 3
    store = PreferenceStore(tmp_path / "p.sqlite")
    store.put(whole)
    store.put(cut)
    assert store.get(whole.user, whole.history_hash).preferences == whole.preferences
    assert store.get(cut.user, cut.history_hash).preferences == cut.preferences
    assert store.get(cut.user).history_hash == cut.history_hash  # the latest
    assert len(store) == 1
    store.close()

    old = tmp_path / "old.sqlite"  # the layout before cut points: one row per user
    con = sqlite3.connect(old)
    con.execute(
        "CREATE TABLE preferences (user TEXT PRIMARY KEY, record TEXT NOT NULL,"
        " history_hash TEXT NOT NULL, model TEXT NOT NULL, prompt_version TEXT NOT NULL)"
    )
    from dataclasses import asdict

    con.execute(
        "INSERT INTO preferences VALUES (?, ?, ?, ?, ?)",
        (whole.user, json.dumps(asdict(whole)), whole.history_hash, "none", "v"),
    )
    con.commit()
    con.close()
    migrated = PreferenceStore(old)
    assert migrated.get(whole.user, whole.history_hash).preferences == whole.preferences
    migrated.close()
