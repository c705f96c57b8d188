"""Full and sampled ranking evaluation, vectorised over batches of users.

Two protocols, always reported under their own label because their numbers are not
comparable (sampled ranking inflates NDCG/HR several-fold):

* ``full``: the true item is ranked against every item in the catalogue; items in the
  user's history are excluded (except the true item itself, if the data has repeats).
* ``sampled``: the true item is ranked against ``n_negatives`` items drawn uniformly
  from the items the user never interacted with in any split. The draw for a user
  depends only on ``(seed, user)``, so it is identical across models, batch sizes and
  user subsets.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol as TypingProtocol

import numpy as np

from whyrec.data.dataset import Dataset
from whyrec.errors import ConfigError, DataError, ModelError
from whyrec.evaluate.report import EvaluationReport, EvaluationResult
from whyrec.metrics import DEFAULT_KS, mask_history, rank_of_target, summarize


class Scorer(TypingProtocol):
    """What evaluation needs from a model (every :class:`whyrec.models.Recommender`)."""

    name: str

    def score_batch(
        self, histories: Sequence[np.ndarray], users: np.ndarray | None = None
    ) -> np.ndarray: ...

    def check_dataset(self, dataset: Dataset) -> None: ...


@dataclass(frozen=True)
class RankingProtocol:
    """How candidates are chosen. Build with :func:`full_ranking` / :func:`sampled_ranking`."""

    kind: str  # "full" | "sampled"
    n_negatives: int = 0
    seed: int = 0

    @property
    def name(self) -> str:
        return "full" if self.kind == "full" else f"sampled-{self.n_negatives}"

    def label(self, n_items: int) -> str:
        if self.kind == "full":
            return f"full ranking over all {n_items:,} items, seen items excluded"
        return (
            f"sampled ranking: true item + {self.n_negatives} negatives drawn uniformly "
            f"from never-interacted items (seed {self.seed})"
        )


def full_ranking() -> RankingProtocol:
    """Rank the true item against the whole catalogue (seen items excluded)."""
    return RankingProtocol("full")


def sampled_ranking(n_negatives: int = 100, seed: int = 0) -> RankingProtocol:
    """Rank the true item against ``n_negatives`` uniformly sampled unseen items."""
    if n_negatives < 1:
        raise ConfigError(f"n_negatives must be >= 1, got {n_negatives}")
    return RankingProtocol("sampled", n_negatives=n_negatives, seed=seed)


def parse_protocols(
    spec: str | RankingProtocol | Iterable[str | RankingProtocol],
    *,
    n_negatives: int = 100,
    seed: int = 0,
) -> list[RankingProtocol]:
    """``"full"``, ``"sampled"``, ``"both"`` or a list of them / of protocol objects."""
    items = [spec] if isinstance(spec, str | RankingProtocol) else list(spec)
    out: list[RankingProtocol] = []
    for item in items:
        if isinstance(item, RankingProtocol):
            out.append(item)
        elif item == "both":
            out += [full_ranking(), sampled_ranking(n_negatives, seed)]
        elif item == "full":
            out.append(full_ranking())
        elif item == "sampled":
            out.append(sampled_ranking(n_negatives, seed))
        else:
            raise ConfigError(f"unknown protocol {item!r}; expected 'full', 'sampled' or 'both'")
    return out


def sample_negatives(
    seen: np.ndarray, n_items: int, n: int, rng: np.random.Generator
) -> np.ndarray:
    """``n`` distinct items outside the sorted unique array ``seen``, uniformly."""
    n_free = n_items - len(seen)
    if n_free < n:
        raise DataError(
            f"cannot draw {n} negatives: the user has interacted with {len(seen)} of "
            f"{n_items} items, leaving {n_free}",
            field="n_negatives",
        )
    picks = np.sort(rng.choice(n_free, size=n, replace=False))
    # the r-th unseen item is r + (number of seen items s_j with s_j - j <= r)
    shift = np.searchsorted(seen - np.arange(len(seen)), picks, side="right")
    return picks + shift


def compute_ranks(
    model: Scorer,
    users: np.ndarray,
    histories: Sequence[np.ndarray],
    targets: np.ndarray,
    protocols: Sequence[RankingProtocol],
    *,
    n_items: int,
    interacted: Sequence[np.ndarray] | None = None,
    batch_size: int = 1024,
) -> list[np.ndarray]:
    """0-based rank of each target under each protocol (one scoring pass for all).

    Users are scored, masked and ranked ``batch_size`` at a time, so peak memory is
    about ``batch_size x n_items`` scores whatever the number of users.
    ``interacted[user]`` (sorted unique items over all splits) is needed for the
    sampled protocol. See :mod:`whyrec.metrics` for how ties are ranked.
    """
    if any(p.kind == "sampled" for p in protocols) and interacted is None:
        raise ConfigError("the sampled protocol needs each user's interacted items")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    ranks = [np.empty(len(users), dtype=np.int64) for _ in protocols]
    # everything below is per batch of users: scores, history masks and sampled
    # negatives take batch_size x n_items memory, never users x items
    for start in range(0, len(users), batch_size):
        sl = slice(start, start + batch_size)
        b_users, b_hist, b_tgt = users[sl], histories[sl], targets[sl]
        scores = np.array(model.score_batch(b_hist, b_users), dtype=np.float32, copy=True)
        if scores.shape != (len(b_users), n_items):
            raise ModelError(
                f"model {model.name!r} returned scores of shape {scores.shape}; expected "
                f"({len(b_users)}, {n_items})"
            )
        if np.isnan(scores).any():
            raise ModelError(f"model {model.name!r} produced NaN scores")
        for out, proto in zip(ranks, protocols, strict=True):
            if proto.kind == "sampled":
                negatives = _negatives_for(b_users, interacted, n_items, proto)
                cand = np.concatenate([b_tgt[:, None], negatives], axis=1)
                out[sl] = rank_of_target(
                    np.take_along_axis(scores, cand, axis=1), np.zeros(len(cand), dtype=np.int64)
                )
        if any(p.kind == "full" for p in protocols):
            mask_history(scores, b_hist, b_tgt)
            full = rank_of_target(scores, b_tgt)
            for out, proto in zip(ranks, protocols, strict=True):
                if proto.kind == "full":
                    out[sl] = full
    return ranks


def _negatives_for(
    users: np.ndarray,
    interacted: Sequence[np.ndarray] | None,
    n_items: int,
    protocol: RankingProtocol,
) -> np.ndarray:
    assert interacted is not None
    out = np.empty((len(users), protocol.n_negatives), dtype=np.int64)
    for row, user in enumerate(users):
        rng = np.random.default_rng([protocol.seed, int(user)])
        out[row] = sample_negatives(interacted[int(user)], n_items, protocol.n_negatives, rng)
    return out


def evaluate(
    model: Scorer,
    dataset: Dataset,
    *,
    protocols: str | RankingProtocol | Iterable[str | RankingProtocol] = "both",
    split: str = "test",
    ks: Iterable[int] = DEFAULT_KS,
    users: Iterable[int] | None = None,
    n_negatives: int = 100,
    seed: int = 0,
    batch_size: int = 1024,
    keep_ranks: bool = False,
) -> EvaluationReport:
    """Evaluate ``model`` on ``dataset``'s ``split`` targets under each protocol.

    All users with a target are evaluated unless ``users`` (internal indices) narrows
    them. The model must have been trained on this exact dataset (checked by
    fingerprint) — otherwise its item ids would silently mean other items.
    ``keep_ranks`` stores every user's rank in the results (for paired comparisons).
    """
    model.check_dataset(dataset)
    protos = parse_protocols(protocols, n_negatives=n_negatives, seed=seed)
    ks = tuple(sorted(set(int(k) for k in ks)))
    if not ks or min(ks) < 1:
        raise ConfigError(f"ks must be positive integers, got {ks}")
    all_users, histories, targets = dataset.histories_for(split)
    if users is not None:
        wanted = np.asarray(list(users), dtype=np.int64)
        bad = wanted[(wanted < 0) | (wanted >= dataset.n_users)]
        if bad.size:
            raise DataError(
                f"unknown user indices {bad[:5].tolist()}; expected 0..{dataset.n_users - 1}",
                field="users",
            )
        keep = np.isin(all_users, wanted)
        missing = np.setdiff1d(wanted, all_users)
        if missing.size:
            raise DataError(f"users {missing[:5].tolist()} have no {split!r} target", field="users")
        all_users = all_users[keep]
        histories = [h for h, k in zip(histories, keep, strict=True) if k]
        targets = targets[keep]
    if not len(all_users):
        raise DataError(f"dataset {dataset.name!r} has no users with a {split!r} target")
    interacted = dataset.seen_items() if any(p.kind == "sampled" for p in protos) else None
    t0 = time.perf_counter()
    all_ranks = compute_ranks(
        model,
        all_users,
        histories,
        targets,
        protos,
        n_items=dataset.n_items,
        interacted=interacted,
        batch_size=batch_size,
    )
    seconds = time.perf_counter() - t0
    results = []
    for proto, ranks in zip(protos, all_ranks, strict=True):
        results.append(
            EvaluationResult(
                protocol=proto.name,
                label=proto.label(dataset.n_items),
                split=split,
                n_users=len(all_users),
                n_candidates=dataset.n_items if proto.kind == "full" else proto.n_negatives + 1,
                seed=proto.seed if proto.kind == "sampled" else None,
                metrics=summarize(ranks, ks),
                seconds=seconds,
                users=all_users.tolist() if keep_ranks else None,
                ranks=ranks.tolist() if keep_ranks else None,
            )
        )
    return EvaluationReport(
        model=model.name,
        dataset=dataset.name,
        fingerprint=dataset.fingerprint(),
        results=results,
    )
