"""Train/validation/test splits, written into the ``split`` column of interactions."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from whyrec.errors import DataError


def leave_one_out(inter: pd.DataFrame, min_length: int = 3) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Last interaction of each user = test, second-to-last = validation, rest = train.

    ``inter`` must be sorted chronologically per user. Users with fewer than
    ``min_length`` interactions (default 3: at least one training item) keep all of
    them in train and are counted as ``users_train_only``.
    """
    if min_length < 3:
        raise DataError("leave-one-out needs min_length >= 3", field="min_length")
    users = inter["user_idx"].to_numpy()
    n = len(users)
    # position from the end within each user's run
    counts = inter.groupby("user_idx", sort=False)["user_idx"].transform("size").to_numpy()
    rank = inter.groupby("user_idx", sort=False).cumcount(ascending=False).to_numpy()
    split = np.full(n, "train", dtype=object)
    eligible = counts >= min_length
    split[eligible & (rank == 0)] = "test"
    split[eligible & (rank == 1)] = "valid"
    out = inter.assign(split=pd.Categorical(split, categories=["train", "valid", "test"]))
    short_users = int(inter.loc[~eligible, "user_idx"].nunique())
    info = {
        "kind": "leave_one_out",
        "min_length": min_length,
        "users_train_only": short_users,
    }
    return out, info


def temporal_split(
    inter: pd.DataFrame, valid_fraction: float = 0.1, test_fraction: float = 0.1
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A global temporal split: the latest ``test_fraction`` of interactions (by time)
    are test, the ``valid_fraction`` before them validation, the rest train.

    Cut points are timestamps, so every interaction at one instant lands in one split.
    """
    if not (
        0 < valid_fraction < 1 and 0 < test_fraction < 1 and valid_fraction + test_fraction < 1
    ):
        raise DataError(
            f"fractions must be in (0, 1) and sum below 1; got valid={valid_fraction}, "
            f"test={test_fraction}",
            field="valid_fraction/test_fraction",
        )
    ts = inter["timestamp"].to_numpy()
    t_valid = np.quantile(ts, 1 - valid_fraction - test_fraction, method="higher")
    t_test = np.quantile(ts, 1 - test_fraction, method="higher")
    split = np.where(ts >= t_test, "test", np.where(ts >= t_valid, "valid", "train"))
    out = inter.assign(split=pd.Categorical(split, categories=["train", "valid", "test"]))
    train_users = set(out.loc[out["split"] == "train", "user_idx"].unique())
    eval_users = set(out.loc[out["split"] != "train", "user_idx"].unique())
    info = {
        "kind": "temporal",
        "valid_fraction": valid_fraction,
        "test_fraction": test_fraction,
        "valid_from_timestamp": int(t_valid),
        "test_from_timestamp": int(t_test),
        "eval_users_without_train_history": len(eval_users - train_users),
    }
    return out, info
