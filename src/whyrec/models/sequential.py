"""Sequence recommenders (SASRec, GRU4Rec, ...) on one training task and one loop.

A subclass only says how to build its :class:`~whyrec.models.backbones.SequentialModule`
(:meth:`SequentialRecommender.build_module`); training windows, losses, validation,
scoring, save and load are shared. LANE subclasses this the same way, returning a
module whose ``query`` attends over the user's preference embeddings.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from whyrec.data.dataset import Dataset
from whyrec.errors import ConfigError, ModelError
from whyrec.metrics import mask_history, ndcg_at_k, rank_of_target
from whyrec.models.backbones import SequentialModule
from whyrec.models.base import ModelConfig
from whyrec.models.defaults import loss_choice
from whyrec.models.losses import LOSSES, gbce_window_loss, initial_logit_bias, next_item_loss
from whyrec.models.training import LoopTrained, configure_threads

STATE_FILE = "state.pt"
VALID_BATCH = 1024  # users scored at once during validation
GBCE_NEGATIVES = ("shared", "window", "position")  # how gbce draws (models/losses.py)


@dataclass
class SequentialConfig(ModelConfig):
    """Shared settings of sequence models (see docs/models.md for the defaults' reasons)."""

    dim: int = 64
    max_len: int = 200
    dropout: float = 0.2
    loss: str = "ce"  # from 5,000 items on, fit() defaults to gbce (models/defaults.py)
    n_negatives: int = 256  # gbce only; bce always uses one
    gbce_t: float = 0.75
    # gbce only (models/losses.py): "window" = k negatives per training window, shared by
    # its positions; "shared" = k per batch; "position" = k per position, as gSASRec.
    # On ML-100k (docs/benchmarks.md, 40 epochs): full NDCG@10 0.0947 / 0.0742 / 0.1025
    # (CE 0.1034); per step at 27k items window and shared cost ~30x less than position
    gbce_negatives: str = "window"
    epochs: int = 200
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 10
    eval_every: int = 1
    # early stopping ranks the full catalogue for at most this many validation users
    # (a seeded sample); every user's rank costs O(catalogue), every epoch
    max_valid_users: int = 10_000

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ConfigError(f"unknown loss {self.loss!r}; expected one of {list(LOSSES)}")
        if self.max_len < 1 or self.dim < 1 or self.batch_size < 1 or self.max_valid_users < 1:
            raise ConfigError("dim, max_len, batch_size and max_valid_users must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.loss == "gbce" and self.n_negatives < 1:
            raise ConfigError("gbce needs n_negatives >= 1")
        if self.gbce_negatives not in GBCE_NEGATIVES:
            raise ConfigError(
                f"gbce_negatives must be one of {list(GBCE_NEGATIVES)}, got {self.gbce_negatives!r}"
            )


def pad_left(seqs: Sequence[np.ndarray], length: int, *, shift: int = 1) -> np.ndarray:
    """The last ``length`` items of each sequence (+``shift``), left-padded with 0.

    Returns an int64 matrix ``(len(seqs), length)``.
    """
    out = np.zeros((len(seqs), length), dtype=np.int64)
    for row, s in enumerate(seqs):
        s = np.asarray(s[-length:], dtype=np.int64)
        if len(s):
            out[row, length - len(s) :] = s + shift
    return out


def training_windows(
    seqs: Sequence[np.ndarray], max_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inputs, targets, users): every next-item pair of every sequence, in windows.

    A sequence of n items gives n - 1 (input, target) pairs; sequences longer than
    ``max_len`` + 1 are cut from the end into windows of ``max_len`` pairs, so no
    interaction is dropped (the original SASRec kept only the most recent window).
    """
    xs, ys, us = [], [], []
    for user, seq in enumerate(seqs):
        s = np.asarray(seq, dtype=np.int64) + 1
        inp, tgt = s[:-1], s[1:]
        end = len(inp)
        while end > 0:
            start = max(0, end - max_len)
            xs.append(inp[start:end])
            ys.append(tgt[start:end])
            us.append(user)
            end = start
    if not xs:
        raise ModelError("no user has two or more training interactions: nothing to learn from")
    return pad_left(xs, max_len, shift=0), pad_left(ys, max_len, shift=0), np.array(us)


class SequenceTask:
    """Training task for any :class:`SequentialModule`: next item at every position."""

    def __init__(self, module: SequentialModule, dataset: Dataset, config: SequentialConfig):
        self.module = module
        self.config = config
        self.n_items = dataset.n_items
        x, y, u = training_windows(dataset.user_sequences(("train",)), config.max_len)
        self.inputs, self.targets, self.users = (torch.from_numpy(a) for a in (x, y, u))
        self.lengths = (self.targets != 0).sum(1).float()
        users, histories, targets = dataset.histories_for("valid")
        if not len(users):
            raise ModelError(
                f"dataset {dataset.name!r} has no validation targets; early stopping needs "
                "a split with a 'valid' part (e.g. leave-one-out)"
            )
        if len(users) > config.max_valid_users:
            rng = np.random.default_rng([config.seed, len(users)])
            pick = np.sort(rng.choice(len(users), config.max_valid_users, replace=False))
            users, targets = users[pick], targets[pick]
            histories = [histories[i] for i in pick]
        self.val_users, self.val_histories, self.val_targets = users, histories, targets
        self.val_inputs = torch.from_numpy(pad_left(histories, config.max_len))
        with torch.no_grad():  # a resumed run overwrites this with its checkpoint
            module.logit_bias.fill_(
                initial_logit_bias(config.loss, config.n_negatives, self.n_items, config.gbce_t)
            )

    def batches(self, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, ...]]:
        """Batches of windows of similar length, in random order.

        Windows are sorted by length plus random jitter, cut into batches, and the
        batches shuffled: little padding (attention cost grows with the batch's
        longest row) while batch composition still changes every epoch.
        """
        bs = self.config.batch_size
        jitter = torch.rand(len(self.lengths), generator=generator) * self.config.max_len * 0.2
        order = torch.argsort(self.lengths + jitter)
        chunks = list(order.split(bs))
        for c in torch.randperm(len(chunks), generator=generator).tolist():
            idx = chunks[c]
            width = int(self.lengths[idx].max())  # drop columns that are padding in every row
            yield self.make_batch(idx, width)

    def make_batch(self, idx: torch.Tensor, width: int) -> tuple[torch.Tensor, ...]:
        """``(inputs, targets, users)`` of windows ``idx``, cut to the last ``width``
        columns; subclasses may append more (LANE: which positions see preferences)."""
        return self.inputs[idx][:, -width:], self.targets[idx][:, -width:], self.users[idx]

    def batch_query(self, batch: tuple[torch.Tensor, ...], table: torch.Tensor) -> torch.Tensor:
        """Per-position queries of a batch (subclasses may use its extra parts)."""
        x, _, users = batch[:3]
        return self.module.query(x, users, table)

    def loss(self, batch: tuple[torch.Tensor, ...], generator: torch.Generator) -> torch.Tensor:
        y = batch[1]
        table = self.module.item_table()
        query = self.batch_query(batch, table)
        if self.config.loss == "gbce" and self.config.gbce_negatives == "window":
            return gbce_window_loss(
                query,
                y,
                table,
                generator,
                n_negatives=self.config.n_negatives,
                gbce_t=self.config.gbce_t,
                bias=self.module.logit_bias,
            )
        mask = y != 0
        return next_item_loss(
            self.config.loss,
            query[mask],
            y[mask],
            table,
            generator,
            n_negatives=self.config.n_negatives,
            gbce_t=self.config.gbce_t,
            bias=self.module.logit_bias,
            shared=self.config.gbce_negatives == "shared",
        )

    def validate(self, batch_size: int = VALID_BATCH) -> float:
        """Validation NDCG@10 under full ranking, ``batch_size`` users at a time.

        Memory is ``batch_size x n_items`` scores, never users x items (at 140k users
        and 27k items that matrix alone would be 15 GB).
        """
        users = torch.from_numpy(self.val_users)
        ranks = np.empty(len(users), dtype=np.int64)
        for start in range(0, len(users), batch_size):
            sl = slice(start, start + batch_size)
            scores = score_module(self.module, self.val_inputs[sl], users[sl])
            mask_history(scores, self.val_histories[sl], self.val_targets[sl])
            ranks[sl] = rank_of_target(scores, self.val_targets[sl])
        return ndcg_at_k(ranks, 10)


def score_module(
    module: SequentialModule,
    inputs: torch.Tensor,
    users: torch.Tensor | None,
    batch_size: int = 256,
) -> np.ndarray:
    """All-item scores ``(B, n_items)`` for left-padded, shifted ``inputs``.

    Rows are processed in order of length so each batch is only as wide as it needs.
    """
    lengths = (inputs != 0).sum(1)
    order = torch.argsort(lengths, stable=True)
    n_items = module.item_table().shape[0] - 1
    out = np.empty((len(inputs), n_items), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(inputs), batch_size):
            idx = order[start : start + batch_size]
            width = max(int(lengths[idx].max()), 1)
            u = users[idx] if users is not None else None
            out[idx.numpy()] = module.score_all(inputs[idx][:, -width:], u).numpy()
    return out


class SequentialRecommender(LoopTrained):
    """Base of sequence models: subclasses implement :meth:`build_module`."""

    name = "sequential"
    config_class = SequentialConfig
    config: SequentialConfig

    def build_module(
        self, dataset: Dataset | None, state: dict[str, Any] | None = None
    ) -> SequentialModule:
        """The torch module for ``dataset`` (at fit) or for a saved ``state`` (at load)."""
        raise NotImplementedError

    def make_task(self, dataset: Dataset) -> SequenceTask:
        """The training task (windows, loss, validation) for ``dataset``."""
        return SequenceTask(self.module, dataset, self.config)

    def _identity(self) -> dict[str, Any]:
        return {**super()._identity(), "n_items": self.n_items}

    def _trained(self, task: SequenceTask, dataset: Dataset) -> None:
        self.training["train_windows"] = len(task.inputs)
        self.training["valid_users"] = len(task.val_users)
        self.training["loss"] = self.config.loss
        self.training["loss_choice"] = loss_choice(dataset.n_items, "loss" in self._overrides)

    def score_batch(
        self, histories: Sequence[np.ndarray], users: np.ndarray | None = None
    ) -> np.ndarray:
        configure_threads()
        self.module.eval()
        inputs = torch.from_numpy(pad_left(histories, self.config.max_len))
        u = torch.as_tensor(np.asarray(users), dtype=torch.long) if users is not None else None
        return score_module(self.module, inputs, u)

    def query_states(self, history: Sequence[int], user: int | None = None) -> np.ndarray:
        """Per-position query vectors ``(len(history[-max_len:]), d)`` (for explanations)."""
        self._check_fitted()
        u, hist = self._resolve(user, history)
        x = torch.from_numpy(pad_left([hist], self.config.max_len))
        width = min(len(hist), self.config.max_len)
        users = torch.tensor([u]) if u is not None else None
        with torch.inference_mode():
            return self.module.eval().query(x[:, -width:], users)[0].numpy()

    def item_vectors(self) -> np.ndarray:
        """The learned item table without the padding row: ``(n_items, d)``."""
        self._check_fitted()
        with torch.inference_mode():
            return self.module.item_table()[1:].numpy().copy()

    def _save_state(self, directory: Path) -> None:
        torch.save(self.module.state_dict(), directory / STATE_FILE)

    def _load_state(self, directory: Path) -> None:
        state = torch.load(directory / STATE_FILE, map_location="cpu", weights_only=True)
        self.module = self.build_module(None, state)
        self.module.load_state_dict(state)
        self.module.eval()
