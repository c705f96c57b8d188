"""load_table on small CSV / TSV / JSON-lines / Parquet files written in their real formats."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from whyrec.data.build import build_dataset
from whyrec.data.loaders.generic import detect_format, load_table
from whyrec.errors import DataError


def day(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp())


def write(path: Path, text: str, *, encoding: str = "utf-8") -> Path:
    data = text.encode(encoding)
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


INTERACTIONS_CSV = """\
user_id,item_id,timestamp,rating
u1,i1,978300760,5
u1,i2,978300761,3.5
u1,i3,978300762,4
u2,i1,978300800,2

u2,i2,978300900,
u2,i2,978300900,
u3,i3,978301000,1
u3,i4,978301100,5
"""

ITEMS_CSV = """\
item_id,title,genres
i1,Amélie (2001),Comedy|Romance
i2,"Crouching Tiger, Hidden Dragon",Action
i3,"千と千尋の神隠し
(Spirited Away)",Animation
i4,,Drama
i2,"Crouching Tiger, Hidden Dragon",Action
"""


@pytest.fixture
def csv_pair(tmp_path: Path) -> tuple[Path, Path]:
    return write(tmp_path / "ratings.csv", INTERACTIONS_CSV), write(
        tmp_path / "items.csv", ITEMS_CSV
    )


def test_csv_pair_loads_in_file_order_with_catalogue(csv_pair: tuple[Path, Path]) -> None:
    raw = load_table(*csv_pair, rating_col="rating", text_cols=["genres"])
    inter, items = raw.interactions, raw.items
    # i4 has no title: the item and its one interaction are dropped and counted
    assert list(inter["item_id"]) == ["i1", "i2", "i3", "i1", "i2", "i2", "i3"]
    assert list(inter["user_id"])[:4] == ["u1", "u1", "u1", "u2"]
    assert inter["timestamp"].dtype == np.int64
    assert inter["timestamp"].iloc[0] == 978300760
    assert inter["rating"].dtype == np.float64
    assert inter["rating"].iloc[1] == 3.5
    assert np.isnan(inter["rating"].iloc[4])  # empty cell = no rating
    assert list(items.columns) == ["item_id", "title", "genres"]
    assert items.set_index("item_id").loc["i3", "title"] == "千と千尋の神隠し (Spirited Away)"
    assert items.set_index("item_id").loc["i2", "title"] == "Crouching Tiger, Hidden Dragon"
    assert raw.notes["items_without_title_dropped"] == 1
    assert raw.notes["interactions_of_untitled_items_dropped"] == 1
    assert raw.notes["items_duplicate_ids_dropped"] == 1
    assert raw.notes["items_with_conflicting_titles"] == 0
    assert raw.source["kind"] == "table"
    assert set(raw.source["files"]) == {"interactions", "items"}
    assert len(raw.source["files"]["items"]["sha256"]) == 64
    assert raw.source["timestamp_unit"] == "s"


def test_loaded_table_goes_through_build_dataset(csv_pair: tuple[Path, Path]) -> None:
    raw = load_table(*csv_pair, rating_col="rating", text_cols=["genres"])
    ds = build_dataset(raw, name="tiny", split="none")
    assert ds.n_users == 3
    assert ds.n_items == 3
    assert ds.n_interactions == 6  # the duplicate (u2, i2) row is dropped by the builder
    assert ds.manifest["loading_notes"]["items_without_title_dropped"] == 1
    assert ds.manifest["text_fields"] == ["genres"]


def test_single_gzipped_tsv_with_iso_dates_and_titles_per_row(tmp_path: Path) -> None:
    path = write(
        tmp_path / "log.tsv.gz",
        "who\twhat\twhen\tname\tcat\n"
        "alice\t10\t2019-03-01\tÉcole\tbooks\n"
        "alice\t11\t2019-03-01T12:30:00Z\tNaïve Art\t\n"
        "bob\t10\t2019-03-02 08:00:00+02:00\tÉcole (2nd ed.)\tbooks\n"
        "bob\t12\t2019-03-03\t\tmusic\n"
        "carol\t12\t2019-03-04\t\t\n",
    )
    raw = load_table(
        path, user_col="who", item_col="what", time_col="when", title_col="name", text_cols=["cat"]
    )
    assert list(raw.interactions["timestamp"]) == [
        day("2019-03-01T00:00:00"),
        day("2019-03-01T12:30:00"),
        day("2019-03-02T06:00:00"),
    ]
    assert list(raw.interactions["item_id"]) == ["10", "11", "10"]
    assert raw.interactions["rating"].isna().all()
    items = raw.items.set_index("item_id")
    assert items.loc["10", "title"] == "École"  # first title wins, the conflict is counted
    assert items.loc["11", "cat"] == ""
    assert raw.notes["items_with_conflicting_titles"] == 1
    assert raw.notes["items_without_title_dropped"] == 1  # item 12 never has a name
    assert raw.notes["interactions_of_untitled_items_dropped"] == 2
    assert raw.source["format"] == "tsv"


def test_jsonl_with_millisecond_times_and_list_tags(tmp_path: Path) -> None:
    rows = [
        {
            "user": 7,
            "item": "a",
            "ts": 1_600_000_000_000,
            "stars": 4,
            "title": "Ünïcode",
            "tags": ["x", "y"],
        },
        {
            "user": 7,
            "item": "b",
            "ts": 1_600_000_100_500,
            "stars": None,
            "title": "B",
            "tags": None,
        },
        {"user": 8, "item": "a", "ts": 1_600_000_200_000, "stars": "3", "title": "Ünïcode"},
    ]
    text = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n"
    path = write(tmp_path / "events.jsonl.gz", text)
    raw = load_table(
        path,
        user_col="user",
        item_col="item",
        time_col="ts",
        rating_col="stars",
        text_cols=["tags"],
    )
    assert list(raw.interactions["timestamp"]) == [1_600_000_000, 1_600_000_100, 1_600_000_200]
    assert list(raw.interactions["user_id"]) == ["7", "7", "8"]
    assert raw.interactions["rating"].tolist()[0] == 4.0
    assert np.isnan(raw.interactions["rating"].iloc[1])
    assert raw.items.set_index("item_id").loc["a", "tags"] == "x, y"
    assert raw.source["timestamp_unit"] == "ms"


def test_parquet_pair_with_datetime_column_and_integer_ids(tmp_path: Path) -> None:
    inter = pd.DataFrame(
        {
            "uid": [1, 1, 2],
            "iid": [100, 200, 100],
            "when": pd.to_datetime(["2020-01-01 10:00", "2020-01-02 00:00", "2020-01-03 00:00"]),
        }
    )
    items = pd.DataFrame({"movie": [100, 200], "name": ["Heat", "Ran"], "year": [1995, 1985]})
    inter.to_parquet(tmp_path / "inter.parquet")
    items.to_parquet(tmp_path / "items.parquet")
    raw = load_table(
        tmp_path / "inter.parquet",
        tmp_path / "items.parquet",
        user_col="uid",
        item_col="iid",
        time_col="when",
        items_item_col="movie",
        title_col="name",
        text_cols=["year"],
    )
    assert list(raw.interactions["item_id"]) == ["100", "200", "100"]
    assert raw.interactions["timestamp"].iloc[0] == day("2020-01-01T10:00:00")
    assert raw.items["year"].tolist() == ["1995", "1985"]


def test_json_array_and_strptime_format(tmp_path: Path) -> None:
    rows = [
        {"user_id": "u", "item_id": "x", "timestamp": "31/12/2018 23:59", "title": "X"},
        {"user_id": "u", "item_id": "y", "timestamp": "01/01/2019 00:00", "title": "Y"},
    ]
    path = write(tmp_path / "log.json", json.dumps(rows, indent=2))
    raw = load_table(path, time_format="%d/%m/%Y %H:%M")
    assert list(raw.interactions["timestamp"]) == [day("2018-12-31T23:59:00"), day("2019-01-01")]


def test_headerless_file_with_names_and_multichar_separator(tmp_path: Path) -> None:
    path = write(
        tmp_path / "ratings.dat.csv",
        "1::10::5::978300760::Toy Story\n2::10::3::978300761::Toy Story\n",
    )
    raw = load_table(
        path,
        sep="::",
        names=["user_id", "item_id", "rating", "timestamp", "title"],
        rating_col="rating",
    )
    assert raw.interactions["rating"].tolist() == [5.0, 3.0]
    assert raw.items["title"].tolist() == ["Toy Story"]


def test_utf8_bom_is_not_part_of_the_first_column(tmp_path: Path) -> None:
    path = write(tmp_path / "bom.csv", "\ufeffuser_id,item_id,timestamp,title\nu,i,1,T\n")
    assert load_table(path).interactions["user_id"].tolist() == ["u"]


def test_format_detection() -> None:
    assert detect_format("a.CSV.gz") == "csv"
    assert detect_format("a.tab") == "tsv"
    assert detect_format("a.ndjson") == "jsonl"
    assert detect_format("a.txt", "tsv") == "tsv"
    with pytest.raises(DataError, match=r"a\.txt.*extension '\.txt'.*fmt="):
        detect_format("a.txt")


# --------------------------------------------------------------------------- bad input


def test_missing_column_lists_available_and_suggests(csv_pair: tuple[Path, Path]) -> None:
    with pytest.raises(DataError) as err:
        load_table(csv_pair[0], csv_pair[1], user_col="userid")
    e = err.value
    assert e.field == "userid" and e.path == str(csv_pair[0])
    assert "user_col" in str(e) and "'user_id', 'item_id', 'timestamp', 'rating'" in str(e)
    assert "did you mean 'user_id'" in str(e)


def test_missing_column_in_items_file(csv_pair: tuple[Path, Path]) -> None:
    with pytest.raises(DataError, match=r"items\.csv: field 'name'.*'item_id', 'title', 'genres'"):
        load_table(*csv_pair, title_col="name")


def test_missing_title_column_in_single_file(tmp_path: Path) -> None:
    path = write(tmp_path / "one.csv", "user_id,item_id,timestamp\nu,i,1\n")
    with pytest.raises(DataError, match=r"field 'title'.*title_col"):
        load_table(path)


def test_bad_timestamp_names_physical_line(tmp_path: Path) -> None:
    # line 3 is blank, the title on line 4 spans two lines, so the bad row starts on line 6
    path = write(
        tmp_path / "log.csv",
        'user_id,item_id,timestamp,title\nu,a,100,A\n\nu,b,200,"two\nlines"\nu,c,yesterday,C\n',
    )
    with pytest.raises(DataError) as err:
        load_table(path)
    assert (err.value.line, err.value.field) == (6, "timestamp")
    assert f"{path}:6: field 'timestamp'" in str(err.value)
    assert "'yesterday'" in str(err.value) and "unix timestamp" in str(err.value)


def test_bad_iso_date_and_bad_format(tmp_path: Path) -> None:
    path = write(
        tmp_path / "log.csv",
        "user_id,item_id,timestamp,title\nu,a,2020-01-01,A\nu,b,2020-13-45,B\n",
    )
    with pytest.raises(
        DataError, match=r"log\.csv:3: field 'timestamp': expected an ISO-8601.*2020-13-45"
    ):
        load_table(path)
    with pytest.raises(DataError, match=r":2: .*format '%d\.%m\.%Y'"):
        load_table(path, time_format="%d.%m.%Y")
    with pytest.raises(DataError, match="time_format 'yyyy'"):
        load_table(path, time_format="yyyy")


def test_empty_timestamp_and_empty_id(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", "user_id,item_id,timestamp,title\nu,a,1,A\nu,b,,B\n")
    with pytest.raises(DataError, match=r":3: field 'timestamp'.*an empty value"):
        load_table(path)
    path = write(tmp_path / "ids.csv", "user_id,item_id,timestamp,title\nu,a,1,A\n,b,2,B\n")
    with pytest.raises(DataError, match=r"ids\.csv:3: field 'user_id': empty id"):
        load_table(path)


def test_timestamp_out_of_range_suggests_unit(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", "user_id,item_id,timestamp,title\nu,a,1600000000000,A\n")
    assert load_table(path).interactions["timestamp"].tolist() == [1_600_000_000]
    with pytest.raises(DataError, match=r":2: field 'timestamp'.*outside 1900-2200.*unit"):
        load_table(path, time_format="s")


def test_bad_rating_names_line(csv_pair: tuple[Path, Path]) -> None:
    path = write(
        csv_pair[0].parent / "r.csv",
        INTERACTIONS_CSV.replace("u3,i3,978301000,1", "u3,i3,978301000,five"),
    )
    with pytest.raises(
        DataError, match=r"r\.csv:9: field 'rating': expected a numeric rating.*'five'"
    ):
        load_table(path, csv_pair[1], rating_col="rating")


def test_undecodable_text_names_line_and_encoding(tmp_path: Path) -> None:
    path = write(
        tmp_path / "items.csv",
        "user_id,item_id,timestamp,title\nu,a,1,A\nu,b,2,Caf\xe9\n",
        encoding="latin-1",
    )
    with pytest.raises(DataError) as err:
        load_table(path)
    assert err.value.line == 3 and "utf-8" in str(err.value) and "encoding=" in str(err.value)
    assert load_table(path, encoding="latin-1").items["title"].tolist() == ["A", "Café"]


def test_undecodable_jsonl_line(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(
        b'{"user_id": "u", "item_id": "a", "timestamp": 1, "title": "A"}\n{"title": "\xff"}\n'
    )
    with pytest.raises(DataError, match=r"x\.jsonl:2: cannot decode byte b'\\xff'.*utf-8"):
        load_table(path)


def test_malformed_json_line(tmp_path: Path) -> None:
    path = write(
        tmp_path / "x.jsonl.gz",
        '{"user_id": "u", "item_id": "a", "timestamp": 1, "title": "A"}\n'
        "\n"
        '{"user_id": "u", "item_id": \n',
    )
    with pytest.raises(DataError, match=r"x\.jsonl\.gz:3: malformed line: expected a JSON object"):
        load_table(path)


def test_jsonl_missing_key_on_a_later_line(tmp_path: Path) -> None:
    path = write(
        tmp_path / "x.jsonl",
        '{"user_id": "u", "item_id": "a", "timestamp": 1, "title": "A"}\n'
        '{"user_id": "u", "timestamp": 2}\n',
    )
    with pytest.raises(DataError, match=r"x\.jsonl:2: field 'item_id': empty id"):
        load_table(path)


def test_empty_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.csv: interactions file does not exist"):
        load_table(tmp_path / "nope.csv")
    empty = tmp_path / "empty.csv"
    empty.touch()
    with pytest.raises(DataError, match=r"empty\.csv: interactions file is empty"):
        load_table(empty)
    header_only = write(tmp_path / "h.csv.gz", "user_id,item_id,timestamp,title\n")
    with pytest.raises(DataError, match=r"h\.csv\.gz: no data rows"):
        load_table(header_only)
    gz_empty = write(tmp_path / "e.csv.gz", "")
    with pytest.raises(DataError, match=r"e\.csv\.gz: file has no header"):
        load_table(gz_empty)
    blank = write(tmp_path / "b.jsonl", "\n\n")
    with pytest.raises(DataError, match=r"b\.jsonl: no records"):
        load_table(blank)
    real = write(tmp_path / "ok.csv", "user_id,item_id,timestamp\nu,i,1\n")
    with pytest.raises(DataError, match=r"missing-items\.csv: items file does not exist"):
        load_table(real, tmp_path / "missing-items.csv")


def test_ragged_csv_row(tmp_path: Path) -> None:
    path = write(
        tmp_path / "x.csv", "user_id,item_id,timestamp,title\nu,a,1,A\nu,b,2,B,extra,more\n"
    )
    with pytest.raises(DataError, match=r"x\.csv:3: malformed row"):
        load_table(path)


def test_parquet_bad_value_names_row(tmp_path: Path) -> None:
    pd.DataFrame(
        {
            "user_id": ["u", "u"],
            "item_id": ["a", "b"],
            "timestamp": ["2020-01-01", "soon"],
            "title": ["A", "B"],
        }
    ).to_parquet(tmp_path / "x.parquet")
    with pytest.raises(
        DataError, match=r"x\.parquet: field 'timestamp': row 2: expected an ISO-8601"
    ):
        load_table(tmp_path / "x.parquet")
    (tmp_path / "fake.parquet").write_text("not parquet")
    with pytest.raises(DataError, match=r"fake\.parquet: not a readable Parquet file"):
        load_table(tmp_path / "fake.parquet")


def test_no_item_matches_catalogue(csv_pair: tuple[Path, Path], tmp_path: Path) -> None:
    other = write(tmp_path / "other.csv", "item_id,title\nzz,Z\n")
    with pytest.raises(
        DataError, match=r"other\.csv: no interaction refers to an item with a title"
    ):
        load_table(csv_pair[0], other)


def test_unknown_encoding(csv_pair: tuple[Path, Path]) -> None:
    with pytest.raises(DataError, match=r"field 'encoding': unknown text encoding 'nope'"):
        load_table(*csv_pair, encoding="nope")
