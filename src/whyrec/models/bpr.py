"""BPR-MF (Rendle et al., UAI 2009): matrix factorisation trained on pairwise preferences."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from whyrec.data.dataset import Dataset
from whyrec.errors import ModelError
from whyrec.metrics import mask_history, ndcg_at_k, rank_of_target
from whyrec.models.base import ModelConfig
from whyrec.models.training import LoopTrained, configure_threads


@dataclass
class BPRConfig(ModelConfig):
    dim: int = 64
    epochs: int = 200
    batch_size: int = 4096
    lr: float = 1e-2
    weight_decay: float = 0.0
    l2: float = 1e-4  # penalty on the embeddings used in each batch (classic BPR regularisation)
    patience: int = 10
    eval_every: int = 1
    fold_in_steps: int = 100  # for histories of unknown users


class MFModule(nn.Module):
    def __init__(self, n_users: int, n_items: int, dim: int) -> None:
        super().__init__()
        self.users = nn.Embedding(n_users, dim)
        self.items = nn.Embedding(n_items, dim)
        self.bias = nn.Embedding(n_items, 1)
        for emb in (self.users, self.items):
            nn.init.normal_(emb.weight, std=0.1)
        nn.init.zeros_(self.bias.weight)

    def scores(self, user_vecs: torch.Tensor) -> torch.Tensor:
        return user_vecs @ self.items.weight.T + self.bias.weight.T


class BPRTask:
    def __init__(self, module: MFModule, dataset: Dataset, config: BPRConfig) -> None:
        self.module, self.config = module, config
        train = dataset.interactions[dataset.interactions["split"] == "train"]
        self.u = torch.from_numpy(train["user_idx"].to_numpy().astype(np.int64))
        self.i = torch.from_numpy(train["item_idx"].to_numpy().astype(np.int64))
        self.n_items = dataset.n_items
        self.keys = torch.unique(self.u * self.n_items + self.i)  # sorted (user, item) pairs
        users, histories, targets = dataset.histories_for("valid")
        self.val_users, self.val_histories, self.val_targets = users, histories, targets

    def batches(self, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self.u), generator=generator)
        for start in range(0, len(order), self.config.batch_size):
            idx = order[start : start + self.config.batch_size]
            yield self.u[idx], self.i[idx]

    def negatives(self, users: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Items each user has not interacted with in training (re-drawn on collision)."""
        neg = torch.randint(0, self.n_items, users.shape, generator=generator)
        todo = torch.arange(len(users))
        for _ in range(20):  # heavy users own ~40% of items: a few rounds are needed
            keys = users[todo] * self.n_items + neg[todo]
            pos = torch.searchsorted(self.keys, keys).clamp(max=len(self.keys) - 1)
            todo = todo[self.keys[pos] == keys]
            if not len(todo):
                break
            neg[todo] = torch.randint(0, self.n_items, (len(todo),), generator=generator)
        return neg

    def loss(
        self, batch: tuple[torch.Tensor, torch.Tensor], generator: torch.Generator
    ) -> torch.Tensor:
        users, pos = batch
        neg = self.negatives(users, generator)
        m = self.module
        u, p, n = m.users(users), m.items(pos), m.items(neg)
        diff = (u * (p - n)).sum(-1) + (m.bias(pos) - m.bias(neg)).squeeze(-1)
        reg = self.config.l2 * (u.pow(2).sum(-1) + p.pow(2).sum(-1) + n.pow(2).sum(-1)).mean()
        return F.softplus(-diff).mean() + reg

    def validate(self) -> float:
        users = torch.from_numpy(self.val_users)
        scores = self.module.scores(self.module.users(users)).numpy().copy()
        mask_history(scores, self.val_histories, self.val_targets)
        return ndcg_at_k(rank_of_target(scores, self.val_targets), 10)


class BPRMF(LoopTrained):
    """Matrix factorisation with item biases, trained with the BPR pairwise loss.

    Known users are scored with their learned vectors. A history of an unknown user is
    *folded in*: a fresh user vector is fitted to it with the same BPR loss while item
    vectors stay frozen (``fold_in_steps`` Adam steps, seeded).
    """

    name = "bpr-mf"
    config_class = BPRConfig
    config: BPRConfig

    def build_module(self, dataset: Dataset) -> MFModule:
        return MFModule(dataset.n_users, dataset.n_items, self.config.dim)

    def make_task(self, dataset: Dataset) -> BPRTask:
        return BPRTask(self.module, dataset, self.config)

    def score_batch(
        self, histories: Sequence[np.ndarray], users: np.ndarray | None = None
    ) -> np.ndarray:
        configure_threads()
        with torch.no_grad():
            if users is not None:
                vecs = self.module.users(torch.as_tensor(np.asarray(users), dtype=torch.long))
            else:
                vecs = self.fold_in(histories)
            return self.module.scores(vecs).numpy().astype(np.float32)

    def fold_in(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        """User vectors ``(B, dim)`` fitted to ``histories`` with frozen item vectors."""
        if any(len(h) == 0 for h in histories):
            raise ModelError("cannot fold in an empty history")
        m = self.module
        gen = torch.Generator().manual_seed(self.config.seed)
        n_pos = 256
        pos = torch.stack(
            [
                torch.as_tensor(np.asarray(h), dtype=torch.long)[
                    torch.randint(0, len(h), (n_pos,), generator=gen)
                ]
                for h in histories
            ]
        )
        seen = [set(np.asarray(h).tolist()) for h in histories]
        items_w, bias_w = m.items.weight.detach(), m.bias.weight.detach().squeeze(-1)
        u = torch.zeros(len(histories), self.config.dim, requires_grad=True)
        opt = torch.optim.Adam([u], lr=0.05)
        with torch.enable_grad():
            for _ in range(self.config.fold_in_steps):
                neg = torch.randint(0, self.n_items, pos.shape, generator=gen)
                for row, s in enumerate(seen):
                    clash = torch.tensor([int(x) in s for x in neg[row].tolist()])
                    if clash.any():  # rare: history items are not negatives
                        neg[row, clash] = torch.randint(
                            0, self.n_items, (int(clash.sum()),), generator=gen
                        )
                diff = torch.einsum("bd,bnd->bn", u, items_w[pos] - items_w[neg])
                diff = diff + bias_w[pos] - bias_w[neg]
                loss = F.softplus(-diff).mean() + self.config.l2 * u.pow(2).sum(-1).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        return u.detach()

    def _save_state(self, directory: Path) -> None:
        torch.save(self.module.state_dict(), directory / "state.pt")

    def _load_state(self, directory: Path) -> None:
        state = torch.load(directory / "state.pt", map_location="cpu", weights_only=True)
        self.module = MFModule(self.n_users, self.n_items, self.config.dim)
        self.module.load_state_dict(state)
        self.module.eval()
