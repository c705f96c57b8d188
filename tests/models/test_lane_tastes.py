"""LANE's additive taste channel: a taste raises exactly the items that have its facts."""

import numpy as np
import pandas as pd
import pytest

from whyrec.data import RawData, build_dataset
from whyrec.data.facts import ItemFacts, fact_baseline, fact_lift
from whyrec.errors import ModelError
from whyrec.models import load_model
from whyrec.models.lane import Lane

GENRES = ["Comedy", "Horror", "Western"]


@pytest.fixture(scope="module")
def data():
    """Three groups of users, each watching mostly one genre; titles carry years."""
    rng = np.random.default_rng(0)
    items = pd.DataFrame(
        {
            "item_id": [f"i{k}" for k in range(30)],
            "title": [f"Film {k} ({1950 + 10 * (k % 5)})" for k in range(30)],
            "genres": [GENRES[k // 10] for k in range(30)],
        }
    )
    rows = []
    for u in range(45):
        g = u % 3
        for t, k in enumerate(rng.permutation(10)[:8]):
            rows.append((f"u{u}", f"i{g * 10 + k}", t))
        rows.append((f"u{u}", f"i{((g + 1) % 3) * 10 + int(rng.integers(10))}", 8))
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    return build_dataset(RawData(inter, items), name="tiny-tastes")


def _texts(ds):
    """Each user's first taste names their group's genre; the others name nothing."""
    out = []
    for u in range(ds.n_users):
        g = int(ds.users.loc[u, "user_id"][1:]) % 3
        out.append([f"Enjoys {GENRES[g]} films", "Likes a good story", "Watches in the evening"])
    return out


@pytest.fixture(scope="module")
def model(data):
    rng = np.random.default_rng(1)
    vecs = rng.normal(size=(data.n_users, 3, 8)).astype(np.float32)
    m = Lane(dim=16, max_len=10, epochs=40, patience=40, item_table="id", batch_size=32, seed=0)
    m.set_preferences(vecs, _texts(data), ["fallback"] * data.n_users)
    return m.fit(data, progress=False)


def test_item_facts_and_parsing(data):
    facts = ItemFacts.from_dataset(data)
    assert "genre:Comedy" in facts.names and "decade:1950s" in facts.names
    assert set(facts.of_item(0)) == {"genre:Comedy", "decade:1950s"}
    assert facts.parse("Loves comedies and horror from the '50s") == [
        "genre:Comedy",
        "genre:Horror",
        "decade:1950s",
    ]
    assert facts.parse("Enjoys westerns, e.g. “Comedy Club (1990)”") == ["genre:Western"]
    assert facts.parse("Themes of love, loss and redemption") == []
    assert facts.parse("90 films") == []  # a number is not a decade


def test_the_channel_is_additive_and_has_facts(model):
    assert model.config.pref_channel == "additive" and model.has_taste_facts
    assert model.user_preference_vectors(0).shape == (3, 8 + model.facts.n_facts)
    w = model.preference_weights(0)
    assert np.isclose(w.sum(), 1.0, atol=1e-5) and (w >= 0).all()


def test_removing_a_taste_lowers_exactly_the_items_with_its_facts(data, model):
    """For every user: removing the genre taste lowers every item of that genre (by the
    same amount) and leaves every other item's score unchanged."""
    genre_of = data.items["genres"].tolist()
    for u in range(0, data.n_users, 4):
        g = int(data.users.loc[u, "user_id"][1:]) % 3
        hist = model.histories[u]
        pv = model.user_preference_vectors(u)
        with model.using_preferences(pv):
            full = model.score(history=hist)
        with model.using_preferences(np.delete(pv, 0, axis=0)):
            without = model.score(history=hist)
        drop = full - without
        mine = np.array([genre_of[i] == GENRES[g] for i in range(data.n_items)])
        assert (drop[mine] > 0).all()
        assert np.allclose(drop[~mine], 0.0, atol=1e-5)
        # tastes that name no fact move nothing at all
        with model.using_preferences(pv[[0]]):
            only_first = model.score(history=hist)
        assert np.allclose(only_first, full, atol=1e-5)


def test_attribution_of_a_taste_is_its_additive_term(data, model):
    u = 3
    item = int(model.recommend(u, k=1).items[0])
    att = model.attribution(item, u)
    genre = data.items["genres"].iloc[item]
    g = int(data.users.loc[u, "user_id"][1:]) % 3
    drops = {p["index"]: p["score_drop"] for p in att.preferences}
    assert drops[1] == pytest.approx(0.0, abs=1e-5) and drops[2] == pytest.approx(0.0, abs=1e-5)
    if genre == GENRES[g]:
        assert drops[0] > 0
    else:
        assert drops[0] == pytest.approx(0.0, abs=1e-5)


def test_the_model_learns_how_much_a_taste_matters(data, model):
    """Strengths start at softplus(-3) ≈ 0.049 per taste; training raises the boost a
    user's own genre taste gives their genre's items well above that."""
    boosts = []
    for u in range(data.n_users):
        hist = model.histories[u]
        pv = model.user_preference_vectors(u)
        with model.using_preferences(pv):
            full = model.score(history=hist)
        with model.using_preferences(pv[1:]):
            bare = model.score(history=hist)
        boosts.append(float((full - bare).max()))
    assert min(boosts) > 0  # a strength is never negative: the taste only ever helps
    assert np.median(boosts) > 2 * np.log1p(np.exp(-3.0))


def test_save_load_keeps_the_channel_and_new_tastes_need_their_facts(data, model, tmp_path):
    model.save(tmp_path / "lane")
    back = load_model(tmp_path / "lane", data)
    assert back.config.pref_channel == "additive" and back.facts.names == model.facts.names
    np.testing.assert_allclose(
        back.score_batch([model.histories[2]], np.array([2])),
        model.score_batch([model.histories[2]], np.array([2])),
        rtol=1e-5,
        atol=1e-6,
    )
    vecs = np.random.default_rng(3).normal(size=(2, 8)).astype(np.float32)
    with pytest.raises(ModelError, match="preference_inputs"):
        back.recommend(history=[0, 1, 2], preferences=vecs, k=3)
    inputs = back.preference_inputs(["Enjoys horror", "Likes the fifties"], vecs)
    assert inputs.shape == (2, 8 + back.facts.n_facts)
    assert back.preference_inputs(["x", "y"], inputs) is not None  # already full: as is
    r = back.recommend(history=[0, 1, 2], preferences=inputs, k=3)
    assert len(r.items) == 3


def test_an_attention_model_saved_before_the_channel_loads_as_attention(data, tmp_path):
    rng = np.random.default_rng(2)
    m = Lane(dim=16, max_len=10, epochs=1, item_table="id", seed=0, pref_channel="attention")
    m.set_preferences(rng.normal(size=(data.n_users, 3, 8)).astype(np.float32))
    m.fit(data, progress=False).save(tmp_path / "att")
    back = load_model(tmp_path / "att", data)
    assert back.config.pref_channel == "attention" and not back.has_taste_facts


def test_additive_channel_without_taste_texts_is_a_clear_error(data):
    m = Lane(dim=16, epochs=1).set_preferences(np.zeros((data.n_users, 3, 8), np.float32))
    with pytest.raises(ModelError, match="texts"):
        m.fit(data, progress=False)


def test_fact_lift_finds_what_a_user_picks_more_than_most(data):
    facts = ItemFacts.from_dataset(data)
    inter = data.interactions
    base = fact_baseline(facts, inter.loc[inter["split"] == "train", "item_idx"].to_numpy())
    assert np.isclose(base[facts.index("genre:Comedy")], 1 / 3, atol=0.05)
    u = data.user_index("u1")  # group 1: horror
    top = fact_lift(facts, data.user_sequences(("train",))[u], base)
    assert top[0][0] == "genre:Horror" and top[0][1] > 2
    assert all(lift > 1 for _, lift, _ in top)
