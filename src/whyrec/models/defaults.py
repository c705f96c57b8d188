"""Per-dataset defaults: dense data (MovieLens) and sparse data (Amazon, Steam) differ.

Dense data has long histories and many interactions per item, so it wants a long
window and light dropout; sparse data has short histories and rare items, so it wants
a short window and heavy dropout (SASRec and LANE use 0.2 vs 0.5). The profile is
chosen by dataset name, else by average history length. Values given to a model's
constructor always win over these.
"""

from __future__ import annotations

from typing import Any

from whyrec.data.dataset import Dataset

DENSE_NAMES = ("movielens", "ml-")
SPARSE_NAMES = ("amazon", "beauty", "steam", "yelp")
DENSE_MIN_AVG_LENGTH = 50.0

PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "dense": {
        "sasrec": {"max_len": 200, "dropout": 0.2},
        "sasrec-text": {"max_len": 200, "dropout": 0.2},
        "gru4rec": {"max_len": 200, "dropout": 0.2},
        "lane": {"max_len": 200, "dropout": 0.2},
        "bpr-mf": {"weight_decay": 0.0},
    },
    "sparse": {
        "sasrec": {"max_len": 50, "dropout": 0.5},
        "sasrec-text": {"max_len": 50, "dropout": 0.5},
        "gru4rec": {"max_len": 50, "dropout": 0.5},
        "lane": {"max_len": 50, "dropout": 0.5},
        "bpr-mf": {"weight_decay": 1e-6},
    },
}


# measured on ML-100k with 2 CPU cores (docs/models.md): at equal epochs, windows of 50
# with batches of 32 learn faster than 200 / 128 (more updates per epoch on ~2,000
# windows) and cost less per epoch; no interaction is lost since long histories are cut
# into several windows.
BY_NAME: dict[str, dict[str, dict[str, Any]]] = {
    "movielens-100k": {
        "sasrec": {"max_len": 50, "batch_size": 32},
        "sasrec-text": {"max_len": 50, "batch_size": 32},
        "gru4rec": {"max_len": 50, "batch_size": 32},
        "lane": {"max_len": 50, "batch_size": 32},
    },
}


def dataset_profile(dataset: Dataset) -> str:
    """``"dense"`` or ``"sparse"``: by name when known, else by mean history length."""
    name = dataset.name.lower()
    if name.startswith(DENSE_NAMES):
        return "dense"
    if name.startswith(SPARSE_NAMES):
        return "sparse"
    avg = dataset.n_interactions / max(dataset.n_users, 1)
    return "dense" if avg >= DENSE_MIN_AVG_LENGTH else "sparse"


def defaults_for(model: str, dataset: Dataset) -> dict[str, Any]:
    """Config values for ``model`` on ``dataset`` (empty when the class defaults apply).

    The profile (dense/sparse) first, then values measured for that very dataset.
    """
    out = dict(PROFILES[dataset_profile(dataset)].get(model, {}))
    out.update(BY_NAME.get(dataset.name.lower(), {}).get(model, {}))
    return out
