"""Cleaning, title merging, k-core filtering and chronological ordering."""

from __future__ import annotations

import pandas as pd


def drop_duplicates(inter: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Remove exact repeats of (user, item, timestamp); return the count removed."""
    before = len(inter)
    out = inter.drop_duplicates(subset=["user_id", "item_id", "timestamp"], keep="first")
    return out, before - len(out)


def merge_same_titles(
    inter: pd.DataFrame, items: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Key items by title, as LANE does: items sharing a title become one item.

    The surviving id is the first occurrence in catalogue order; text fields come from
    it too. Returns the remapped tables and the number of items merged away.
    """
    canon = items.drop_duplicates(subset=["title"], keep="first")
    mapping = items[["item_id", "title"]].merge(
        canon[["item_id", "title"]].rename(columns={"item_id": "canonical"}), on="title"
    )
    to_canon = dict(zip(mapping["item_id"], mapping["canonical"], strict=True))
    inter = inter.assign(item_id=inter["item_id"].map(to_canon).fillna(inter["item_id"]))
    return inter, canon.reset_index(drop=True), len(items) - len(canon)


def k_core(
    inter: pd.DataFrame, user_k: int = 0, item_k: int = 0, *, iterative: bool = True
) -> tuple[pd.DataFrame, int]:
    """Keep users with >= ``user_k`` and items with >= ``item_k`` interactions.

    ``iterative=True`` repeats until both conditions hold together (the usual k-core);
    ``iterative=False`` is LANE's single pass: items first, then users, once. Returns
    the filtered frame and the number of passes made.
    """
    if user_k <= 1 and item_k <= 1:
        return inter, 0
    passes = 0
    while True:
        passes += 1
        before = len(inter)
        if item_k > 1:
            counts = inter["item_id"].map(inter["item_id"].value_counts())
            inter = inter[counts >= item_k]
        if user_k > 1:
            counts = inter["user_id"].map(inter["user_id"].value_counts())
            inter = inter[counts >= user_k]
        if not iterative or len(inter) == before:
            return inter, passes


def sort_chronologically(inter: pd.DataFrame) -> pd.DataFrame:
    """Order by user, then timestamp; ties keep the order of the source file.

    The source order is recorded in ``_row`` by the builder, so the result does not
    depend on the sort algorithm.
    """
    return inter.sort_values(["user_idx", "timestamp", "_row"], kind="mergesort")
