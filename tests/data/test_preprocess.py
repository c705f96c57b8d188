import numpy as np
import pandas as pd
import pytest

from whyrec.data import RawData, build_dataset
from whyrec.data.preprocess import k_core
from whyrec.errors import DataError


def frame(pairs):
    return pd.DataFrame(
        {
            "user_id": [u for u, _ in pairs],
            "item_id": [i for _, i in pairs],
            "timestamp": np.arange(len(pairs), dtype=np.int64),
        }
    )


# a chain where one pass is not enough: dropping item c (1 user) leaves user z with 1 item
CHAIN = [
    ("x", "a"), ("x", "b"), ("y", "a"), ("y", "b"), ("z", "a"), ("z", "c"),
    ("w", "b"), ("w", "d"), ("v", "d"),
]  # fmt: skip


def test_iterative_k_core_reaches_a_fixed_point():
    out, passes = k_core(frame(CHAIN), user_k=2, item_k=2, iterative=True)
    assert passes >= 2
    assert out["user_id"].value_counts().min() >= 2
    assert out["item_id"].value_counts().min() >= 2
    assert sorted(out["user_id"].unique()) == ["x", "y"]


def test_single_pass_k_core_is_lane_variant():
    out, passes = k_core(frame(CHAIN), user_k=2, item_k=2, iterative=False)
    assert passes == 1
    # items first (c drops; d has 2), then users (z now has 1 item, v has 1) once
    assert sorted(out["user_id"].unique()) == ["w", "x", "y"]
    # w keeps item d although d now has a single user: single pass does not re-check
    assert out["item_id"].value_counts()["d"] == 1


def test_no_k_core_is_identity():
    df = frame(CHAIN)
    out, passes = k_core(df, 0, 0)
    assert passes == 0 and out is df


def _raw(inter, items):
    return RawData(interactions=inter, items=items)


def test_duplicates_unknown_items_and_title_merge_are_counted():
    inter = pd.DataFrame(
        {
            "user_id": ["1", "1", "1", "2", "2", "2", "2"],
            "item_id": ["a", "a", "b", "c", "b", "zz", "a"],
            "timestamp": [1, 1, 2, 1, 2, 3, 4],
        }
    )
    items = pd.DataFrame({"item_id": ["a", "b", "c"], "title": ["Heat", "Alien", "Heat"]})
    ds = build_dataset(_raw(inter, items), name="t", merge_titles=True, split="none")
    notes = ds.manifest["loading_notes"]
    assert notes["duplicate_interactions_dropped"] == 1
    assert notes["interactions_without_catalogue_item_dropped"] == 1
    assert ds.manifest["filters"]["items_merged_by_title"] == 1
    assert sorted(ds.titles) == ["Alien", "Heat"]
    # user 2's 'c' is now 'a' (same title)
    u2 = ds.user_sequences()[ds.user_index("2")]
    assert [ds.titles[i] for i in u2] == ["Heat", "Alien", "Heat"]


def test_filtering_everything_away_is_an_error():
    inter = frame([("x", "a"), ("y", "b")])
    items = pd.DataFrame({"item_id": ["a", "b"], "title": ["A", "B"]})
    with pytest.raises(DataError, match="no interactions left"):
        build_dataset(_raw(inter, items), name="t", user_k=5)


def test_user_ids_in_natural_order():
    inter = frame([("10", "a"), ("2", "a"), ("1", "a"), ("bob", "a")])
    items = pd.DataFrame({"item_id": ["a"], "title": ["A"]})
    ds = build_dataset(_raw(inter, items), name="t", split="none")
    assert ds.users["user_id"].tolist() == ["1", "2", "10", "bob"]
