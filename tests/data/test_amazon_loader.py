"""load_amazon on small files written like the real 2014, 2018 and 2023 releases.

2014 metadata lines are Python ``repr`` output (single quotes, None), exactly as the
published ``meta_<Category>.json.gz`` files were produced; reviews are JSON lines.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from whyrec.data.build import build_dataset
from whyrec.data.loaders.amazon import load_amazon
from whyrec.errors import DataError


def write_lines(path: Path, lines: list[str], *, encoding: str = "utf-8") -> Path:
    data = ("\n".join(lines) + "\n").encode(encoding)
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def review_2014(user: str, asin: str, rating: float, t: int, text: str = "ok") -> str:
    return json.dumps(
        {
            "reviewerID": user,
            "asin": asin,
            "reviewerName": "Some One",
            "helpful": [0, 0],
            "reviewText": text,
            "overall": rating,
            "summary": f"About {asin}",
            "unixReviewTime": t,
            "reviewTime": "01 1, 2014",
        }
    )


META_2014: list[dict[str, Any]] = [
    {
        "asin": "B001",
        "title": "Crème Brûlée Lip Balm",
        "price": 3.17,
        "imUrl": "http://ecx.images-amazon.com/images/I/51.jpg",
        "related": {"also_bought": ["B002"]},
        "salesRank": {"Beauty": 2113},
        "brand": "Burt's Bees",
        "categories": [["Beauty", "Skin Care", "Lips"], ["Beauty", "Makeup"]],
        "description": "A balm for kids' lips.",
    },
    {
        "asin": "B002",
        "title": "Shampoo &amp; Conditioner",
        "brand": None,
        "categories": [["Beauty"]],
    },
    {"asin": "B003", "categories": [["Beauty"]], "salesRank": {}},  # no title: dropped
    {"asin": "B005", "title": "Never reviewed", "categories": []},
    {"asin": "B004", "title": "日本の櫛", "categories": [["Beauty", "Hair Care"]]},
]


@pytest.fixture
def amazon_2014(tmp_path: Path) -> tuple[Path, Path]:
    reviews = write_lines(
        tmp_path / "reviews_Beauty_5.json.gz",
        [
            review_2014("A1", "B001", 5.0, 1_300_000_000, "Lovely."),
            review_2014("A1", "B002", 4.0, 1_300_000_100),
            review_2014("A1", "B003", 3.0, 1_300_000_200),
            review_2014("A2", "B001", 2.0, 1_300_000_300),
            review_2014("A2", "B004", 5.0, 1_300_000_400),
            review_2014("A2", "B004", 5.0, 1_300_000_400),  # duplicate row
            review_2014("A3", "B002", 1.0, 1_300_000_500),
            review_2014("A3", "B009", 1.0, 1_300_000_600),  # not in the metadata
            review_2014("A3", "B004", 4.0, 1_300_000_700),
            review_2014("A1", "B004", 4.0, 1_300_000_800),
        ],
    )
    meta = write_lines(tmp_path / "meta_Beauty.json.gz", [repr(m) for m in META_2014])
    return reviews, meta


def test_meta_fixture_is_python_literal_not_json(amazon_2014: tuple[Path, Path]) -> None:
    first = gzip.decompress(amazon_2014[1].read_bytes()).decode().splitlines()[1]
    assert first.startswith("{'asin': 'B002'") and "None" in first
    with pytest.raises(json.JSONDecodeError):
        json.loads(first)


def test_2014_release(amazon_2014: tuple[Path, Path]) -> None:
    raw = load_amazon(*amazon_2014)
    inter, items = raw.interactions, raw.items
    assert list(inter["item_id"]) == [
        "B001",
        "B002",
        "B001",
        "B004",
        "B004",
        "B002",
        "B004",
        "B004",
    ]
    assert list(inter["user_id"]) == ["A1", "A1", "A2", "A2", "A2", "A3", "A3", "A1"]
    assert inter["timestamp"].dtype == np.int64 and inter["timestamp"].iloc[0] == 1_300_000_000
    assert inter["rating"].dtype == np.float64 and inter["rating"].iloc[0] == 5.0
    assert inter["review_text"].iloc[0] == "Lovely."
    assert inter["review_summary"].iloc[0] == "About B001"
    by_id = items.set_index("item_id")
    assert list(items["item_id"]) == ["B001", "B002", "B004"]  # metadata order
    assert by_id.loc["B001", "title"] == "Crème Brûlée Lip Balm"
    assert by_id.loc["B002", "title"] == "Shampoo & Conditioner"
    assert by_id.loc["B004", "title"] == "日本の櫛"
    assert by_id.loc["B001", "categories"] == "Beauty, Skin Care, Lips, Makeup"
    assert by_id.loc["B001", "brand"] == "Burt's Bees"
    assert by_id.loc["B002", "brand"] == ""
    assert by_id.loc["B001", "description"] == "A balm for kids' lips."
    assert "features" not in items.columns  # 2014 has none: the empty column is left out
    assert raw.notes == {
        "meta_items_without_reviews_skipped": 1,
        "meta_duplicate_items_dropped": 0,
        "items_without_title_dropped": 1,
        "interactions_of_untitled_items_dropped": 1,
        "items_without_metadata_dropped": 1,
        "interactions_without_metadata_dropped": 1,
    }
    assert raw.source["kind"] == "amazon"
    assert raw.source["release"] == {"reviews": "2014/2018", "meta": "2014"}
    assert set(raw.source["files"]) == {"reviews", "meta"}


def test_2014_goes_through_build_dataset(amazon_2014: tuple[Path, Path]) -> None:
    ds = build_dataset(load_amazon(*amazon_2014), name="beauty-tiny", split="loo")
    assert ds.n_users == 3 and ds.n_items == 3
    assert ds.n_interactions == 7  # the duplicate (A2, B004) review is dropped
    assert ds.manifest["split"]["users_train_only"] == 2
    a1 = ds.users.set_index("user_id").loc["A1", "user_idx"]
    a1_rows = ds.interactions[ds.interactions["user_idx"] == a1]
    assert list(a1_rows["split"]) == ["train", "valid", "test"]
    assert ds.manifest["loading_notes"]["items_without_title_dropped"] == 1
    assert set(ds.manifest["text_fields"]) == {"categories", "brand", "description"}
    assert "review_text" not in ds.interactions.columns


def test_2018_release_plain_json(tmp_path: Path) -> None:
    reviews = write_lines(
        tmp_path / "Luxury_Beauty_5.json",
        [
            json.dumps(
                {
                    "overall": 5.0,
                    "verified": True,
                    "reviewTime": "09 1, 2016",
                    "reviewerID": "R1",
                    "asin": "X1",
                    "style": {"Size:": " 7.0 oz"},
                    "reviewerName": "Shelly F",
                    "reviewText": "As advertised.",
                    "summary": "Five Stars",
                    "unixReviewTime": 1472688000,
                }
            ),
            # a line with only the human-readable date
            json.dumps(
                {"overall": 3.0, "reviewerID": "R2", "asin": "X2", "reviewTime": "12 25, 2017"}
            ),
            json.dumps(
                {"overall": 4.0, "reviewerID": "R2", "asin": "X1", "unixReviewTime": 1514764800}
            ),
        ],
    )
    meta_rows = [
        {
            "category": ["Luxury Beauty", "Skin Care"],
            "description": ["Rich cream.", "For dry skin."],
            "title": "Crabtree &amp; Evelyn  Hand Cream",
            "brand": "Crabtree &amp; Evelyn",
            "feature": ["Shea butter, 25%", "Unscented"],
            "main_cat": "Luxury Beauty",
            "asin": "X1",
        },
        {"category": [], "title": "  ", "asin": "X2"},  # blank title counts as missing
        {"category": ["dup"], "title": "Duplicate", "asin": "X1"},
    ]
    meta = write_lines(tmp_path / "meta_Luxury_Beauty.json", [json.dumps(m) for m in meta_rows])
    raw = load_amazon(reviews, meta)
    assert raw.source["release"] == {"reviews": "2014/2018", "meta": "2018"}
    assert list(raw.interactions["user_id"]) == ["R1", "R2"]
    assert raw.interactions["timestamp"].tolist() == [1472688000, 1514764800]
    item = raw.items.set_index("item_id").loc["X1"]
    assert item["title"] == "Crabtree & Evelyn Hand Cream"
    assert item["brand"] == "Crabtree & Evelyn"
    assert item["description"] == "Rich cream. For dry skin."
    assert item["features"] == "Shea butter, 25%; Unscented"
    assert raw.notes["meta_duplicate_items_dropped"] == 1
    assert raw.notes["items_without_title_dropped"] == 1
    assert raw.notes["interactions_of_untitled_items_dropped"] == 1


def test_review_time_fallback(tmp_path: Path) -> None:
    reviews = write_lines(
        tmp_path / "r.json",
        [
            json.dumps(
                {"overall": 3.0, "reviewerID": "R2", "asin": "X2", "reviewTime": "12 25, 2017"}
            )
        ],
    )
    meta = write_lines(tmp_path / "m.json", [json.dumps({"asin": "X2", "title": "T"})])
    assert load_amazon(reviews, meta).interactions["timestamp"].tolist() == [1514160000]


def test_2023_release_milliseconds(tmp_path: Path) -> None:
    def review(user: str, parent: str, ms: int) -> str:
        return json.dumps(
            {
                "rating": 4.0,
                "title": "Such a lovely scent",
                "text": "This spray is really nice.<br />Would buy again.",
                "images": [],
                "asin": parent + "-child",
                "parent_asin": parent,
                "user_id": user,
                "timestamp": ms,
                "helpful_vote": 0,
                "verified_purchase": True,
            }
        )

    reviews = write_lines(
        tmp_path / "All_Beauty.jsonl.gz",
        [
            review("U1", "P1", 1588687728923),
            review("U1", "P2", 1588687729000),
            review("U2", "P1", 1600000000999),
        ],
    )
    meta_rows = [
        {
            "main_category": "All Beauty",
            "title": "Howard Leather Conditioner, 8-Ounce (4-Pack)",
            "average_rating": 4.8,
            "features": [],
            "description": [],
            "price": None,
            "store": "Howard Products",
            "categories": [],
            "details": {"Package Dimensions": "7.1 x 5.5 x 3 inches"},
            "parent_asin": "P1",
            "bought_together": None,
        },
        {"main_category": "All Beauty", "title": None, "parent_asin": "P2", "categories": ["Hair"]},
    ]
    meta = write_lines(tmp_path / "meta_All_Beauty.jsonl.gz", [json.dumps(m) for m in meta_rows])
    raw = load_amazon(reviews, meta, review_text=False)
    assert raw.source["release"] == {"reviews": "2023", "meta": "2023"}
    assert raw.source["review_timestamp_unit"] == "ms"
    assert raw.interactions["timestamp"].tolist() == [1588687728, 1600000000]
    assert raw.interactions["item_id"].tolist() == ["P1", "P1"]
    assert "review_text" not in raw.interactions.columns
    item = raw.items.set_index("item_id").loc["P1"]
    assert item["brand"] == "Howard Products"
    assert item["categories"] == "All Beauty"
    assert raw.notes["items_without_title_dropped"] == 1


def test_releases_that_cannot_be_joined(tmp_path: Path, amazon_2014: tuple[Path, Path]) -> None:
    meta_2023 = write_lines(
        tmp_path / "m.jsonl", [json.dumps({"parent_asin": "B001", "title": "T"})]
    )
    with pytest.raises(DataError, match=r"m\.jsonl: reviews file is the 2014/2018 release .* 2023"):
        load_amazon(amazon_2014[0], meta_2023)


def test_swapped_files_are_recognised(amazon_2014: tuple[Path, Path]) -> None:
    with pytest.raises(
        DataError, match=r"meta_Beauty\.json\.gz:1: .*were reviews and meta swapped"
    ):
        load_amazon(amazon_2014[1], amazon_2014[0])


def test_unrelated_files(tmp_path: Path, amazon_2014: tuple[Path, Path]) -> None:
    meta = write_lines(
        tmp_path / "m.json", [repr({"asin": "Z9", "title": "Other", "categories": []})]
    )
    with pytest.raises(DataError, match=r"m\.json: none of the 5 reviewed items"):
        load_amazon(amazon_2014[0], meta)


# --------------------------------------------------------------------------- bad input


def test_malformed_meta_line_names_line(tmp_path: Path, amazon_2014: tuple[Path, Path]) -> None:
    lines = [repr(m) for m in META_2014]
    lines.insert(2, "{'asin': 'B004', 'title': 'cut off")
    meta = write_lines(tmp_path / "meta.json.gz", lines)
    with pytest.raises(DataError) as err:
        load_amazon(amazon_2014[0], meta)
    assert err.value.line == 3 and err.value.path == str(meta)
    assert "JSON object or a Python dict literal" in str(err.value)


def test_lines_of_unreviewed_items_are_skipped_unparsed(
    tmp_path: Path, amazon_2014: tuple[Path, Path]
) -> None:
    # speed: metadata of products nobody reviewed is only scanned for its id
    lines = [repr(m) for m in META_2014]
    lines.insert(2, "{'asin': 'B00X', 'title': 'cut off")
    meta = write_lines(tmp_path / "meta.json.gz", lines)
    assert load_amazon(amazon_2014[0], meta).notes["meta_items_without_reviews_skipped"] == 2


def test_python2_utf8_escapes_are_repaired(tmp_path: Path, amazon_2014: tuple[Path, Path]) -> None:
    line = r"{'asin': 'B002', 'title': 'Caf\xc3\xa9 Shampoo', 'categories': [['Beauty']]}"
    meta = write_lines(tmp_path / "meta.json", [repr(META_2014[0]), line])
    titles = load_amazon(amazon_2014[0], meta).items.set_index("item_id")["title"]
    assert titles["B002"] == "Café Shampoo"
    assert titles["B001"] == "Crème Brûlée Lip Balm"  # genuine non-ASCII is left alone


def test_code_in_a_line_is_never_run(tmp_path: Path, amazon_2014: tuple[Path, Path]) -> None:
    marker = tmp_path / "pwned"
    meta = write_lines(
        tmp_path / "meta.json",
        [repr(META_2014[0]), f"{{'asin': open({str(marker)!r}, 'w').write('x')}}"],
    )
    with pytest.raises(DataError, match=r"meta\.json:2: malformed line"):
        load_amazon(amazon_2014[0], meta)
    assert not marker.exists()


def test_non_dict_line(tmp_path: Path, amazon_2014: tuple[Path, Path]) -> None:
    meta = write_lines(tmp_path / "meta.json", [repr(META_2014[0]), "['B002', 'title']"])
    with pytest.raises(
        DataError, match=r"meta\.json:2: malformed line: expected an object/dict, got list"
    ):
        load_amazon(amazon_2014[0], meta)


def test_missing_review_field_names_line_field_and_keys(
    tmp_path: Path, amazon_2014: tuple[Path, Path]
) -> None:
    reviews = write_lines(
        tmp_path / "r.json",
        [
            review_2014("A1", "B001", 5.0, 1_300_000_000),
            "",
            json.dumps({"reviewerID": "A2", "overall": 5.0, "unixReviewTime": 1}),
        ],
    )
    with pytest.raises(DataError) as err:
        load_amazon(reviews, amazon_2014[1])
    assert (err.value.line, err.value.field) == (3, "asin")
    assert "missing; the line has: overall, reviewerID, unixReviewTime" in str(err.value)


def test_bad_rating_and_time(tmp_path: Path, amazon_2014: tuple[Path, Path]) -> None:
    bad_rating = write_lines(tmp_path / "r1.json", [review_2014("A1", "B001", "five", 1)])  # type: ignore[arg-type]
    with pytest.raises(
        DataError, match=r"r1\.json:1: field 'overall': expected a numeric rating, got 'five'"
    ):
        load_amazon(bad_rating, amazon_2014[1])
    bad_time = write_lines(tmp_path / "r2.json", [review_2014("A1", "B001", 5.0, "last week")])  # type: ignore[arg-type]
    with pytest.raises(
        DataError, match=r"r2\.json:1: field 'unixReviewTime': expected a unix timestamp"
    ):
        load_amazon(bad_time, amazon_2014[1])
    bad_date = write_lines(
        tmp_path / "r3.json",
        [json.dumps({"reviewerID": "A", "asin": "B001", "reviewTime": "2014-01-01"})],
    )
    with pytest.raises(DataError, match=r"r3\.json:1: field 'reviewTime': expected unixReviewTime"):
        load_amazon(bad_date, amazon_2014[1])


def test_unknown_layout_lists_expected_fields(
    tmp_path: Path, amazon_2014: tuple[Path, Path]
) -> None:
    reviews = write_lines(tmp_path / "r.json", [json.dumps({"user": "u", "product": "p"})])
    with pytest.raises(
        DataError,
        match=r"r\.json:1: not an Amazon reviews record.*reviewerID.*found: product, user",
    ):
        load_amazon(reviews, amazon_2014[1])


def test_undecodable_meta_names_line_and_encoding(
    tmp_path: Path, amazon_2014: tuple[Path, Path]
) -> None:
    lines = [repr(m) for m in META_2014[2:4]]  # plain ASCII lines...
    lines.insert(1, repr({"asin": "B002", "title": "Shampoo Caf\xe9", "brand": None}))  # ...and one
    meta = write_lines(tmp_path / "meta.json.gz", lines, encoding="latin-1")
    with pytest.raises(DataError) as err:
        load_amazon(amazon_2014[0], meta)
    assert err.value.line == 2
    assert "as utf-8" in str(err.value) and "encoding=" in str(err.value)
    raw = load_amazon(amazon_2014[0], meta, encoding="latin-1")
    assert raw.items.set_index("item_id").loc["B002", "title"] == "Shampoo Café"


def test_missing_empty_and_truncated_files(tmp_path: Path, amazon_2014: tuple[Path, Path]) -> None:
    with pytest.raises(DataError, match=r"nothere\.json\.gz: metadata file does not exist"):
        load_amazon(amazon_2014[0], tmp_path / "nothere.json.gz")
    (tmp_path / "empty.json").touch()
    with pytest.raises(DataError, match=r"empty\.json: reviews file is empty"):
        load_amazon(tmp_path / "empty.json", amazon_2014[1])
    blank = write_lines(tmp_path / "blank.json.gz", ["", "  "])
    with pytest.raises(DataError, match=r"blank\.json\.gz: reviews file has no records"):
        load_amazon(blank, amazon_2014[1])
    truncated = tmp_path / "cut.json.gz"
    truncated.write_bytes(amazon_2014[0].read_bytes()[:-30])
    with pytest.raises(DataError, match=r"cut\.json\.gz:\d+: corrupt or truncated gzip"):
        load_amazon(truncated, amazon_2014[1])
