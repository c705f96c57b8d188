from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from whyrec.data.build import build_dataset
from whyrec.data.raw import RawData

N_ITEMS = 30

# unit-test models are tiny: one thread avoids OpenMP overhead and contention on shared CI
os.environ.setdefault("WHYREC_THREADS", "1")


def pattern_dataset(n_users: int = 80, name: str = "tiny-seq", seed: int = 0):
    """Users walk the item ring with a personal step of 1 or 2: next = (prev + step) % 30.

    Popularity is flat, so only a model that reads the sequence can predict the test
    item; this makes "a sequence model beats popularity" a test that can fail.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        step = 1 + (u % 2)
        item = int(rng.integers(N_ITEMS))
        length = int(rng.integers(8, 16))
        for t in range(length):
            rows.append((f"u{u}", f"m{item}", 1_000 + 10 * t, 4.0))
            item = (item + step) % N_ITEMS
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "rating"])
    items = pd.DataFrame(
        {
            "item_id": [f"m{i}" for i in range(N_ITEMS)],
            "title": [f"Film number {i} ({1990 + i})" for i in range(N_ITEMS)],
            "genres": ["Comedy" if i % 2 else "Drama" for i in range(N_ITEMS)],
        }
    )
    return build_dataset(RawData(inter, items), name=name, split="loo")


@pytest.fixture(scope="session")
def seq_ds():
    return pattern_dataset()


@pytest.fixture(scope="session")
def other_ds():
    return pattern_dataset(name="tiny-other", seed=1)


# small, fast settings per model for unit tests
FAST = {
    "popularity": {},
    "bpr-mf": {"dim": 16, "epochs": 30, "batch_size": 256, "lr": 0.02, "patience": 30},
    "sasrec": {
        "dim": 32,
        "max_len": 16,
        "epochs": 25,
        "patience": 25,
        "batch_size": 32,
        "lr": 0.005,
        "dropout": 0.1,
    },
    "sasrec-text": {
        "dim": 32,
        "max_len": 16,
        "epochs": 25,
        "patience": 25,
        "batch_size": 32,
        "lr": 0.005,
        "dropout": 0.1,
        "encoder": {"kind": "hashing", "dim": 48},
    },
    "gru4rec": {
        "dim": 32,
        "max_len": 16,
        "epochs": 25,
        "patience": 25,
        "batch_size": 32,
        "lr": 0.005,
        "dropout": 0.1,
    },
}


@pytest.fixture(scope="session")
def fitted(seq_ds):
    """One fitted instance of every model (shared: fitting is the slow part)."""
    from whyrec.models import create_model

    return {
        name: create_model(name, **cfg).fit(seq_ds, progress=False) for name, cfg in FAST.items()
    }
