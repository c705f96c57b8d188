"""The synthetic data generator: sizes, shape, sequential structure, determinism, CLI.

Each shape test also runs the generator with the property switched off (flat
popularity, no activity spread, no tastes or successors) and checks that the same
statistic then fails, so the thresholds tell the property apart from its absence.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from whyrec.cli import app
from whyrec.data import load_dataset, prepare_dataset
from whyrec.data import synth as synth_mod
from whyrec.data.synth import (
    CATEGORIES,
    VOCABULARY,
    SynthConfig,
    load_synthetic,
    synthesize,
    user_lengths,
)
from whyrec.errors import ConfigError, DataError, WhyrecError

U, M, K = 3000, 2000, 150_000


def make(tmp_path: Path, config: SynthConfig | None = None, seed: int = 0, **sizes: int):
    size = {"users": U, "items": M, "interactions": K, **sizes}
    out = tmp_path / f"synth-{seed}-{abs(hash(config)) % 10**8}-{size['users']}"
    result = synthesize(
        size["users"], size["items"], size["interactions"], seed=seed, out=out, config=config
    )
    return pd.read_parquet(result.interactions), pd.read_parquet(result.items)


@pytest.fixture(scope="module")
def default_data(tmp_path_factory):
    return make(tmp_path_factory.mktemp("synth"))


# ---------------------------------------------------------------- statistics


def zipf_slope(inter: pd.DataFrame, n_items: int) -> float:
    """Slope of log(count) against log(rank) over ranks 10 .. n_items/4."""
    counts = inter["item_id"].value_counts().reindex(range(1, n_items + 1), fill_value=0)
    c = np.sort(counts.to_numpy())[::-1]
    ranks = np.arange(1, n_items + 1)
    sl = slice(9, n_items // 4)
    return float(np.polyfit(np.log(ranks[sl]), np.log(np.maximum(c[sl], 1)), 1)[0])


def top_share(counts: np.ndarray, fraction: float) -> float:
    c = np.sort(counts)[::-1]
    return float(c[: max(1, int(len(c) * fraction))].sum() / c.sum())


def consecutive_pairs(inter: pd.DataFrame, shuffle_seed: int | None = None):
    """(previous item, next item) of each user's consecutive interactions; with a seed,
    of the same items in a random order per user (the baseline without sequence)."""
    users = inter["user_id"].to_numpy()
    items = inter["item_id"].to_numpy()
    if shuffle_seed is not None:
        rng = np.random.default_rng(shuffle_seed)
        items = items[np.lexsort((rng.random(len(items)), users))]
    same = users[1:] == users[:-1]
    return items[:-1][same], items[1:][same]


def same_category_share(a: np.ndarray, b: np.ndarray, items: pd.DataFrame) -> float:
    cats = dict(zip(items["item_id"], items["genres"].str.split(", ").map(set), strict=True))
    return float(np.mean([bool(cats[x] & cats[y]) for x, y in zip(a, b, strict=True)]))


def top_successor_share(a: np.ndarray, b: np.ndarray) -> float:
    """Share of transitions that go to the previous item's most frequent next item."""
    counts = pd.DataFrame({"a": a, "b": b}).value_counts()  # sorted, most frequent first
    best = counts.reset_index().drop_duplicates("a")
    return float(best["count"].sum() / len(a))


def sequence_stats(inter: pd.DataFrame, items: pd.DataFrame) -> dict[str, float]:
    a, b = consecutive_pairs(inter)
    sa, sb = consecutive_pairs(inter, shuffle_seed=1)
    return {
        "category_lift": same_category_share(a, b, items) / same_category_share(sa, sb, items),
        "successor_lift": top_successor_share(a, b) / top_successor_share(sa, sb),
    }


# ------------------------------------------------------------------- the files


def test_sizes_are_exact_and_rows_valid(default_data):
    inter, items = default_data
    assert len(inter) == K
    assert inter["user_id"].nunique() == U and set(inter["user_id"]) == set(range(1, U + 1))
    assert len(items) == M and items["item_id"].tolist() == list(range(1, M + 1))
    assert inter["item_id"].between(1, M).all()
    assert not inter.duplicated(["user_id", "item_id"]).any()  # one rating per user and item
    assert inter["rating"].between(1, 5).all() and inter["rating"].nunique() == 5
    # grouped by user, each user's times strictly increasing and within 2005..2100
    assert (np.diff(inter["user_id"].to_numpy()) >= 0).all()
    same = inter["user_id"].to_numpy()[1:] == inter["user_id"].to_numpy()[:-1]
    assert (np.diff(inter["timestamp"].to_numpy())[same] > 0).all()
    assert inter["timestamp"].between(1_104_537_600, 4_102_444_800).all()
    assert (items["title"].str.len() > 0).all() and (items["genres"].str.len() > 0).all()
    assert set(", ".join(items["genres"]).split(", ")) <= set(CATEGORIES)


def test_popularity_is_zipf_like(default_data, tmp_path):
    inter, _ = default_data
    counts = inter["item_id"].value_counts().to_numpy()
    slope = zipf_slope(inter, M)
    assert -1.3 <= slope <= -0.5, slope
    assert top_share(counts, 0.01) >= 0.08  # top 1% of items
    flat, _ = make(tmp_path, SynthConfig(popularity_exponent=0.0))
    assert zipf_slope(flat, M) > -0.3
    assert top_share(flat["item_id"].value_counts().to_numpy(), 0.01) < 0.04


def test_user_activity_has_a_long_tail(default_data, tmp_path):
    inter, _ = default_data
    lengths = inter.groupby("user_id").size().to_numpy()
    assert lengths.min() >= 5
    assert lengths.max() >= 10 * np.median(lengths)
    assert top_share(lengths, 0.1) >= 0.25  # top 10% of users
    even, _ = make(tmp_path, SynthConfig(activity_sigma=0.0))
    even_lengths = even.groupby("user_id").size().to_numpy()
    assert top_share(even_lengths, 0.1) < 0.15


def test_user_lengths_sum_exactly_and_respect_the_cap():
    rng = np.random.default_rng(3)
    config = SynthConfig(activity_sigma=2.5)
    lengths = user_lengths(1000, 200_000, 400, config, rng)
    assert lengths.sum() == 200_000
    assert lengths.min() >= 5 and lengths.max() == 400  # the heavy tail hits the cap
    assert (user_lengths(10, 50, 400, config, rng) == 5).all()


def test_order_carries_taste_and_successor_structure(default_data, tmp_path):
    inter, items = default_data
    stats = sequence_stats(inter, items)
    # consecutive items share a category twice as often as in a shuffled order, and an
    # item's most frequent follower follows it several times more often
    assert stats["category_lift"] >= 1.5, stats
    assert stats["successor_lift"] >= 3.0, stats
    flat = sequence_stats(*make(tmp_path, SynthConfig(stickiness=0.0, successor_prob=0.0)))
    assert flat["category_lift"] < 1.15 and flat["successor_lift"] < 1.5, flat
    no_successors = sequence_stats(*make(tmp_path, SynthConfig(successor_prob=0.0)))
    assert no_successors["category_lift"] >= 1.3 and no_successors["successor_lift"] < 2.0


def test_title_words_come_from_the_item_categories(default_data):
    _, items = default_data
    glue = {"The", "of", "the", "and"}
    for title, genres in zip(items["title"], items["genres"], strict=True):
        m = re.fullmatch(r"(.+) \((\d{4})\)", title)
        assert m and 1950 <= int(m.group(2)) < 2020, title
        allowed = set()
        for cat in genres.split(", "):
            allowed.update(VOCABULARY[cat][0] + VOCABULARY[cat][1])
        assert set(m.group(1).split()) - glue <= allowed, (title, genres)
    assert items["title"].nunique() >= 0.95 * len(items)


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    paths = []
    for where, seed in (("a", 7), ("b", 7), ("c", 8)):
        result = synthesize(500, 300, 20_000, seed=seed, out=tmp_path / where / "synth")
        paths.append(result)
    for attr in ("interactions", "items", "info"):
        assert getattr(paths[0], attr).read_bytes() == getattr(paths[1], attr).read_bytes()
        assert getattr(paths[0], attr).read_bytes() != getattr(paths[2], attr).read_bytes()
    a, c = (pd.read_parquet(p.interactions) for p in (paths[0], paths[2]))
    assert (a["item_id"].to_numpy() != c["item_id"].to_numpy()).mean() > 0.9


def test_many_chunks_give_the_same_guarantees(tmp_path, monkeypatch):
    # a tiny bitset budget forces one chunk per 32 users: 32 chunks here
    monkeypatch.setattr(synth_mod, "BITSET_BYTES", 32 * ((300 + 7) // 8))
    inter, _ = make(tmp_path, users=1000, items=300, interactions=40_000)
    assert len(inter) == 40_000 and inter["user_id"].nunique() == 1000
    assert not inter.duplicated(["user_id", "item_id"]).any()
    assert inter.groupby("user_id").size().min() >= 5


def test_heavy_users_on_a_small_catalogue_finish(tmp_path):
    # 100 users each needing half the catalogue: most draws repeat an item, so the
    # generator must widen to popularity and then uniform draws to finish
    inter, _ = make(tmp_path, users=100, items=60, interactions=3000)
    assert (inter.groupby("user_id").size() == 30).all()
    assert not inter.duplicated(["user_id", "item_id"]).any()


def test_bad_arguments_say_what_was_expected(tmp_path):
    with pytest.raises(ConfigError, match=r"--interactions 100 is outside 5,000\.\.100,000"):
        synthesize(1000, 200, 100, out=tmp_path / "x")
    with pytest.raises(ConfigError, match="--items 3 is too small"):
        synthesize(10, 3, 50, out=tmp_path / "x")
    with pytest.raises(ConfigError, match="--users must be a positive integer"):
        synthesize(0, 100, 50, out=tmp_path / "x")
    with pytest.raises(ConfigError, match="--seed must be a non-negative integer"):
        synthesize(10, 100, 50, seed=-1, out=tmp_path / "x")
    with pytest.raises(ConfigError, match=r"stickiness=1\.5: expected in \[0, 1\]"):
        synthesize(10, 100, 50, out=tmp_path / "x", config=SynthConfig(stickiness=1.5))
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not an earlier synthetic directory") as err:
        synthesize(10, 100, 50, out=foreign)
    assert str(foreign) in str(err.value)
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert not (tmp_path / "x").exists()
    assert issubclass(ConfigError, WhyrecError)


def test_python_path_prepares_a_dataset(tmp_path):
    result = synthesize(200, 100, 4000, seed=1, out=tmp_path / "s")
    ds = prepare_dataset(load_synthetic(result.directory), out=tmp_path / "ds", name="s")
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (200, 100, 4000)
    assert ds.text_fields == ["genres"] and ds.manifest["has_ratings"]
    with pytest.raises(DataError, match="no interactions.parquet here"):
        load_synthetic(tmp_path)


def test_cli_synth_prepare_load(tmp_path, monkeypatch):
    runner = CliRunner()
    out = tmp_path / "toy"
    res = runner.invoke(
        app,
        ["data", "synth", "--users", "300", "--items", "150", "--interactions", "9000",
         "--seed", "3", "--out", str(out)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    command = res.output.split("prepare it with: ", 1)[1].strip()
    args = shlex.split(command)
    assert args[:3] == ["whyrec", "data", "prepare"]
    res = runner.invoke(app, args[1:])
    assert res.exit_code == 0, res.output
    ds = load_dataset(tmp_path / "toy-dataset")
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (300, 150, 9000)
    assert ds.name == "toy" and ds.text_fields == ["genres"]
    assert (ds.interactions["split"] == "test").sum() == 300
    assert ds.items["title"].str.match(r".+ \(\d{4}\)$").all()
    info = json.loads((out / "synth.json").read_text())
    assert info["seed"] == 3 and info["interactions"] == 9000
    assert info["prepare"].startswith("whyrec data prepare toy/interactions.parquet")
    # a bad size fails before anything is written: the earlier output stays
    res = runner.invoke(app, ["data", "synth", "--users", "300", "--items", "150",
                              "--interactions", "100", "--out", str(out)])  # fmt: skip
    assert res.exit_code != 0
    assert (out / "synth.json").is_file()


@pytest.mark.slow
def test_sasrec_learns_what_popularity_cannot(tmp_path, monkeypatch):
    """2k users x 500 items x 60k interactions, a short SASRec run against popularity."""
    monkeypatch.setenv("WHYREC_THREADS", os.environ.get("WHYREC_THREADS", "1"))
    from whyrec.evaluate.ranking import evaluate
    from whyrec.models import create_model

    result = synthesize(2000, 500, 60_000, seed=0, out=tmp_path / "s")
    ds = prepare_dataset(load_synthetic(result.directory), out=tmp_path / "ds", name="synth")
    pop = create_model("popularity").fit(ds, progress=False)
    sasrec = create_model(
        "sasrec", dim=64, max_len=50, batch_size=64, lr=0.004, epochs=8, patience=8
    ).fit(ds, progress=False)
    ndcg = {
        m.name: evaluate(m, ds, protocols="full").results[0].metrics["NDCG@10"]
        for m in (pop, sasrec)
    }
    # measured: 0.317 vs 0.115 (2.8x); the issue asks for at least 2x
    assert ndcg["sasrec"] >= 2.0 * ndcg["popularity"], ndcg
    assert ndcg["sasrec"] - ndcg["popularity"] >= 0.1, ndcg
