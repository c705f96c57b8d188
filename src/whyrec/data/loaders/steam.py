"""Steam reviews and games (Kang & McAuley, ICDM 2018), the Steam data LANE uses.

Both files are gzipped **Python literal** lines, not JSON:

- ``steam_reviews.json.gz``: ``username``, ``product_id``, ``date`` ('YYYY-MM-DD'),
  ``text``, ``hours``, ``products``, ``early_access``, ... and, on a minority of lines
  only, ``user_id``.
- ``steam_games.json.gz``: ``id``, ``app_name`` (the title), ``genres``, ``tags``,
  ``specs``, ``developer``, ``publisher``, ``price``, ...

The user key is ``username``: ``user_id`` is absent from most review lines, and
``username`` is what the SASRec/LANE preprocessing of this dataset groups by. Display
names are not guaranteed unique, so two people sharing a name become one user; that is
the dataset's convention, kept so our numbers compare with published ones.
Timestamps are dates only (UTC midnight); same-day reviews keep file order.
Steam has no ratings, so ``rating`` is NaN; ``hours`` played is kept as a column.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pandas as pd

from whyrec.data.loaders._lines import (
    attach_catalogue,
    catalogue_frame,
    check_file,
    clean_title,
    iter_records,
    join_text,
    require,
)
from whyrec.data.raw import RawData, describe_source
from whyrec.errors import DataError

_EPOCH = dt.date(1970, 1, 1)


def load_steam(
    reviews: str | Path,
    games: str | Path,
    *,
    encoding: str = "utf-8",
    review_text: bool = True,
) -> RawData:
    """Load ``steam_reviews.json.gz`` and ``steam_games.json.gz`` (plain or gzipped).

    Games without ``app_name`` are dropped with their reviews; counts are in ``notes``.
    ``review_text=False`` skips the review text to save memory.
    """
    reviews_path = check_file(reviews, "reviews")
    games_path = check_file(games, "games")
    inter, review_notes = _read_reviews(reviews_path, encoding, review_text)
    reviewed = set(inter["item_id"].unique())
    titled, untitled, game_notes = _read_games(games_path, encoding, reviewed)
    inter, items, notes = attach_catalogue(inter, catalogue_frame(titled), untitled)
    if inter.empty:
        raise DataError(
            f"none of the {len(reviewed)} reviewed product_ids has a game with an app_name "
            "in the games file; is it steam_games.json.gz?",
            path=games_path,
        )
    source = describe_source(
        "steam", {"reviews": reviews_path, "games": games_path}, user_key="username"
    )
    return RawData(
        interactions=inter,
        items=items,
        source=source,
        notes={**review_notes, **game_notes, **notes},
    )


def _read_reviews(
    path: Path, encoding: str, keep_text: bool
) -> tuple[pd.DataFrame, dict[str, int]]:
    users: list[str] = []
    items: list[str] = []
    times: list[int] = []
    hours: list[float] = []
    texts: list[str] = []
    day_cache: dict[str, int] = {}
    no_name = 0
    seen_any = False
    for line, rec in iter_records(path, encoding):
        seen_any = True
        if "username" not in rec:
            require(rec, "username", path, line)  # raises, naming the keys present
        user = rec["username"]
        if user is None or not str(user).strip():
            no_name += 1  # anonymous review: cannot be attributed to a history
            continue
        users.append(str(user))
        items.append(str(require(rec, "product_id", path, line)))
        date = str(require(rec, "date", path, line))
        ts = day_cache.get(date)
        if ts is None:
            ts = day_cache[date] = _day_seconds(date, path, line)
        times.append(ts)
        hours.append(_hours(rec.get("hours")))
        if keep_text:
            text = rec.get("text")
            texts.append("" if text is None else str(text).strip())
    if not seen_any:
        raise DataError("reviews file has no records (only blank lines)", path=path)
    columns: dict[str, Any] = {
        "user_id": users,
        "item_id": items,
        "timestamp": pd.Series(times, dtype="int64"),
        "rating": pd.Series(float("nan"), index=range(len(users)), dtype="float64"),
        "hours": pd.Series(hours, dtype="float64"),
    }
    if keep_text:
        columns["review_text"] = texts
    return pd.DataFrame(columns), {"reviews_without_username_skipped": no_name}


def _read_games(
    path: Path, encoding: str, reviewed: set[str]
) -> tuple[dict[str, dict[str, str]], set[str], dict[str, int]]:
    titled: dict[str, dict[str, str]] = {}
    untitled: set[str] = set()
    no_id = skipped = duplicates = 0
    seen_any = False
    for _line, rec in iter_records(path, encoding):
        seen_any = True
        raw_id = rec.get("id")
        if raw_id is None or raw_id == "":
            no_id += 1  # the published file has a few such entries; nothing can refer to them
            continue
        item_id = str(raw_id)
        if item_id not in reviewed:
            skipped += 1
            continue
        if item_id in titled or item_id in untitled:
            duplicates += 1
            continue
        title = clean_title(rec.get("app_name"))
        if not title:
            untitled.add(item_id)
            continue
        titled[item_id] = {
            "title": title,
            "genres": join_text(rec.get("genres")),
            "tags": join_text(rec.get("tags")),
            "specs": join_text(rec.get("specs")),
            "developer": join_text(rec.get("developer")),
            "publisher": join_text(rec.get("publisher")),
        }
    if not seen_any:
        raise DataError("games file has no records (only blank lines)", path=path)
    notes = {
        "games_without_id_skipped": no_id,
        "games_without_reviews_skipped": skipped,
        "games_duplicate_ids_dropped": duplicates,
    }
    return titled, untitled, notes


def _day_seconds(value: Any, path: Path, line: int) -> int:
    try:
        day = dt.date.fromisoformat(str(value).strip())
    except ValueError:
        raise DataError(
            f"expected a date like '2017-12-17' (YYYY-MM-DD), got {value!r}",
            path=path,
            line=line,
            field="date",
        ) from None
    return (day - _EPOCH).days * 86_400


def _hours(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")
