"""Amazon product reviews (McAuley lab): the 2014, 2018 and 2023 releases.

Each release ships a reviews file and a metadata file, both one record per line and
usually gzipped. The release is detected per file from its first record:

============ =========================================== ==========================================
release      reviews                                     metadata
============ =========================================== ==========================================
2014         JSON: reviewerID, asin, overall,            **Python literals**: asin, title,
             unixReviewTime, reviewText, summary          categories (list of lists), brand,
                                                          description (str), price, related, ...
2018         JSON: as 2014 plus verified, vote, style     JSON: asin, title, category (list),
                                                          brand, description (list), feature, ...
2023         JSON: user_id, parent_asin, rating,          JSON: parent_asin, title, main_category,
             timestamp (**milliseconds**), text, title    categories, description, features, store
============ =========================================== ==========================================

Titles come only from the metadata: LANE and the explainers need a title for every item,
so reviewed items without one are dropped and counted (items and their interactions).
The review text is kept as ``review_text``/``review_summary``; later stages use real
reviews as reference explanations.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from whyrec.data.loaders._lines import (
    attach_catalogue,
    catalogue_frame,
    check_file,
    clean_title,
    iter_lines,
    iter_records,
    join_text,
    parse_record,
    require,
)
from whyrec.data.raw import RawData, describe_source
from whyrec.errors import DataError

_REVIEW_KEYS = {
    "2014/2018": ("reviewerID", "asin", "overall", "unixReviewTime"),
    "2023": ("user_id", "parent_asin", "rating", "timestamp"),
}
_META_KEYS = {
    "2014": ("asin", "title"),
    "2018": ("asin", "title"),
    "2023": ("parent_asin", "title"),
}
# a top-level "asin": "B00..." pair (either quote style); the id may not contain quotes
_ID_PATTERNS = {
    key: re.compile(rf"""(?<![\w])['"]{key}['"]\s*:\s*['"]([^'"\\]*)['"]""")
    for key in ("asin", "parent_asin")
}
_MS_THRESHOLD = 100_000_000_000  # 1e11 s is the year 5138; larger epochs are milliseconds


def load_amazon(
    reviews: str | Path,
    meta: str | Path,
    *,
    encoding: str = "utf-8",
    review_text: bool = True,
) -> RawData:
    """Load an Amazon reviews file and its metadata file (2014, 2018 or 2023 release).

    ``review_text=False`` skips the review text columns to save memory on the large
    categories. Only metadata of reviewed items is kept; see the module docstring for
    the per-release fields and ``RawData.notes`` for what was dropped.
    """
    reviews_path = check_file(reviews, "reviews")
    meta_path = check_file(meta, "metadata")
    inter, review_variant, ts_unit = _read_reviews(reviews_path, encoding, review_text)
    reviewed = set(inter["item_id"].unique())
    titled, untitled, meta_variant, meta_notes = _read_meta(meta_path, encoding, reviewed)

    if (review_variant == "2023") != (meta_variant == "2023"):
        raise DataError(
            f"reviews file is the {review_variant} release but the metadata file is the "
            f"{meta_variant} release; 2023 keys items by parent_asin, earlier releases by "
            "asin, so the two cannot be joined. Use files from the same release",
            path=meta_path,
        )
    inter, items, notes = attach_catalogue(inter, catalogue_frame(titled), untitled)
    if inter.empty:
        raise DataError(
            f"none of the {len(reviewed)} reviewed items has a titled record in the "
            "metadata file; are the reviews and metadata from the same category?",
            path=meta_path,
        )
    source = describe_source(
        "amazon",
        {"reviews": reviews_path, "meta": meta_path},
        release={"reviews": review_variant, "meta": meta_variant},
        review_timestamp_unit=ts_unit,
    )
    return RawData(interactions=inter, items=items, source=source, notes={**meta_notes, **notes})


def _review_variant(record: dict[str, Any]) -> str | None:
    if "parent_asin" in record and "user_id" in record:
        return "2023"
    if "reviewerID" in record and "asin" in record:
        return "2014/2018"
    return None


def _meta_variant(record: dict[str, Any]) -> str | None:
    if "parent_asin" in record:
        return "2023"
    if "asin" in record:
        # fields only the 2014 metadata has; 2018 renamed categories -> category
        return "2014" if {"categories", "salesRank", "imUrl", "related"} & record.keys() else "2018"
    return None


def _unknown_layout(path: Path, line: int, record: dict[str, Any], kind: str) -> DataError:
    expected = _REVIEW_KEYS if kind == "reviews" else _META_KEYS
    options = "; ".join(f"{name}: {', '.join(keys)}" for name, keys in expected.items())
    hint = ""
    if (
        kind == "reviews"
        and _meta_variant(record)
        and "title" in record
        and ("reviewerID" not in record and "user_id" not in record)
    ):
        hint = " (this looks like a metadata file: were reviews and meta swapped?)"
    return DataError(
        f"not an Amazon {kind} record of a known release{hint}; expected fields "
        f"({options}), found: {', '.join(sorted(map(str, record)))}",
        path=path,
        line=line,
    )


def _read_reviews(path: Path, encoding: str, keep_text: bool) -> tuple[pd.DataFrame, str, str]:
    users: list[str] = []
    items: list[str] = []
    times: list[int] = []
    ratings: list[float] = []
    texts: list[str] = []
    summaries: list[str] = []
    variant: str | None = None
    ts_unit = "s"
    user_key = item_key = rating_key = time_key = text_key = summary_key = ""
    for line, rec in iter_records(path, encoding):
        if variant is None:
            variant = _review_variant(rec)
            if variant is None:
                raise _unknown_layout(path, line, rec, "reviews")
            user_key, item_key, rating_key, time_key = _REVIEW_KEYS[variant]
            text_key, summary_key = (
                ("text", "title") if variant == "2023" else ("reviewText", "summary")
            )
            if variant == "2023":
                first = _int_field(require(rec, time_key, path, line), path, line, time_key)
                ts_unit = "ms" if abs(first) >= _MS_THRESHOLD else "s"
        users.append(str(require(rec, user_key, path, line)))
        items.append(str(require(rec, item_key, path, line)))
        ratings.append(_float_field(rec.get(rating_key), path, line, rating_key))
        if time_key in rec or variant == "2023":
            ts = _int_field(require(rec, time_key, path, line), path, line, time_key)
            times.append(ts // 1000 if ts_unit == "ms" else ts)
        else:  # some 2014/2018 lines carry only the human-readable date
            times.append(_review_time(require(rec, "reviewTime", path, line), path, line))
        if keep_text:
            texts.append(_clean_review(rec.get(text_key)))
            summaries.append(_clean_review(rec.get(summary_key)))
    if variant is None:
        raise DataError("reviews file has no records (only blank lines)", path=path)
    columns: dict[str, Any] = {
        "user_id": users,
        "item_id": items,
        "timestamp": pd.array(times, dtype="int64"),
        "rating": pd.array(ratings, dtype="float64"),
    }
    if keep_text:
        columns["review_text"] = texts
        columns["review_summary"] = summaries
    frame = pd.DataFrame(columns)
    frame["timestamp"] = frame["timestamp"].astype("int64")
    frame["rating"] = frame["rating"].astype("float64")
    return frame, variant, ts_unit


def _read_meta(
    path: Path, encoding: str, reviewed: set[str]
) -> tuple[dict[str, dict[str, str]], set[str], str, dict[str, int]]:
    titled: dict[str, dict[str, str]] = {}
    untitled: set[str] = set()
    variant: str | None = None
    extract: Callable[[dict[str, Any]], dict[str, str]] = _meta_fields_2014
    id_key = "asin"
    skipped = duplicates = 0
    id_pattern = _ID_PATTERNS["asin"]
    for line, text in iter_lines(path, encoding):
        if variant is not None:
            # Most metadata lines describe products nobody in the reviews file rated:
            # find their id without parsing (literal_eval is slow). Only a line with
            # exactly one plain id match is skipped this way; anything else is parsed.
            found = id_pattern.findall(text)
            if len(found) == 1 and found[0] not in reviewed:
                skipped += 1
                continue
        rec = parse_record(text, path, line)
        if variant is None:
            variant = _meta_variant(rec)
            if variant is None:
                raise _unknown_layout(path, line, rec, "metadata")
            id_key = _META_KEYS[variant][0]
            id_pattern = _ID_PATTERNS[id_key]
            extract = {"2014": _meta_fields_2014, "2018": _meta_fields_2018}.get(
                variant, _meta_fields_2023
            )
        item_id = str(require(rec, id_key, path, line))
        if item_id not in reviewed:
            skipped += 1
            continue
        if item_id in titled or item_id in untitled:
            duplicates += 1  # the 2018 metadata repeats some products; first record wins
            continue
        title = clean_title(rec.get("title"), unescape=True)
        if not title:
            untitled.add(item_id)
            continue
        titled[item_id] = {"title": title, **extract(rec)}
    if variant is None:
        raise DataError("metadata file has no records (only blank lines)", path=path)
    notes = {
        "meta_items_without_reviews_skipped": skipped,
        "meta_duplicate_items_dropped": duplicates,
    }
    return titled, untitled, variant, notes


def _meta_fields_2014(rec: dict[str, Any]) -> dict[str, str]:
    return {
        "categories": join_text(rec.get("categories"), unescape=True),
        "brand": join_text(rec.get("brand"), unescape=True),
        "description": join_text(rec.get("description"), " ", unescape=True),
        "features": "",
    }


def _meta_fields_2018(rec: dict[str, Any]) -> dict[str, str]:
    return {
        "categories": join_text(rec.get("category"), unescape=True),
        "brand": join_text(rec.get("brand"), unescape=True),
        "description": join_text(rec.get("description"), " ", unescape=True),
        "features": join_text(rec.get("feature"), "; ", unescape=True),
    }


def _meta_fields_2023(rec: dict[str, Any]) -> dict[str, str]:
    return {
        "categories": join_text([rec.get("main_category"), rec.get("categories")], unescape=True),
        "brand": join_text(rec.get("store"), unescape=True),
        "description": join_text(rec.get("description"), " ", unescape=True),
        "features": join_text(rec.get("features"), "; ", unescape=True),
    }


def _clean_review(value: Any) -> str:
    """Review text as a string ('' when absent), surrounding whitespace removed."""
    return "" if value is None else str(value).strip()


def _int_field(value: Any, path: Path, line: int, field: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        number = float(value)
        if number != number or number in (float("inf"), float("-inf")):
            raise ValueError
        return int(number)
    except (TypeError, ValueError):
        raise DataError(
            f"expected a unix timestamp (integer), got {value!r}", path=path, line=line, field=field
        ) from None


def _float_field(value: Any, path: Path, line: int, field: str) -> float:
    if value is None or value == "":
        return float("nan")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataError(
            f"expected a numeric rating, got {value!r}", path=path, line=line, field=field
        ) from None


def _review_time(value: Any, path: Path, line: int) -> int:
    """Seconds (UTC midnight) from the 2014/2018 ``reviewTime`` text, e.g. '09 13, 2009'."""
    try:
        day = dt.datetime.strptime(str(value).strip(), "%m %d, %Y").replace(tzinfo=dt.UTC)
    except ValueError:
        raise DataError(
            f"expected unixReviewTime, or reviewTime like '09 13, 2009'; got {value!r}",
            path=path,
            line=line,
            field="reviewTime",
        ) from None
    return int(day.timestamp())
