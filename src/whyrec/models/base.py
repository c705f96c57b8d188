"""The one API every recommender answers: fit, recommend, score, save/load.

Models speak the dataset's *internal* indices (``user_idx``, ``item_idx``, 0-based);
``Dataset.user_index(source_id)`` / :meth:`Recommender.user_index` translate source
ids. A fitted model carries the item catalogue (source ids, titles) and every user's
full history, so a loaded model answers ``recommend(user)`` without the dataset.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd

from whyrec import __version__
from whyrec.data.dataset import Dataset
from whyrec.errors import ConfigError, ModelError
from whyrec.io import atomic_path, write_json

MODEL_FORMAT = "whyrec-model"
MODEL_FORMAT_VERSION = 1


@dataclass
class Recommendations:
    """Top-k items for one user or history, best first."""

    items: np.ndarray  # internal item indices
    scores: np.ndarray
    item_ids: list[str]
    titles: list[str]
    user: int | None = None

    def __len__(self) -> int:
        return len(self.items)

    def to_records(self) -> list[dict[str, Any]]:
        return [
            {"rank": r + 1, "item_idx": int(i), "item_id": iid, "title": t, "score": float(s)}
            for r, (i, iid, t, s) in enumerate(
                zip(self.items, self.item_ids, self.titles, self.scores, strict=True)
            )
        ]

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame.from_records(self.to_records())


@dataclass
class ModelConfig:
    """Settings shared by all models; subclasses add theirs (constructor keywords)."""

    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Recommender(ABC):
    """Base class: subclasses implement :meth:`_fit`, :meth:`score_batch` and the
    state hooks :meth:`_save_state` / :meth:`_load_state`.

    Configuration is constructor keywords only. Keywords not given are filled at
    :meth:`fit` time from the per-dataset defaults (:mod:`whyrec.models.defaults`).
    """

    name: ClassVar[str] = "recommender"
    config_class: ClassVar[type[ModelConfig]] = ModelConfig
    #: What the model offers besides scores. Callers ask these, never :attr:`name`.
    #: ``has_preferences``: the model conditions on per-user preference sentences (LANE):
    #: it keeps ``preference_texts``/``preference_sources`` per user, takes preference
    #: vectors for new histories, and its :meth:`attribution` covers the preferences too.
    has_preferences: ClassVar[bool] = False
    #: ``has_attribution``: its scores depend on the history, so :meth:`counterfactual`
    #: (scores with history items removed) and :meth:`attribution` (the drops it causes)
    #: are evidence about *this* user; False for a model that scores everyone alike.
    has_attribution: ClassVar[bool] = True

    def __init__(self, **config: Any) -> None:
        fields = {f.name for f in dataclasses.fields(self.config_class)}
        unknown = sorted(set(config) - fields)
        if unknown:
            raise ConfigError(
                f"{self.name}: unknown option(s) {unknown}; valid options: {sorted(fields)}"
            )
        self._overrides = dict(config)
        self.config = self.config_class(**config)
        self._fitted = False
        self.training: dict[str, Any] = {}

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        dataset: Dataset,
        *,
        progress: bool | None = None,
        checkpoint_dir: str | Path | None = None,
        callbacks: Sequence[Any] = (),
    ) -> Self:
        """Train on ``dataset``'s train split (validation split for early stopping).

        ``checkpoint_dir``: where trainable models write a checkpoint every epoch; if
        one is there already, training resumes from it. ``callbacks`` are called with
        an :class:`whyrec.models.training.EpochInfo` after every epoch.
        """
        from whyrec.models.defaults import defaults_for

        if dataset.n_items == 0 or dataset.n_users == 0:
            raise ModelError(f"dataset {dataset.name!r} is empty")
        if not (dataset.interactions["split"] == "train").any():
            raise ModelError(f"dataset {dataset.name!r} has no training interactions")
        resolved = {**defaults_for(self.name, dataset), **self._overrides}
        self.config = self.config_class(**resolved)
        self._set_catalog(dataset)
        self._fit(
            dataset,
            progress=progress,
            checkpoint_dir=Path(checkpoint_dir) if checkpoint_dir else None,
            callbacks=list(callbacks),
        )
        self._fitted = True
        return self

    @abstractmethod
    def _fit(
        self,
        dataset: Dataset,
        *,
        progress: bool | None,
        checkpoint_dir: Path | None,
        callbacks: list[Any],
    ) -> None: ...

    def _set_catalog(self, dataset: Dataset) -> None:
        self.n_items = dataset.n_items
        self.n_users = dataset.n_users
        self.item_ids = dataset.items["item_id"].astype(str).to_numpy()
        self.item_titles = dataset.items["title"].astype(str).to_numpy()
        self.user_ids = dataset.users["user_id"].astype(str).to_numpy()
        self.histories = dataset.user_sequences()  # all splits: what a user has seen
        self.dataset_info = {
            "name": dataset.name,
            "fingerprint": dataset_fingerprint(dataset),
            "n_users": dataset.n_users,
            "n_items": dataset.n_items,
            "path": str(dataset.path) if dataset.path else None,
        }
        self.__dict__.pop("_user_lookup", None)

    # ------------------------------------------------------------- scoring
    @abstractmethod
    def score_batch(
        self, histories: Sequence[np.ndarray], users: np.ndarray | None = None
    ) -> np.ndarray:
        """Scores of every item for each history: ``(len(histories), n_items)`` float32.

        ``users`` (internal indices, same length) lets user-based models use their
        learned user state; sequence models rely on the histories. No item is masked.
        Inputs are assumed valid; public methods check them first.
        """

    def score(
        self,
        history: Sequence[int] | np.ndarray | None = None,
        items: Sequence[int] | np.ndarray | None = None,
        *,
        user: int | None = None,
    ) -> np.ndarray:
        """Scores of ``items`` (default: all items) given a history or a known user."""
        self._check_fitted()
        u, hist = self._resolve(user, history)
        scores = self.score_batch([hist], None if u is None else np.array([u]))[0]
        if items is None:
            return scores
        return scores[self._check_items(items, "items")]

    def recommend(
        self,
        user: int | None = None,
        *,
        history: Sequence[int] | np.ndarray | None = None,
        k: int = 10,
        exclude_seen: bool = True,
        exclude: Sequence[int] | None = None,
    ) -> Recommendations:
        """Top-``k`` items for a known ``user`` (internal index) or for ``history``.

        ``exclude_seen`` drops the items of the history (for a user: everything they
        interacted with); ``exclude`` drops further items.
        """
        self._check_fitted()
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ModelError(f"k must be a positive integer, got {k!r}")
        u, hist = self._resolve(user, history)
        scores = self.score_batch([hist], None if u is None else np.array([u]))[0].astype(
            np.float64
        )
        if exclude_seen:
            scores[hist] = -np.inf
        if exclude is not None:
            scores[self._check_items(exclude, "exclude")] = -np.inf
        allowed = int(np.isfinite(scores).sum())
        k = min(int(k), allowed)
        top = np.argpartition(-scores, k - 1)[:k] if k else np.empty(0, dtype=np.int64)
        top = top[np.lexsort((top, -scores[top]))]  # by score, ties by index: deterministic
        return Recommendations(
            items=top.astype(np.int64),
            scores=scores[top].astype(np.float32),
            item_ids=self.item_ids[top].tolist(),
            titles=self.item_titles[top].tolist(),
            user=u,
        )

    def top_k(
        self,
        scores: np.ndarray,
        seen: Sequence[Sequence[int] | np.ndarray] | None,
        k: int,
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per row of precomputed ``scores`` (``(n, n_items)``, e.g. from
        :meth:`score_batch`): the top-``k`` items and their scores, leaving out the
        row's ``seen`` items, ordered as :meth:`recommend` orders them (by score, ties by
        index). A row with fewer than ``k`` finite scores gives fewer items."""
        self._check_fitted()
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ModelError(f"k must be a positive integer, got {k!r}")
        scores = np.asarray(scores)
        if scores.ndim != 2 or scores.shape[1] != self.n_items:
            raise ModelError(
                f"scores must have shape (n, {self.n_items}) (one column per item), "
                f"got {scores.shape}"
            )
        if seen is not None and len(seen) != len(scores):
            raise ModelError(f"seen has {len(seen)} rows but scores has {len(scores)}")
        out = []
        for r, row in enumerate(scores):
            s = row.astype(np.float64)
            if seen is not None:
                s[self._check_items(seen[r], f"seen[{r}]")] = -np.inf
            kk = min(int(k), int(np.isfinite(s).sum()))
            if kk == 0:
                out.append((np.empty(0, np.int64), np.empty(0, np.float32)))
                continue
            top = np.argpartition(-s, kk - 1)[:kk]
            top = top[np.lexsort((top, -s[top]))]  # by score, ties by index, as recommend
            out.append((top.astype(np.int64), s[top].astype(np.float32)))
        return out

    # ------------------------------------------------- item-specific evidence
    def counterfactual(
        self,
        item: int,
        user: int | None = None,
        *,
        history: Sequence[int] | np.ndarray | None = None,
        removals: Sequence[Any] = (),
        **context: Any,
    ) -> list[tuple[float, int]]:
        """``(score, rank)`` of ``item`` with nothing removed, then for each
        :class:`~whyrec.models.attribution.Removal` (history positions removed; models
        without preferences ignore preference removals). Ranks are 1-based among the items
        not in the full history."""
        from whyrec.models.attribution import ranks_of

        self._check_fitted()
        item = int(self._check_items([item], "item")[0])
        u, hist = self._resolve(user, history)
        scores = self._removal_scores(hist, u, [tuple(r.history) for r in removals])
        ranks = ranks_of(scores, item, np.unique(hist))
        return [(float(scores[i, item]), int(ranks[i])) for i in range(len(scores))]

    def _removal_scores(
        self, hist: np.ndarray, user: int | None, removals: list[tuple[int, ...]]
    ) -> np.ndarray:
        """All-item scores of ``hist``, then of ``hist`` without each removal's positions."""
        from whyrec.models.attribution import drop_positions

        hists = [hist, *(drop_positions(hist, r) for r in removals)]
        users = None if user is None else np.full(len(hists), user)
        return self.score_batch(hists, users)

    @property
    def evidence_window(self) -> int:
        """How many of the most recent history items the evidence tries removing (0: all):
        the model's input length (``max_len``), else 50."""
        from whyrec.models.attribution import DEFAULT_WINDOW

        return int(getattr(self.config, "max_len", DEFAULT_WINDOW) or DEFAULT_WINDOW)

    def attribution(
        self,
        item: int,
        user: int | None = None,
        *,
        history: Sequence[int] | np.ndarray | None = None,
        top_history: int = 5,
        window: int | None = None,
        **context: Any,
    ) -> Any:
        """Item-specific evidence: ``item``'s score and rank, then without each of the
        most recent ``window`` history items (the ``top_history`` largest drops kept)."""
        from whyrec.models.attribution import Attribution, Removal, history_effects

        self._check_fitted()
        u, hist = self._resolve(user, history)
        win = window or self.evidence_window or len(hist)
        positions = list(range(max(0, len(hist) - win), len(hist))) if len(hist) > 1 else []
        res = self.counterfactual(
            item, u, history=hist, removals=[Removal(history=(p,)) for p in positions], **context
        )
        (score, rank), rest = res[0], res[1:]
        return Attribution(
            item=int(item),
            score=score,
            rank=rank,
            history=history_effects(hist, score, rest, positions, top_history),
        )

    # ---------------------------------------------------------- validation
    def _check_fitted(self) -> None:
        if not self._fitted:
            raise ModelError(
                f"{self.name} is not fitted: call fit(dataset) or load a model directory"
            )

    def _check_user(self, user: Any) -> int:
        if isinstance(user, bool) or not isinstance(user, int | np.integer):
            raise ModelError(
                f"user must be an internal user index (int), got {type(user).__name__} "
                f"{user!r}; translate source ids with model.user_index(...)"
            )
        if not 0 <= int(user) < self.n_users:
            raise ModelError(
                f"unknown user index {int(user)}: this model knows {self.n_users} users "
                f"(0..{self.n_users - 1})"
            )
        return int(user)

    def _check_items(self, items: Any, what: str) -> np.ndarray:
        arr = np.asarray(items)
        if arr.ndim != 1:
            raise ModelError(
                f"{what} must be a 1-D sequence of item indices, got shape {arr.shape}"
            )
        if arr.size == 0:
            return arr.astype(np.int64)
        if not np.issubdtype(arr.dtype, np.integer):
            raise ModelError(
                f"{what} must hold internal item indices (ints), got dtype {arr.dtype}; "
                "translate source ids with model.item_index(...)"
            )
        bad = arr[(arr < 0) | (arr >= self.n_items)]
        if bad.size:
            raise ModelError(
                f"unknown item indices in {what}: {bad[:5].tolist()}; this model knows "
                f"{self.n_items} items (0..{self.n_items - 1})"
            )
        return arr.astype(np.int64)

    def _resolve(self, user: Any, history: Any) -> tuple[int | None, np.ndarray]:
        if user is None and history is None:
            raise ModelError("give a user (internal index) or a history of item indices")
        u = self._check_user(user) if user is not None else None
        hist = self._check_items(history, "history") if history is not None else self.histories[u]
        if hist.size == 0:
            raise ModelError(
                "empty history: a sequence model needs at least one item to recommend from"
                if history is not None
                else f"user {u} has no interactions"
            )
        return u, hist

    # ------------------------------------------------------------ id maps
    def user_index(self, user_id: str | int) -> int:
        """Internal index of a source user id (as in the dataset's ``user_id`` column)."""
        self._check_fitted()
        lookup = self.__dict__.get("_user_lookup")
        if lookup is None:
            lookup = self.__dict__["_user_lookup"] = {u: i for i, u in enumerate(self.user_ids)}
        if str(user_id) not in lookup:
            raise ModelError(
                f"unknown user id {user_id!r}: not in dataset {self.dataset_info['name']!r} "
                f"({self.n_users} users)"
            )
        return lookup[str(user_id)]

    def item_index(self, item_id: str | int) -> int:
        """Internal index of a source item id."""
        self._check_fitted()
        hits = np.flatnonzero(self.item_ids == str(item_id))
        if not hits.size:
            raise ModelError(
                f"unknown item id {item_id!r}: not in dataset {self.dataset_info['name']!r}"
            )
        return int(hits[0])

    def check_dataset(self, dataset: Dataset) -> None:
        """Raise unless ``dataset`` is the data this model was trained on."""
        self._check_fitted()
        want = self.dataset_info
        theirs = dataset_fingerprint(dataset)
        if theirs != want["fingerprint"] or dataset.n_items != want["n_items"]:
            raise ModelError(
                f"model was trained on dataset {want['name']!r} (fingerprint "
                f"{want['fingerprint']}, {want['n_items']} items) but got {dataset.name!r} "
                f"(fingerprint {theirs}, {dataset.n_items} items)"
            )

    # ----------------------------------------------------------------- io
    def save(self, path: str | Path) -> Path:
        """Write the model directory atomically: manifest, catalogue, histories, state."""
        self._check_fitted()
        path = Path(path)
        with atomic_path(path, is_dir=True) as tmp:
            pd.DataFrame({"item_id": self.item_ids, "title": self.item_titles}).to_parquet(
                tmp / "items.parquet", index=False
            )
            pd.DataFrame({"user_id": self.user_ids}).to_parquet(tmp / "users.parquet", index=False)
            lens = np.array([len(h) for h in self.histories], dtype=np.int64)
            flat = np.concatenate(self.histories) if lens.sum() else np.empty(0, dtype=np.int64)
            np.savez(tmp / "histories.npz", items=flat.astype(np.int32), lengths=lens)
            self._save_state(tmp)
            if self.training:
                write_json(tmp / "training.json", self.training)
            write_json(tmp / "manifest.json", self._manifest())
        return path

    def _manifest(self) -> dict[str, Any]:
        summary = {k: v for k, v in self.training.items() if k != "epochs_log"}
        return {
            "format": MODEL_FORMAT,
            "format_version": MODEL_FORMAT_VERSION,
            "whyrec_version": __version__,
            "model": self.name,
            "config": self.config.to_dict(),
            "dataset": self.dataset_info,
            "training": summary,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }

    @classmethod
    def load(cls, path: str | Path, dataset: Dataset | None = None) -> Self:
        """Read a model directory; with ``dataset``, refuse unless it is the same data."""
        path = Path(path)
        manifest = read_manifest(path)
        if manifest["model"] != cls.name:
            raise ModelError(
                f"{path} holds a {manifest['model']!r} model, not {cls.name!r}; "
                "use whyrec.models.load_model() to load any model"
            )
        model = cls(**manifest.get("config", {}))
        model.dataset_info = manifest["dataset"]
        items = pd.read_parquet(path / "items.parquet")
        users = pd.read_parquet(path / "users.parquet")
        model.item_ids = items["item_id"].astype(str).to_numpy()
        model.item_titles = items["title"].astype(str).to_numpy()
        model.user_ids = users["user_id"].astype(str).to_numpy()
        model.n_items, model.n_users = len(items), len(users)
        hist = np.load(path / "histories.npz")
        bounds = np.cumsum(hist["lengths"])[:-1]
        model.histories = [h.astype(np.int64) for h in np.split(hist["items"], bounds)]
        if len(model.histories) != model.n_users:
            raise ModelError(f"{path}: histories.npz does not match users.parquet")
        tpath = path / "training.json"
        model.training = json.loads(tpath.read_text()) if tpath.is_file() else {}
        try:
            model._load_state(path)
        except (KeyError, RuntimeError, ValueError, OSError) as exc:
            raise ModelError(f"{path}: model state does not match its manifest ({exc})") from exc
        model._fitted = True
        if dataset is not None:
            model.check_dataset(dataset)
        return model

    @abstractmethod
    def _save_state(self, directory: Path) -> None: ...

    @abstractmethod
    def _load_state(self, directory: Path) -> None: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"


def dataset_fingerprint(dataset: Dataset) -> str:
    """The dataset's fingerprint (``Dataset.fingerprint`` also covers unsaved datasets)."""
    return dataset.fingerprint()


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of a model directory, after checking format and whyrec version."""
    path = Path(path)
    mpath = path / "manifest.json"
    if not path.is_dir():
        raise ModelError(f"model directory {path} does not exist")
    if not mpath.is_file():
        if (path / "checkpoints").is_dir():
            raise ModelError(
                f"{path} holds an unfinished training run (checkpoints only); "
                "run the same train command again to resume it"
            )
        raise ModelError(f"{path} is not a whyrec model directory (manifest.json missing)")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelError(f"{mpath}:{exc.lineno}: manifest is not valid JSON ({exc.msg})") from exc
    if manifest.get("format") != MODEL_FORMAT:
        raise ModelError(
            f"{mpath}: not a whyrec model manifest (format {manifest.get('format')!r})"
        )
    if manifest.get("format_version") != MODEL_FORMAT_VERSION:
        raise ModelError(
            f"{path} uses model format {manifest.get('format_version')}; this whyrec "
            f"({__version__}) reads format {MODEL_FORMAT_VERSION} — retrain the model"
        )
    theirs = str(manifest.get("whyrec_version", "?"))
    if theirs.split(".")[:2] != __version__.split(".")[:2]:
        raise ModelError(
            f"{path} was written by whyrec {theirs}; this is whyrec {__version__} — "
            "models are only read by the same major.minor version; retrain the model"
        )
    for key in ("model", "dataset"):
        if key not in manifest:
            raise ModelError(f"{mpath}: manifest lacks {key!r}")
    return manifest
