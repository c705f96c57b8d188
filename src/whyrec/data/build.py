"""Turn a loader's :class:`RawData` into a :class:`Dataset`: clean, filter, map ids, split."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import pandas as pd

from whyrec.data.dataset import Dataset
from whyrec.data.ids import clean_ids
from whyrec.data.preprocess import drop_duplicates, k_core, merge_same_titles, sort_chronologically
from whyrec.data.raw import RawData
from whyrec.data.split import leave_one_out, temporal_split
from whyrec.errors import DataError

SplitKind = Literal["loo", "temporal", "none"]


def _assign_ids(
    inter: pd.DataFrame, items: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Dense ids for the interactions left, ordered chronologically: ``(interactions,
    items, users)``."""
    # dense ids: users by first appearance order of sorted source ids, items by catalogue
    items = items[items["item_id"].isin(inter["item_id"].unique())].reset_index(drop=True)
    items.insert(0, "item_idx", np.arange(len(items), dtype=np.int32))
    user_ids = _natural_sort(inter["user_id"].unique())
    users = pd.DataFrame(
        {"user_idx": np.arange(len(user_ids), dtype=np.int32), "user_id": user_ids}
    )
    inter["user_idx"] = inter["user_id"].map(
        dict(zip(users["user_id"], users["user_idx"], strict=True))
    )
    inter["item_idx"] = inter["item_id"].map(
        dict(zip(items["item_id"], items["item_idx"], strict=True))
    )
    inter = sort_chronologically(inter)
    inter = (
        inter[["user_idx", "item_idx", "timestamp", "rating"]]
        .astype(
            {"user_idx": "int32", "item_idx": "int32", "timestamp": "int64", "rating": "float32"}
        )
        .reset_index(drop=True)
    )
    return inter, items, users


def _split(
    inter: pd.DataFrame,
    split: str,
    min_length: int,
    valid_fraction: float,
    test_fraction: float,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The interactions with their ``split`` column, and what the split did."""
    if split == "loo":
        inter, split_info = leave_one_out(inter, min_length=min_length)
    elif split == "temporal":
        inter, split_info = temporal_split(inter, valid_fraction, test_fraction)
    elif split == "none":
        inter = inter.assign(
            split=pd.Categorical(["train"] * len(inter), categories=["train", "valid", "test"])
        )
        split_info = {"kind": "none"}
    else:
        raise DataError(f"unknown split {split!r}; expected loo, temporal or none", field="split")
    return inter, split_info


def build_dataset(
    raw: RawData,
    *,
    name: str,
    user_k: int = 0,
    item_k: int = 0,
    kcore: Literal["iterative", "single"] = "iterative",
    merge_titles: bool = False,
    split: SplitKind = "loo",
    min_length: int = 3,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
) -> Dataset:
    """Clean, filter and split ``raw`` into a dataset with dense internal ids.

    Steps, each recorded in the manifest: drop interactions with items missing from the
    catalogue, drop exact duplicates, optionally merge items that share a title, k-core
    filter, assign ids, order chronologically, split.
    """
    inter = raw.interactions.copy()
    items = raw.items.copy()
    if inter.empty:
        raise DataError(f"no interactions loaded for dataset {name!r}")
    # every loader's output passes the same id rule (whyrec.data.ids); loaders that read
    # files report bad ids with their line first, this catches any other RawData
    for table, frame, col in (
        ("interactions", inter, "user_id"),
        ("interactions", inter, "item_id"),
        ("items", items, "item_id"),
    ):
        frame[col] = clean_ids(frame[col], _row_error(table, col))[0].to_numpy()
    items["title"] = items["title"].map(_title_text)
    inter["_row"] = np.arange(len(inter), dtype=np.int64)
    notes: dict[str, Any] = dict(raw.notes)

    dup_items = int(items.duplicated("item_id").sum())
    if dup_items:
        items = items.drop_duplicates("item_id", keep="first")
        notes["catalogue_duplicate_ids_dropped"] = dup_items
    known = inter["item_id"].isin(items["item_id"])
    if (~known).any():
        notes["interactions_without_catalogue_item_dropped"] = int((~known).sum())
        inter = inter[known]
    inter, n_dup = drop_duplicates(inter)
    notes["duplicate_interactions_dropped"] = n_dup

    filters: dict[str, Any] = {"merge_titles": merge_titles}
    if merge_titles:
        inter, items, merged = merge_same_titles(inter, items)
        filters["items_merged_by_title"] = merged
        # a user may now hold the same (item, timestamp) twice
        inter, n_dup2 = drop_duplicates(inter)
        notes["duplicate_interactions_dropped"] += n_dup2
    inter, passes = k_core(inter, user_k, item_k, iterative=(kcore == "iterative"))
    filters.update({"user_k": user_k, "item_k": item_k, "kcore": kcore, "kcore_passes": passes})
    if inter.empty:
        raise DataError(f"no interactions left after filtering (user_k={user_k}, item_k={item_k})")

    inter, items, users = _assign_ids(inter, items)
    inter, split_info = _split(inter, split, min_length, valid_fraction, test_fraction)

    manifest = {
        "name": name,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "source": raw.source,
        "filters": filters,
        "loading_notes": notes,
        "split": split_info,
        "has_ratings": bool(inter["rating"].notna().any()),
        "text_fields": [c for c in items.columns if c not in ("item_idx", "item_id", "title")],
    }
    return Dataset(interactions=inter, items=items, users=users, manifest=manifest)


def _row_error(table: str, column: str) -> Callable[[int, str], DataError]:
    def error(i: int, why: str) -> DataError:
        return DataError(f"{table} row {i + 1}: {why}; ids are strings or integers", field=column)

    return error


def _title_text(value: Any) -> str:
    """A title as text; None/NaN become '' (the item has no title), bytes are an error."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, bytes | bytearray):
        raise DataError(f"title is bytes ({value[:40]!r}); expected text", field="title")
    return str(value).strip()


def _natural_sort(values: np.ndarray) -> list[str]:
    """Numeric ids in numeric order (2 < 10), other ids lexicographically after them."""
    vals = [str(v) for v in values]
    return sorted(vals, key=lambda s: (0, int(s), "") if s.isdigit() else (1, 0, s))
