import numpy as np
import pandas as pd
import pytest

from whyrec.data import RawData, build_dataset
from whyrec.errors import DataError


def dataset(split="loo", **kw):
    # user u has u+1 interactions at times 10*k + u
    rows = [(str(u), f"i{k}", 10 * k + u) for u in range(5) for k in range(u + 1)]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    items = pd.DataFrame({"item_id": [f"i{k}" for k in range(5)], "title": list("ABCDE")})
    return build_dataset(RawData(inter, items), name="t", split=split, **kw)


def test_leave_one_out_last_is_test_second_last_is_valid():
    ds = dataset()
    for u in range(5):
        rows = ds.interactions[ds.interactions["user_idx"] == ds.user_index(u)]
        expected = ["train"] * (u + 1)
        if u + 1 >= 3:
            expected[-1], expected[-2] = "test", "valid"
        assert rows["split"].astype(str).tolist() == expected
    assert ds.manifest["split"]["users_train_only"] == 2  # users 0 and 1


def test_users_train_only_counts_short_users_exactly():
    ds = dataset(min_length=4)
    assert ds.manifest["split"]["users_train_only"] == 3
    ds3 = dataset(min_length=3)
    assert ds3.manifest["split"]["users_train_only"] == 2


def test_histories_for_valid_and_test():
    ds = dataset()
    users, hist, targets = ds.histories_for("test")
    u4 = ds.user_index(4)
    i = list(users).index(u4)
    assert [ds.titles[x] for x in hist[i]] == list("ABCD")
    assert ds.titles[targets[i]] == "E"
    users, hist, targets = ds.histories_for("valid")
    i = list(users).index(u4)
    assert [ds.titles[x] for x in hist[i]] == list("ABC")
    assert ds.titles[targets[i]] == "D"


def test_min_length_below_three_is_rejected():
    with pytest.raises(DataError, match="min_length >= 3"):
        dataset(min_length=2)


def test_temporal_split_cuts_by_time():
    ds = dataset(split="temporal", valid_fraction=0.2, test_fraction=0.2)
    info = ds.manifest["split"]
    ts = ds.interactions["timestamp"].to_numpy()
    sp = ds.interactions["split"].astype(str).to_numpy()
    assert (ts[sp == "test"] >= info["test_from_timestamp"]).all()
    assert (ts[sp == "train"] < info["valid_from_timestamp"]).all()
    assert np.isin(sp, ["train", "valid", "test"]).all()
    assert (sp == "test").sum() >= 1 and (sp == "valid").sum() >= 1


def test_temporal_fractions_validated():
    with pytest.raises(DataError, match="fractions"):
        dataset(split="temporal", valid_fraction=0.6, test_fraction=0.5)
