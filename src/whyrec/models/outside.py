"""Recommenders trained outside whyrec, explained with whyrec's evidence and reasons.

A team that already runs a recommender (an ``implicit`` ALS model, a LensKit pipeline,
its own PyTorch scorer) wraps it in an :class:`OutsideScorer` — one method that scores
every item for a batch of histories — and :class:`OutsideModel` turns it into a
:class:`~whyrec.models.Recommender`: ``recommend``, ``counterfactual`` and
``attribution`` then work as for whyrec's own models, so the explanation pipeline, the
service, batch jobs and the explanation-quality harness take it unchanged.

The evidence is the model's own: removing a history item means calling the scorer again
on the history without it. An adapter that can do this faster or exactly in another way
(e.g. a closed-form user update) implements :meth:`OutsideScorer.counterfactual_scores`.

Adapters are found by name: built-in ones (``callable``, ``torchscript``,
``implicit-als``, ``implicit-bpr``, ``lenskit``), those added with
:func:`register_adapter`, and those other packages declare under the entry-point group
``whyrec.adapters`` (``name = "package.module:AdapterClass"``).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

import numpy as np

from whyrec.data.dataset import Dataset
from whyrec.errors import ConfigError, ModelError
from whyrec.models.base import ModelConfig, Recommender

ENTRY_POINT_GROUP = "whyrec.adapters"
#: the adapter's settings, beside its own files in ``adapter/``
SETTINGS_FILE = "settings.json"
#: where a saved outside model keeps its adapter's own files
ADAPTER_DIR = "adapter"


@runtime_checkable
class OutsideScorer(Protocol):
    """What an outside recommender provides: scores of every item for histories.

    ``histories`` hold whyrec's internal item indices (0-based rows of the dataset's
    item table), oldest first; ``users`` are internal user indices (same length), or
    ``None`` for histories of no known user (then the history is all there is).
    Return an ``(len(histories), n_items)`` array, higher is better; ``-inf`` for items
    the model cannot score (e.g. unknown to it). ``NaN`` is an error.

    Optional members, used when present:

    - ``adapter: str`` — the registered adapter name (written to the manifest);
    - ``uses_history: bool`` — ``False`` when scores ignore the history (then history
      removals are not evidence about the user and reasons say so);
    - ``bind(model)`` — called once by :meth:`OutsideModel.wrap` with the wrapping model
      (its ``item_ids``, ``user_ids``, ``histories``), e.g. to map item ids to columns;
    - ``counterfactual_scores(history, user, removals) -> ndarray`` — rows for the full
      history and for each removal (a tuple of history positions), when the model can
      compute them faster or more exactly than by re-scoring shorter histories;
    - ``save(directory)`` plus a ``load(directory, dataset)`` class method — so the
      wrapped model can be written as a whyrec model directory.
    """

    def score(self, histories: Sequence[np.ndarray], users: np.ndarray | None) -> np.ndarray:
        """All-item scores, one row per history."""
        ...


@dataclass
class OutsideConfig(ModelConfig):
    """``adapter``: the registered name of the adapter that reads ``adapter/``."""

    adapter: str = ""


class OutsideModel(Recommender):
    """A recommender trained elsewhere, behind an :class:`OutsideScorer`.

    Build one with :meth:`wrap` (a scorer and the dataset it was trained on); save it to
    get a model directory every ``whyrec`` command reads (its manifest names the adapter).
    It has no preference sentences: reasons cite history items and item facts.
    """

    name: ClassVar[str] = "outside"
    config_class: ClassVar[type[ModelConfig]] = OutsideConfig
    has_preferences: ClassVar[bool] = False

    scorer: OutsideScorer

    @classmethod
    def wrap(
        cls, scorer: OutsideScorer, dataset: Dataset, *, adapter: str | None = None
    ) -> OutsideModel:
        """The outside model ``scorer`` (trained on ``dataset``) as a whyrec recommender."""
        if not callable(getattr(scorer, "score", None)):
            raise ModelError(
                f"{type(scorer).__name__} is not an outside scorer: it needs a method "
                "score(histories, users) returning one row of item scores per history "
                "(see whyrec.models.outside.OutsideScorer)"
            )
        name = adapter or str(getattr(scorer, "adapter", "") or type(scorer).__name__)
        model = cls(adapter=name)
        model._set_catalog(dataset)
        model.scorer = scorer
        model._fitted = True
        bind = getattr(scorer, "bind", None)
        if callable(bind):  # the adapter learns the catalogue (to map item ids)
            bind(model)
        return model

    @property
    def adapter(self) -> str:
        return str(self.config.adapter)  # type: ignore[attr-defined]

    @property
    def has_attribution(self) -> bool:  # type: ignore[override]
        return bool(getattr(self.scorer, "uses_history", True))

    def fit(self, dataset: Dataset, **_: Any) -> Self:
        self._fit(dataset)
        return self

    def _fit(self, dataset: Dataset, **_: Any) -> None:
        raise ModelError(
            f"{self.adapter or 'an outside'} model is trained with its own library, not by "
            "whyrec: train it there, then OutsideModel.wrap(scorer, dataset)"
        )

    # ------------------------------------------------------------- scoring
    def score_batch(
        self, histories: Sequence[np.ndarray], users: np.ndarray | None = None
    ) -> np.ndarray:
        out = self.scorer.score(histories, users)
        return self._checked_scores(out, len(histories))

    def _checked_scores(self, out: Any, rows: int) -> np.ndarray:
        """The scorer's output is foreign: shape, type and NaN are checked every call."""
        try:
            arr = np.asarray(out, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise ModelError(
                f"adapter {self.adapter!r} returned scores that are not numbers ({exc})"
            ) from exc
        if arr.shape != (rows, self.n_items):
            raise ModelError(
                f"adapter {self.adapter!r} returned scores of shape {arr.shape}; expected "
                f"({rows}, {self.n_items}): one row per history, one column per item of "
                f"dataset {self.dataset_info['name']!r}"
            )
        if np.isnan(arr).any():
            r, c = np.argwhere(np.isnan(arr))[0]
            raise ModelError(
                f"adapter {self.adapter!r} returned NaN (row {int(r)}, item {int(c)} "
                f"{self.item_ids[int(c)]!r}); use -inf for items it cannot score"
            )
        return arr

    def _removal_scores(
        self, hist: np.ndarray, user: int | None, removals: list[tuple[int, ...]]
    ) -> np.ndarray:
        own = getattr(self.scorer, "counterfactual_scores", None)
        if own is None:  # re-score the shorter histories
            return super()._removal_scores(hist, user, removals)
        positions = [tuple(int(p) for p in r) for r in removals]
        return self._checked_scores(own(hist, user, positions), 1 + len(positions))

    @property
    def evidence_window(self) -> int:
        """The scorer's ``attribution_window`` (0: the whole history), else 50."""
        own = getattr(self.scorer, "attribution_window", None)
        return super().evidence_window if own is None else int(own)

    # ----------------------------------------------------------------- io
    def _manifest(self) -> dict[str, Any]:
        return {**super()._manifest(), "adapter": self.adapter}

    def _save_state(self, directory: Path) -> None:
        (directory / ADAPTER_DIR).mkdir()
        save = getattr(self.scorer, "save", None)
        import_path = getattr(self, "import_path", None)
        if save is not None:
            try:
                save(directory / ADAPTER_DIR)
                return
            except ModelError:
                if import_path is None:
                    raise
        elif import_path is None:
            raise ModelError(
                f"adapter {self.adapter!r} cannot be saved (its scorer has no save method); "
                "give the entry points its Python import path instead (module:object)"
            )
        # built from an import path: the directory refers to it (and to the dataset)
        from whyrec.io import write_json

        write_json(directory / ADAPTER_DIR / "settings.json", {"import_path": import_path})
        self.config.adapter = "import"  # type: ignore[attr-defined]

    def _load_state(self, directory: Path) -> None:
        adapter_class(self.adapter)  # a clear error before any file is read

    @classmethod
    def load(cls, path: str | Path, dataset: Dataset | None = None) -> Self:
        model = super().load(path, dataset)
        # the adapter reads its files with the catalogue known (item ids map to columns)
        model.scorer = adapter_class(model.adapter).load(Path(path) / ADAPTER_DIR, model)
        return model


# ------------------------------------------------------------------ adapters
def read_adapter_settings(directory: Path, required: Sequence[str] = ()) -> dict[str, Any]:
    """An adapter's ``settings.json`` (a JSON object with at least ``required`` keys); a
    missing file, invalid JSON or a missing key is a :class:`ModelError` naming the file."""
    import json

    path = Path(directory) / SETTINGS_FILE
    if not path.is_file():
        raise ModelError(f"{path} is missing: the adapter's settings were not saved")
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from exc
    if not isinstance(settings, dict) or not set(required) <= set(settings):
        have = sorted(settings) if isinstance(settings, dict) else type(settings).__name__
        raise ModelError(f"{path}: expected an object with {sorted(required)}, got {have}")
    return settings


_ADAPTERS: dict[str, str | type] = {
    "callable": "whyrec.models.adapters.plain:CallableScorer",
    "import": "whyrec.models.adapters.plain:ImportedScorer",
    "torchscript": "whyrec.models.adapters.plain:TorchScriptScorer",
    "implicit-als": "whyrec.models.adapters.implicit:ImplicitScorer",
    "implicit-bpr": "whyrec.models.adapters.implicit:ImplicitScorer",
    "lenskit": "whyrec.models.adapters.lenskit:LensKitScorer",
}


def register_adapter(name: str, cls: type | str) -> None:
    """Make an adapter class (or its ``"module:Class"`` path) known under ``name``."""
    _ADAPTERS[name] = cls


def adapter_names() -> list[str]:
    """Every adapter name: built-in, registered and declared by installed packages."""
    declared = [ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)]
    return sorted({*_ADAPTERS, *declared})


def adapter_class(name: str) -> type:
    """The class registered under ``name`` (it has ``load(directory, model)``)."""
    target = _ADAPTERS.get(name)
    if target is None:
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name == name:
                target = ep.value
                break
    if target is None:
        raise ModelError(f"unknown adapter {name!r}; known adapters: {adapter_names()}")
    if isinstance(target, str):
        target = import_object(target, what=f"adapter {name!r}")
    if not callable(getattr(target, "load", None)):
        raise ModelError(f"adapter {name!r} ({target!r}) has no load(directory, model) method")
    return target


_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def is_import_path(spec: Any) -> bool:
    """``module.path:object`` (and not a directory of that name)."""
    return (
        isinstance(spec, str)
        and bool(_IMPORT_PATH.fullmatch(spec))
        and not Path(spec).expanduser().exists()
    )


def import_object(spec: str, *, what: str = "object") -> Any:
    """The object named by ``module.path:attribute.path``."""
    if not _IMPORT_PATH.fullmatch(spec):
        raise ConfigError(f"{what}: {spec!r} is not an import path of the form module:object")
    module_name, _, attr = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{what}: cannot import module {module_name!r} ({exc})") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{what}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def model_from_import(spec: str, dataset: Dataset | None) -> Recommender:
    """The recommender named by an import path, for the entry points' ``MODEL`` argument.

    The object may be a fitted whyrec :class:`Recommender`, an :class:`OutsideScorer`, or a
    factory called with the dataset that returns one of the two.
    """
    if dataset is None:
        raise ConfigError(
            f"model {spec!r} is a Python import path: give the dataset it was trained on "
            "(dataset=... in Python, --data on the command line)"
        )
    obj = import_object(spec, what="model")
    if not isinstance(obj, Recommender) and not _is_scorer(obj) and callable(obj):
        obj = obj(dataset)
    if isinstance(obj, Recommender):
        obj.check_dataset(dataset)
        return obj
    if _is_scorer(obj):
        model = OutsideModel.wrap(obj, dataset)
        model.import_path = spec
        return model
    raise ConfigError(
        f"model {spec!r} is a {type(obj).__name__}: expected a whyrec Recommender, an outside "
        "scorer (an object with score(histories, users)) or a function of the dataset "
        "returning one"
    )


def _is_scorer(obj: Any) -> bool:
    return not isinstance(obj, type) and callable(getattr(obj, "score", None))


# --------------------------------------------------------------- id mapping
@dataclass(frozen=True)
class ItemMap:
    """Between whyrec's item indices and an outside model's item columns.

    ``columns[i]`` is the outside column of whyrec item ``i`` (−1: the outside model does
    not know it); ``items[c]`` the whyrec item of outside column ``c`` (−1 likewise).
    """

    columns: np.ndarray
    items: np.ndarray

    @classmethod
    def from_ids(cls, whyrec_ids: Sequence[str], outside_ids: Sequence[Any]) -> ItemMap:
        """Match by source item id (as strings): the usual case when both were built from
        the same data file."""
        ours = {str(v): i for i, v in enumerate(whyrec_ids)}
        items = np.array([ours.get(str(v), -1) for v in outside_ids], dtype=np.int64)
        columns = np.full(len(whyrec_ids), -1, dtype=np.int64)
        known = items >= 0
        columns[items[known]] = np.flatnonzero(known)
        if not known.any():
            raise ModelError(
                "no item id of the outside model is in the dataset: it was trained on other "
                f"data (first outside ids {list(outside_ids)[:3]!r}, first dataset ids "
                f"{list(whyrec_ids)[:3]!r})"
            )
        return cls(columns=columns, items=items)

    @classmethod
    def identity(cls, n: int) -> ItemMap:
        ar = np.arange(n, dtype=np.int64)
        return cls(columns=ar, items=ar.copy())

    def to_columns(self, history: np.ndarray) -> np.ndarray:
        """The outside columns of a history's items (items it does not know dropped)."""
        cols = self.columns[np.asarray(history, dtype=np.int64)]
        return cols[cols >= 0]

    def to_items(self, outside_scores: np.ndarray) -> np.ndarray:
        """Outside score rows ``(n, n_columns)`` → whyrec rows ``(n, n_items)``, ``-inf``
        for items the outside model does not know."""
        outside_scores = np.atleast_2d(np.asarray(outside_scores, dtype=np.float32))
        out = np.full((len(outside_scores), len(self.columns)), -np.inf, dtype=np.float32)
        known = self.columns >= 0
        out[:, known] = outside_scores[:, self.columns[known]]
        return out
