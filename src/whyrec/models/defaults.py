"""Per-dataset defaults: dense data (MovieLens) and sparse data (Amazon, Steam) differ.

Dense data has long histories and many interactions per item, so it wants a long
window and light dropout; sparse data has short histories and rare items, so it wants
a short window and heavy dropout (SASRec and LANE use 0.2 vs 0.5). The profile is
chosen by dataset name, else by average history length. Values given to a model's
constructor always win over these.

The loss of the sequence models follows the catalogue: full softmax (``ce``) costs
O(catalogue) per training position, so from :data:`AUTO_GBCE_MIN_ITEMS` items on they
default to gSASRec's ``gbce`` with 256 negatives per training window, whose cost does
not grow with the catalogue (:func:`default_loss`).
"""

from __future__ import annotations

from typing import Any

from whyrec.data.dataset import Dataset

DENSE_NAMES = ("movielens", "ml-")
SPARSE_NAMES = ("amazon", "beauty", "steam", "yelp")
DENSE_MIN_AVG_LENGTH = 50.0

SEQUENCE_MODELS = ("sasrec", "sasrec-text", "gru4rec", "lane")
# ML-100k (1,682 items) and ML-1M (3,706) stay on CE, the most accurate loss there;
# at 10k items CE already made a SASRec epoch of a 2M-interaction probe take 401 s on
# 2 cores, and its per-batch cost grows linearly with the catalogue (docs/models.md)
AUTO_GBCE_MIN_ITEMS = 5_000


def _each_sequence_model(settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``settings`` for every model of ``SEQUENCE_MODELS`` (a copy each)."""
    return {m: dict(settings) for m in SEQUENCE_MODELS}


PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "dense": {
        **_each_sequence_model({"max_len": 200, "dropout": 0.2}),
        "bpr-mf": {"weight_decay": 0.0},
    },
    "sparse": {
        **_each_sequence_model({"max_len": 50, "dropout": 0.5}),
        "bpr-mf": {"weight_decay": 1e-6},
    },
}


# measured on ML-100k with 2 CPU cores (docs/models.md): at equal epochs, windows of 50
# with batches of 32 learn faster than 200 / 128 (more updates per epoch on ~2,000
# windows) and cost less per epoch; no interaction is lost since long histories are cut
# into several windows.
BY_NAME: dict[str, dict[str, dict[str, Any]]] = {
    "movielens-100k": _each_sequence_model({"max_len": 50, "batch_size": 32}),
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


def default_loss(n_items: int) -> str:
    """The sequence models' loss for a catalogue of ``n_items``: ``ce`` or ``gbce``."""
    return "gbce" if n_items >= AUTO_GBCE_MIN_ITEMS else "ce"


def loss_choice(n_items: int, given: bool) -> str:
    """Why a run uses its loss, for the training record."""
    if given:
        return "given"
    side = ">=" if n_items >= AUTO_GBCE_MIN_ITEMS else "<"
    return f"automatic: {n_items:,} items {side} {AUTO_GBCE_MIN_ITEMS:,}"


def defaults_for(model: str, dataset: Dataset) -> dict[str, Any]:
    """Config values for ``model`` on ``dataset`` (empty when the class defaults apply).

    The profile (dense/sparse) first, then values measured for that very dataset, then
    the loss by catalogue size (only when it differs from the class default ``ce``).
    """
    out = dict(PROFILES[dataset_profile(dataset)].get(model, {}))
    out.update(BY_NAME.get(dataset.name.lower(), {}).get(model, {}))
    if model in SEQUENCE_MODELS and default_loss(dataset.n_items) != "ce":
        out["loss"] = default_loss(dataset.n_items)
    return out
