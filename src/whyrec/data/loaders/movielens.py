"""MovieLens 100k (``u.data`` + ``u.item``) and 1M (``ratings.dat`` + ``movies.dat``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from whyrec.data.raw import RawData, describe_source
from whyrec.errors import DataError

ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip


def _existing(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataError(f"{what} not found", path=path)
    if path.is_file() and path.stat().st_size == 0:
        raise DataError(f"{what} is empty", path=path)
    return path


def _read_lines(path: Path, encoding: str) -> list[str]:
    try:
        return path.read_text(encoding=encoding).splitlines()
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise DataError(
            f"cannot decode byte {exc.object[exc.start]:#x} as {encoding}; "
            "MovieLens files are latin-1 (pass encoding=...)",
            path=path,
            line=line,
        ) from None


def _split_fields(
    lines: list[str], path: Path, sep: str, names: list[str], min_fields: int | None = None
) -> list[list[str]]:
    rows = []
    need = min_fields or len(names)
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.split(sep)
        if len(parts) < need:
            raise DataError(
                f"expected {need} {sep!r}-separated fields ({', '.join(names[:need])}), "
                f"found {len(parts)}",
                path=path,
                line=n,
            )
        rows.append(parts)
    if not rows:
        raise DataError("no data lines", path=path)
    return rows


def _int_column(rows: list[list[str]], i: int, name: str, path: Path) -> np.ndarray:
    out = np.empty(len(rows), dtype=np.int64)
    for n, row in enumerate(rows):
        try:
            out[n] = int(row[i].strip())
        except ValueError:
            raise DataError(
                f"expected an integer, got {row[i]!r}", path=path, line=n + 1, field=name
            ) from None
    return out


def _ratings(rows: list[list[str]], path: Path) -> pd.DataFrame:
    users = [r[0].strip() for r in rows]
    items = [r[1].strip() for r in rows]
    rating = _int_column(rows, 2, "rating", path).astype(np.float32)
    ts = _int_column(rows, 3, "timestamp", path)
    return pd.DataFrame({"user_id": users, "item_id": items, "timestamp": ts, "rating": rating})


@dataclass(frozen=True)
class _TextRelease:
    """A MovieLens text release: a directory with a ratings file (``sep``-separated user,
    item, rating and timestamp, called ``columns`` in errors) and an items file."""

    label: str
    ratings_file: str
    items_file: str
    sep: str
    columns: tuple[str, ...]

    def read_ratings(self, directory: str | Path, encoding: str) -> tuple[pd.DataFrame, Path, Path]:
        """The ratings, and the paths of the ratings and the items file (both must exist)."""
        directory = Path(directory)
        _existing(directory, f"{self.label} directory")
        ratings_path = _existing(directory / self.ratings_file, self.ratings_file)
        items_path = _existing(directory / self.items_file, self.items_file)
        lines = _read_lines(ratings_path, encoding)
        rows = _split_fields(lines, ratings_path, self.sep, list(self.columns))
        return _ratings(rows, ratings_path), ratings_path, items_path


_ML_100K = _TextRelease(
    "MovieLens-100k", "u.data", "u.item", "\t", ("user", "item", "rating", "timestamp")
)
_ML_1M = _TextRelease(
    "MovieLens-1M", "ratings.dat", "movies.dat", "::", ("UserID", "MovieID", "Rating", "Timestamp")
)


def load_movielens_100k(directory: str | Path, *, encoding: str = "latin-1") -> RawData:
    """Read ``u.data`` (tab-separated ratings) and ``u.item`` (pipe-separated, latin-1).

    The 19 genre flags become one ``genres`` text field ("Action, Comedy").
    """
    inter, data_path, item_path = _ML_100K.read_ratings(directory, encoding)
    names = ["movie id", "title", "release date", "video release date", "IMDb URL", *ML100K_GENRES]
    item_rows = _split_fields(_read_lines(item_path, encoding), item_path, "|", names)
    ids, titles, genres = [], [], []
    for n, row in enumerate(item_rows, start=1):
        flags = row[5:24]
        if any(f.strip() not in ("0", "1") for f in flags):
            raise DataError("genre flags must be 0 or 1", path=item_path, line=n, field="genres")
        ids.append(row[0].strip())
        titles.append(row[1].strip())
        genres.append(
            ", ".join(g for g, f in zip(ML100K_GENRES, flags, strict=True) if f.strip() == "1")
        )
    items = pd.DataFrame({"item_id": ids, "title": titles, "genres": genres})
    return _finish(inter, items, "movielens-100k", {"ratings": data_path, "items": item_path})


def load_movielens_1m(directory: str | Path, *, encoding: str = "latin-1") -> RawData:
    """Read ``ratings.dat`` and ``movies.dat`` (``::``-separated, latin-1)."""
    inter, rpath, mpath = _ML_1M.read_ratings(directory, encoding)
    mrows = _split_fields(_read_lines(mpath, encoding), mpath, "::", ["MovieID", "Title", "Genres"])
    items = pd.DataFrame(
        {
            "item_id": [r[0].strip() for r in mrows],
            # a title may itself contain '::' in principle; genres are the last field
            "title": ["::".join(r[1:-1]).strip() for r in mrows],
            "genres": [r[-1].strip().replace("|", ", ") for r in mrows],
        }
    )
    return _finish(inter, items, "movielens-1m", {"ratings": rpath, "items": mpath})


def _finish(inter: pd.DataFrame, items: pd.DataFrame, kind: str, files: dict) -> RawData:
    notes: dict[str, int] = {}
    empty = items["title"].str.len() == 0
    if empty.any():
        notes["items_without_title_dropped"] = int(empty.sum())
        items = items[~empty]
    return RawData(
        interactions=inter,
        items=items.reset_index(drop=True),
        source=describe_source(kind, files),
        notes=notes,
    )


def load_movielens_100k_parquet(directory: str | Path) -> RawData:
    """Read the MovieLens-100k Parquet files extracted by :mod:`whyrec.data.fetch`.

    They hold the same columns as ``u.data``/``u.item`` (``movie_id``, ``movie_title``,
    one 0/1 column per genre), in the original file order.
    """
    directory = Path(directory)
    data_path = _existing(directory / "data.parquet", "MovieLens-100k ratings")
    item_path = _existing(directory / "items.parquet", "MovieLens-100k items")
    data = pd.read_parquet(data_path)
    items = pd.read_parquet(item_path)
    need = {"user_id", "movie_id", "rating", "timestamp"}
    if missing := need - set(data.columns):
        raise DataError(
            f"columns {sorted(missing)} missing; found {list(data.columns)}", path=data_path
        )
    need_items = {"movie_id", "movie_title", *ML100K_GENRES}
    if missing := need_items - set(items.columns):
        raise DataError(
            f"columns {sorted(missing)} missing; found {list(items.columns)}", path=item_path
        )
    inter = pd.DataFrame(
        {
            "user_id": data["user_id"].astype(str),
            "item_id": data["movie_id"].astype(str),
            "timestamp": data["timestamp"].astype("int64"),
            "rating": data["rating"].astype("float32"),
        }
    )
    flags = items[ML100K_GENRES].to_numpy() == 1
    genres = [", ".join(g for g, f in zip(ML100K_GENRES, row, strict=True) if f) for row in flags]
    catalogue = pd.DataFrame(
        {
            "item_id": items["movie_id"].astype(str),
            "title": items["movie_title"].astype(str).str.strip(),
            "genres": genres,
        }
    )
    from whyrec.data.fetch import WHEEL_REQUIREMENT

    raw = _finish(inter, catalogue, "movielens-100k", {"ratings": data_path, "items": item_path})
    raw.source["origin"] = WHEEL_REQUIREMENT
    return raw
