"""LANE: training on tiny data, weights, and attribution checked by independent paths."""

import numpy as np
import pytest

from whyrec.data import RawData, build_dataset
from whyrec.errors import ModelError
from whyrec.models import load_model
from whyrec.models.lane import Lane


@pytest.fixture(scope="module")
def data():
    import pandas as pd

    rng = np.random.default_rng(0)
    rows = []
    for u in range(36):
        g = u % 3
        for t, k in enumerate(rng.permutation(10)[:9]):
            rows.append((f"u{u}", f"i{g * 10 + k}", t))
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    items = pd.DataFrame(
        {"item_id": [f"i{k}" for k in range(30)], "title": [f"Film {k}" for k in range(30)]}
    )
    ds = build_dataset(RawData(inter, items), name="tiny-lane")
    # preference vectors that carry the user's group: the alignment can use them
    prefs = rng.normal(scale=0.1, size=(ds.n_users, 4, 16)).astype(np.float32)
    for u in range(ds.n_users):
        g = int(ds.users.loc[u, "user_id"][1:]) % 3
        prefs[u, 0, g] += 3.0
    return ds, prefs


@pytest.fixture(scope="module")
def model(data):
    ds, prefs = data
    m = Lane(
        dim=16, max_len=10, epochs=30, patience=30, item_table="id", batch_size=32, seed=1,
        pref_channel="attention",
    )  # fmt: skip
    m.set_preferences(prefs, [[f"pref {j}" for j in range(4)]] * ds.n_users, ["llm"] * ds.n_users)
    return m.fit(ds, progress=False)


def test_lane_learns_the_groups(data, model):
    ds, _ = data
    hits = 0
    for u in range(ds.n_users):
        g = int(ds.users.loc[u, "user_id"][1:]) % 3
        top = model.recommend(u, k=1, exclude_seen=False)
        hits += int(ds.items.loc[top.items[0], "item_id"][1:]) // 10 == g
    assert hits / ds.n_users > 0.8


def test_weights_are_a_distribution_and_identical_prefs_get_equal_weight(model):
    w = model.preference_weights(0)
    assert w.shape == (4,) and np.isclose(w.sum(), 1.0, atol=1e-5) and (w >= 0).all()
    same = np.repeat(model.user_preference_vectors(0)[:1], 4, axis=0)
    w_same = model.preference_weights(history=[0, 1, 2], preferences=same)
    assert np.allclose(w_same, 0.25, atol=1e-5)


def test_preference_attribution_matches_dropping_the_preference(model):
    u = 0
    item = int(model.recommend(u, k=1).items[0])
    att = model.attribution(item, u)
    pv = model.user_preference_vectors(u)
    hist = model.histories[u]
    base = model.recommend(history=hist, preferences=pv, k=model.n_items - len(np.unique(hist)))
    assert att.rank == 1
    assert np.isclose(att.score, base.scores[0], atol=1e-4)
    for p in att.preferences:
        # independent path: score the history with the m-1 remaining preference vectors
        fewer = np.delete(pv, p["index"], axis=0)
        with model.using_preferences(fewer):
            scores = model.score(history=hist)
        assert np.isclose(att.score - scores[item], p["score_drop"], atol=1e-4)
        s = scores.astype(float).copy()
        s[np.unique(hist)] = -np.inf
        assert p["rank_without"] == int((s > s[item]).sum()) + 1


def test_history_attribution_matches_removing_the_item(model):
    u = 3
    item = int(model.recommend(u, k=1).items[0])
    att = model.attribution(item, u, top_history=3)
    pv = model.user_preference_vectors(u)
    hist = np.asarray(model.histories[u])
    drops = att.history
    assert len(drops) == 3 and drops[0]["score_drop"] >= drops[-1]["score_drop"]
    for h in drops:
        shorter = np.delete(hist, h["position"])
        with model.using_preferences(pv):
            s = model.score(history=shorter)
        assert np.isclose(att.score - s[item], h["score_drop"], atol=1e-4)


def test_save_load_and_new_user_needs_preferences(model, data, tmp_path):
    ds, prefs = data
    model.save(tmp_path / "lane")
    back = load_model(tmp_path / "lane", ds)
    assert isinstance(back, Lane)
    assert back.preference_texts[0] == ["pref 0", "pref 1", "pref 2", "pref 3"]
    a = model.recommend(2, k=5)
    b = back.recommend(2, k=5)
    assert a.items.tolist() == b.items.tolist()
    with pytest.raises(ModelError, match="preferences"):
        back.recommend(history=[0, 1, 2], k=3)
    r = back.recommend(history=[0, 1, 2], preferences=prefs[0], k=3)
    assert len(r.items) == 3 and not set(r.items) & {0, 1, 2}


def test_fit_without_preferences_is_a_clear_error(data):
    ds, _ = data
    with pytest.raises(ModelError, match="set_preferences"):
        Lane(dim=16, epochs=1).fit(ds, progress=False)
    with pytest.raises(ModelError, match="cover 2 users"):
        Lane(dim=16, epochs=1).set_preferences(np.zeros((2, 3, 8))).fit(ds, progress=False)


def test_gru4rec_backbone_trains(data):
    ds, prefs = data
    m = Lane(
        backbone="gru4rec", dim=16, max_len=10, epochs=2, item_table="id", seed=0,
        pref_channel="attention",
    )  # fmt: skip
    m.set_preferences(prefs).fit(ds, progress=False)
    assert m.preference_weights(0).shape == (4,)


def test_gated_alignment_starts_as_the_backbone_and_learns_to_mix(data, model):
    import torch

    from whyrec.models.lane import PreferenceAlignment

    torch.manual_seed(0)
    states, prefs = torch.randn(2, 5, 16), torch.randn(2, 3, 8)
    block = PreferenceAlignment(16, 8, 4, 0.0)
    assert torch.equal(block(states, prefs)[0], states)  # identity at initialisation
    ungated = PreferenceAlignment(16, 8, 4, 0.0, gated=False)
    assert not torch.allclose(ungated(states, prefs)[0], states)
    # the trained model's gate moved off zero: its preferences change the scores
    assert float(model.module.align.mix.detach()) != 0.0
    ds, _ = data
    pv = model.user_preference_vectors(0)
    with model.using_preferences(pv):
        own = model.score(history=model.histories[0])
    with model.using_preferences(np.roll(pv, 1, axis=-1)):
        other = model.score(history=model.histories[0])
    assert not np.allclose(own, other)


def test_model_saved_before_the_gate_loads_as_the_ungated_block():
    import torch

    from whyrec.models.lane import PreferenceAlignment

    torch.manual_seed(1)
    old = PreferenceAlignment(16, 8, 4, 0.0, gated=False).eval()
    state = {k: v for k, v in old.state_dict().items() if k != "mix"}  # as saved before
    new = PreferenceAlignment(16, 8, 4, 0.0).eval()
    new.load_state_dict(state)
    states, prefs = torch.randn(2, 5, 16), torch.randn(2, 3, 8)
    assert float(new.mix) == 1.0
    assert torch.allclose(new(states, prefs)[0], old(states, prefs)[0])


def test_a_saved_model_from_before_the_gate_says_it_is_ungated(model, data, tmp_path):
    import json

    import torch

    ds, _ = data
    model.save(tmp_path / "old")
    # as written before pref_gate existed: no config field, no "align.mix" weight
    manifest = json.loads((tmp_path / "old" / "manifest.json").read_text())
    manifest["config"].pop("pref_gate")
    (tmp_path / "old" / "manifest.json").write_text(json.dumps(manifest))
    (state_file,) = [f for f in (tmp_path / "old").glob("*.pt")]
    state = torch.load(state_file, weights_only=True)
    state.pop("align.mix")
    torch.save(state, state_file)
    old = load_model(tmp_path / "old", ds)
    assert old.config.pref_gate is False and float(old.module.align.mix.detach()) == 1.0
