from pathlib import Path

import pytest

from whyrec.data import build_dataset
from whyrec.data.loaders.movielens import load_movielens_1m, load_movielens_100k
from whyrec.errors import DataError


def _flags(*on: int) -> str:
    return "|".join("1" if i in on else "0" for i in range(19))


def write_ml100k(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    rows = [
        (1, 10, 5, 100), (1, 20, 3, 200), (1, 30, 4, 300), (1, 40, 2, 300),
        (2, 10, 4, 50), (2, 30, 1, 60), (2, 20, 5, 70),
        (3, 40, 3, 10),
    ]  # fmt: skip
    (d / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows))
    items = [
        (10, "Toy Story (1995)", _flags(3, 4, 5)),
        (20, "Amélie (2001)", _flags(5, 14)),  # non-ASCII: latin-1 on disk
        (30, "Heat (1995)", _flags(1, 6, 16)),
        (40, "Fargo (1996)", _flags(6, 8, 16)),
    ]
    text = "".join(f"{i}|{t}|01-Jan-1995||http://example.invalid/|{f}\n" for i, t, f in items)
    (d / "u.item").write_bytes(text.encode("latin-1"))
    return d


def test_ml100k_reads_ratings_titles_and_genres(tmp_path):
    raw = load_movielens_100k(write_ml100k(tmp_path / "ml"))
    assert len(raw.interactions) == 8
    assert raw.interactions["rating"].tolist()[:2] == [5.0, 3.0]
    items = raw.items.set_index("item_id")
    assert items.loc["20", "title"] == "Amélie (2001)"
    assert items.loc["10", "genres"] == "Animation, Children's, Comedy"
    assert set(raw.source["files"]) == {"ratings", "items"}
    assert len(raw.source["files"]["ratings"]["sha256"]) == 64


def test_ml100k_through_build_gives_loo_split_with_tie_break(tmp_path):
    ds = build_dataset(load_movielens_100k(write_ml100k(tmp_path / "ml")), name="t")
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (3, 4, 8)
    seqs = ds.user_sequences()
    # user 1 rated items 30 and 40 at the same second: source order decides
    titles = ds.titles
    assert [titles[i] for i in seqs[ds.user_index(1)]] == [
        "Toy Story (1995)", "Amélie (2001)", "Heat (1995)", "Fargo (1996)",
    ]  # fmt: skip
    split = ds.interactions.groupby("split", observed=True).size().to_dict()
    # users 1 and 2 have >= 3 interactions, user 3 only one: train-only
    assert split == {"train": 4, "valid": 2, "test": 2}
    assert ds.manifest["split"]["users_train_only"] == 1


def test_ml100k_wrong_encoding_names_file_and_line(tmp_path):
    d = write_ml100k(tmp_path / "ml")
    with pytest.raises(DataError, match=r"u\.item:2: cannot decode .* as utf-8"):
        load_movielens_100k(d, encoding="utf-8")


def test_ml100k_bad_rating_names_line_and_field(tmp_path):
    d = write_ml100k(tmp_path / "ml")
    lines = (d / "u.data").read_text().splitlines()
    lines[2] = "1\t30\tfour\t300"
    (d / "u.data").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"u\.data:3: field 'rating': expected an integer"):
        load_movielens_100k(d)


def test_ml100k_short_line_and_missing_and_empty(tmp_path):
    d = write_ml100k(tmp_path / "ml")
    (d / "u.data").write_text("1\t10\t5\n")
    with pytest.raises(DataError, match=r"u\.data:1: expected 4 '\\t'-separated fields"):
        load_movielens_100k(d)
    (d / "u.data").write_text("")
    with pytest.raises(DataError, match="u.data is empty"):
        load_movielens_100k(d)
    with pytest.raises(DataError, match="not found"):
        load_movielens_100k(tmp_path / "nope")


def test_ml1m_reads_double_colon_files(tmp_path):
    d = tmp_path / "ml-1m"
    d.mkdir()
    (d / "ratings.dat").write_text(
        "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n"
    )
    (d / "movies.dat").write_bytes(
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
        "7::Sabrina (1995)::Comedy|Romance\n".encode("latin-1")
    )
    raw = load_movielens_1m(d)
    assert raw.interactions["item_id"].tolist() == ["1193", "661", "1193"]
    items = raw.items.set_index("item_id")
    assert items.loc["661", "genres"] == "Animation, Children's, Musical"
    ds = build_dataset(raw, name="ml1m", split="none")
    assert ds.n_items == 2  # the unrated movie is not part of the dataset
