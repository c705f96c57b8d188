"""Two "team's own" recommenders for bench/adapters.py, written the way a team would
write them outside whyrec: a Python function and a small PyTorch model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch


def follow_model(dataset: Any) -> Any:
    """Items that followed the history's items within three steps in the training
    sequences, log-counted (1/gap), recent history items weighted more. Used through its
    import path ``team_models:follow_model`` (a factory of the dataset)."""
    from whyrec.models.adapters.plain import CallableScorer

    n = dataset.n_items
    follow = np.zeros((n, n), np.float32)
    for seq in dataset.user_sequences(("train",)):
        for gap in (1, 2, 3):
            np.add.at(follow, (seq[:-gap], seq[gap:]), 1.0 / gap)
    weights = np.log1p(follow)

    def scores(histories: list[np.ndarray]) -> np.ndarray:
        out = np.zeros((len(histories), n), np.float32)
        for r, h in enumerate(histories):
            h = np.asarray(h)[-50:]
            recency = 0.5 + np.arange(1, len(h) + 1, dtype=np.float32) / len(h)
            out[r] = recency @ weights[h]
        return out

    return CallableScorer(scores)


class MeanPool(torch.nn.Module):
    """Mean of the history's item vectors → tanh → a linear layer over all items."""

    def __init__(self, n_items: int, dim: int) -> None:
        super().__init__()
        self.items = torch.nn.Embedding(n_items, dim)
        self.out = torch.nn.Linear(dim, n_items)

    def forward(self, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = (items >= 0).to(torch.float32).unsqueeze(-1)
        vec = (self.items(items.clamp(min=0)) * mask).sum(1)
        vec = vec / lengths.clamp(min=1).unsqueeze(-1).to(torch.float32)
        return self.out(torch.tanh(vec))


def train_mean_pool(dataset: Any, path: Path, *, epochs: int = 3, dim: int = 64) -> Path:
    """Next-item cross-entropy on the train split (the last 50 items before each target),
    then ``torch.jit.script`` and save to ``path``."""
    torch.manual_seed(0)
    module = MeanPool(dataset.n_items, dim)
    seqs = [s for s in dataset.user_sequences(("train",)) if len(s) > 1]
    pairs = [(s[max(0, t - 50) : t], s[t]) for s in seqs for t in range(1, len(s))]
    opt = torch.optim.Adam(module.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    for _epoch in range(epochs):
        order = rng.permutation(len(pairs))
        for start in range(0, len(order), 512):
            batch = [pairs[i] for i in order[start : start + 512]]
            width = max(len(h) for h, _ in batch)
            items = torch.full((len(batch), width), -1, dtype=torch.int64)
            for r, (h, _) in enumerate(batch):
                items[r, : len(h)] = torch.from_numpy(np.asarray(h, dtype=np.int64))
            lengths = torch.tensor([len(h) for h, _ in batch])
            target = torch.tensor([int(t) for _, t in batch])
            loss = torch.nn.functional.cross_entropy(module(items, lengths), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
    scripted = torch.jit.script(module.eval())
    scripted.save(str(path))
    return path
