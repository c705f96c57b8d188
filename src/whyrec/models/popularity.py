"""Most-popular items: the floor every personalised model must clear."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from whyrec.data.dataset import Dataset
from whyrec.models.base import ModelConfig, Recommender


class Popularity(Recommender):
    """Scores every item by its number of training interactions, for everyone."""

    name = "popularity"
    config_class = ModelConfig
    has_attribution = False  # the same scores whatever the history

    def _fit(self, dataset: Dataset, **_: Any) -> None:
        train = dataset.interactions.loc[dataset.interactions["split"] == "train", "item_idx"]
        self.counts = np.bincount(train.to_numpy(), minlength=dataset.n_items).astype(np.float32)
        self.training = {"train_interactions": int(self.counts.sum())}

    def score_batch(
        self, histories: Sequence[np.ndarray], users: np.ndarray | None = None
    ) -> np.ndarray:
        return np.broadcast_to(self.counts, (len(histories), self.n_items)).copy()

    def _save_state(self, directory: Path) -> None:
        np.save(directory / "counts.npy", self.counts)

    def _load_state(self, directory: Path) -> None:
        self.counts = np.load(directory / "counts.npy")
        if self.counts.shape != (self.n_items,):
            raise ValueError(
                f"counts.npy has shape {self.counts.shape}, expected ({self.n_items},)"
            )
