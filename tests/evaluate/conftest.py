from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from whyrec.data.build import build_dataset
from whyrec.data.raw import RawData


def make_dataset(sequences: dict[str, list[str]], n_items: int, name: str = "tiny-eval"):
    """A leave-one-out dataset whose users saw exactly ``sequences`` (item ids 'i0'..)."""
    rows = [(u, item, t) for u, seq in sequences.items() for t, item in enumerate(seq)]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    inter["timestamp"] = inter["timestamp"].astype("int64")
    inter["rating"] = np.nan
    items = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(n_items)],
            "title": [f"Item {i}" for i in range(n_items)],
        }
    )
    return build_dataset(RawData(inter, items), name=name, split="loo")


@pytest.fixture()
def small_ds():
    # 3 users over 6 items; the last item of each sequence is the test target,
    # the one before it the validation target.
    return make_dataset(
        {
            "a": ["i0", "i1", "i2", "i3"],  # test target i3, history i0 i1 i2
            "b": ["i5", "i4", "i0"],  # test target i0, history i5 i4
            "c": ["i1", "i2", "i5", "i4", "i1"],  # repeat: test target i1 is also in history
        },
        n_items=6,
    )
