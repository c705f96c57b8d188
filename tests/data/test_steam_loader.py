"""load_steam on small files written like Kang & McAuley's Steam dumps (Python repr lines)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from whyrec.data.build import build_dataset
from whyrec.data.loaders.steam import load_steam
from whyrec.errors import DataError


def write_lines(path: Path, lines: list[str], *, encoding: str = "utf-8") -> Path:
    data = ("\n".join(lines) + "\n").encode(encoding)
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def review(user: str, product: str, date: str, **extra: Any) -> dict[str, Any]:
    return {
        "username": user,
        "hours": 0.1,
        "products": 41,
        "product_id": product,
        "page_order": 0,
        "date": date,
        "text": f"{user} on {product}: it's fine",
        "early_access": False,
        "page": 1,
        **extra,
    }


REVIEWS = [
    review("Chaos Syren", "725280", "2017-12-17"),
    review(
        "Chaos Syren", "328100", "2017-12-17", hours=12.5
    ),  # same day: file order breaks the tie
    review(
        "Ariëlle",
        "725280",
        "2018-01-04",
        user_id="76561198011965365",
        compensation="Product received for free",
    ),
    review("Ariëlle", "35140", "2018-01-05", found_funny=1, hours=None),
    review("Ariëlle", "35140", "2018-01-05", found_funny=1, hours=None),  # duplicate
    review("Ariëlle", "999999", "2018-01-06"),  # game without app_name
    review("xXx", "35140", "2016-03-01"),
    review("xXx", "123", "2016-03-02"),  # game not in the games file
    review("", "35140", "2016-03-02"),  # anonymous
]

GAMES = [
    {
        "publisher": "Kotoshiro",
        "genres": ["Action", "Casual", "Indie", "Simulation", "Strategy"],
        "app_name": "Lost Summoner Kitty",
        "title": "Lost Summoner Kitty",
        "url": "http://store.steampowered.com/app/761140/Lost_Summoner_Kitty/",
        "release_date": "2018-01-04",
        "tags": ["Strategy", "Action", "Indie", "Casual", "Simulation"],
        "discount_price": 4.49,
        "specs": ["Single-player"],
        "price": 4.99,
        "early_access": False,
        "id": "761140",
        "developer": "Kotoshiro",
        "sentiment": "Mostly Positive",
        "metascore": 80,
    },
    {
        "publisher": "Making Fun, Inc.",
        "genres": ["Free to Play", "Indie", "RPG", "Strategy"],
        "app_name": "Ironbound",
        "tags": ["Free to Play", "Strategy", "Indie", "RPG", "Card Game"],
        "specs": ["Single-player", "Multi-player", "Online Multi-Player"],
        "price": "Free To Play",
        "id": "725280",
        "developer": "Secret Level SRL",
        "sentiment": "Mostly Positive",
    },
    {
        "app_name": "Batman: Arkham Asylum Game of the Year Edition",
        "id": "35140",
        "genres": None,
        "developer": None,
    },
    {"app_name": "Ōkami HD – 大神", "id": "328100", "specs": ["Single-player"]},
    {"title": "Untitled app", "id": "999999", "tags": ["Indie"]},  # no app_name
    {"app_name": "Ironbound (again)", "id": "725280"},  # duplicate id
    {"app_name": "Orphan DLC", "url": "http://store.steampowered.com/app/1/"},  # no id
]


@pytest.fixture
def steam(tmp_path: Path) -> tuple[Path, Path]:
    return (
        write_lines(tmp_path / "steam_reviews.json.gz", [repr(r) for r in REVIEWS]),
        write_lines(tmp_path / "steam_games.json.gz", [repr(g) for g in GAMES]),
    )


def test_fixture_lines_are_python_literals(steam: tuple[Path, Path]) -> None:
    line = gzip.decompress(steam[0].read_bytes()).decode().splitlines()[3]
    assert line.startswith("{'username': 'Ariëlle'") and "None" in line and "False" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_load_steam(steam: tuple[Path, Path]) -> None:
    raw = load_steam(*steam)
    inter, items = raw.interactions, raw.items
    assert list(inter["user_id"]) == [
        "Chaos Syren",
        "Chaos Syren",
        "Ariëlle",
        "Ariëlle",
        "Ariëlle",
        "xXx",
    ]
    assert list(inter["item_id"]) == ["725280", "328100", "725280", "35140", "35140", "35140"]
    assert inter["timestamp"].dtype == np.int64
    assert inter["timestamp"].iloc[0] == 1513468800  # 2017-12-17T00:00:00Z
    assert inter["timestamp"].iloc[0] == inter["timestamp"].iloc[1]
    assert inter["rating"].isna().all()
    assert inter["hours"].iloc[1] == 12.5 and np.isnan(inter["hours"].iloc[3])
    assert inter["review_text"].iloc[0] == "Chaos Syren on 725280: it's fine"
    by_id = items.set_index("item_id")
    assert list(items["item_id"]) == ["725280", "35140", "328100"]
    assert by_id.loc["725280", "title"] == "Ironbound"
    assert by_id.loc["328100", "title"] == "Ōkami HD – 大神"
    assert by_id.loc["725280", "genres"] == "Free to Play, Indie, RPG, Strategy"
    assert by_id.loc["725280", "publisher"] == "Making Fun, Inc."
    assert by_id.loc["35140", "genres"] == "" and by_id.loc["35140", "developer"] == ""
    assert raw.notes == {
        "reviews_without_username_skipped": 1,
        "games_without_id_skipped": 1,
        "games_without_reviews_skipped": 1,
        "games_duplicate_ids_dropped": 1,
        "items_without_title_dropped": 1,
        "interactions_of_untitled_items_dropped": 1,
        "items_without_metadata_dropped": 1,
        "interactions_without_metadata_dropped": 1,
    }
    assert raw.source["kind"] == "steam" and raw.source["user_key"] == "username"
    assert set(raw.source["files"]) == {"reviews", "games"}


def test_steam_goes_through_build_dataset(steam: tuple[Path, Path]) -> None:
    ds = build_dataset(load_steam(*steam, review_text=False), name="steam-tiny", merge_titles=True)
    assert ds.n_users == 3 and ds.n_items == 3
    assert ds.n_interactions == 5  # the duplicate review is dropped
    assert {"genres", "tags", "specs", "developer", "publisher"} == set(ds.manifest["text_fields"])
    chaos = ds.users.set_index("user_id").loc["Chaos Syren", "user_idx"]
    rows = ds.interactions[ds.interactions["user_idx"] == chaos]
    titles = ds.items.set_index("item_idx").loc[rows["item_idx"], "title"].tolist()
    assert titles == ["Ironbound", "Ōkami HD – 大神"]  # same-day tie kept in file order


def test_plain_json_lines_are_accepted_too(tmp_path: Path) -> None:
    reviews = write_lines(tmp_path / "r.json", [json.dumps(review("a", "1", "2015-05-05"))])
    games = write_lines(tmp_path / "g.json", [json.dumps({"id": 1, "app_name": "One"})])
    raw = load_steam(reviews, games)
    assert raw.items["item_id"].tolist() == ["1"] and raw.interactions["item_id"].tolist() == ["1"]


# --------------------------------------------------------------------------- bad input


def test_bad_date_names_line_and_field(tmp_path: Path, steam: tuple[Path, Path]) -> None:
    lines = [repr(r) for r in REVIEWS[:2]] + ["", repr(review("z", "35140", "17/12/2017"))]
    reviews = write_lines(tmp_path / "r.json.gz", lines)
    with pytest.raises(DataError) as err:
        load_steam(reviews, steam[1])
    assert (err.value.line, err.value.field) == (4, "date")
    assert "YYYY-MM-DD" in str(err.value) and "'17/12/2017'" in str(err.value)


def test_missing_fields_name_line_and_keys(tmp_path: Path, steam: tuple[Path, Path]) -> None:
    no_user = write_lines(tmp_path / "a.json", [repr({"product_id": "1", "date": "2017-01-01"})])
    with pytest.raises(
        DataError,
        match=r"a\.json:1: field 'username': required field is missing; "
        r"the line has: date, product_id",
    ):
        load_steam(no_user, steam[1])
    no_date = write_lines(
        tmp_path / "b.json", [repr(REVIEWS[0]), repr({"username": "u", "product_id": "1"})]
    )
    with pytest.raises(DataError, match=r"b\.json:2: field 'date': required field is missing"):
        load_steam(no_date, steam[1])


def test_malformed_literal_line(tmp_path: Path, steam: tuple[Path, Path]) -> None:
    games = write_lines(
        tmp_path / "g.json.gz", [repr(GAMES[0]), "{'app_name': 'Broken', 'id': '1',,}"]
    )
    with pytest.raises(
        DataError,
        match=r"g\.json\.gz:2: malformed line: expected a JSON object or a Python dict literal",
    ):
        load_steam(steam[0], games)


def test_undecodable_review_text(tmp_path: Path, steam: tuple[Path, Path]) -> None:
    lines = [repr(REVIEWS[0]), repr(review("Zoë", "35140", "2017-01-01"))]
    reviews = write_lines(tmp_path / "r.json.gz", lines, encoding="cp1252")
    with pytest.raises(DataError) as err:
        load_steam(reviews, steam[1])
    assert err.value.line == 2 and "utf-8" in str(err.value) and "encoding=" in str(err.value)
    assert (
        "Zoë" in load_steam(reviews, steam[1], encoding="cp1252").interactions["user_id"].tolist()
    )


def test_missing_and_empty_files(tmp_path: Path, steam: tuple[Path, Path]) -> None:
    with pytest.raises(DataError, match=r"steam_reviews\.json\.gz: reviews file does not exist"):
        load_steam(tmp_path / "nope" / "steam_reviews.json.gz", steam[1])
    empty = tmp_path / "g.json"
    empty.touch()
    with pytest.raises(DataError, match=r"g\.json: games file is empty"):
        load_steam(steam[0], empty)
    with pytest.raises(DataError, match="games path is not a regular file"):
        load_steam(steam[0], tmp_path)


def test_games_file_that_matches_nothing(tmp_path: Path, steam: tuple[Path, Path]) -> None:
    games = write_lines(tmp_path / "g.json", [repr({"id": "1", "app_name": "Other"})])
    with pytest.raises(DataError, match=r"g\.json: none of the 5 reviewed product_ids"):
        load_steam(steam[0], games)
