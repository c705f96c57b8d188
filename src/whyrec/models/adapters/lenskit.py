"""A trained LensKit pipeline (or scorer component) behind whyrec's evidence and reasons.

Every score comes from LensKit itself: for a history, the adapter builds LensKit's own
query — a :class:`lenskit.data.RecQuery` whose ``history_items`` is the history as an
:class:`~lenskit.data.ItemList` of the model's item ids — and asks the pipeline's scorer
node for the scores of every item it knows (``pipeline.run("scorer", query=..., items=...)``).
A history item removed by whyrec's counterfactual evidence is simply left out of that
query, so the evidence is what LensKit computes for the shorter history:

- item-kNN (:class:`lenskit.knn.ItemKNNScorer`) scores from the query's items, so a
  removal changes exactly the items whose neighbourhood it was in;
- implicit ALS (:class:`lenskit.als.ImplicitMFScorer`, default ``user_embeddings=True``)
  *folds the user in* from the query's items whenever the query has any (one regularised
  least-squares solve against the fixed item embeddings, the same step as training); the
  embedding it learned for the user in training is used only for an empty history. With
  ``user_embeddings="prefer"`` LensKit ignores the history of a known user, so history
  removals change nothing; the adapter then reports ``uses_history = False``.

Scorers that need a rating per history item (item-kNN with ``feedback="explicit"``,
``ImplicitMFScorer(use_ratings=True)``, the explicit ``BiasedMFScorer``) cannot be driven
from whyrec's histories, which list items only: the adapter refuses them with a clear error.

LensKit treats a history as a set (its queries are de-duplicated), so the adapter passes
each distinct item once (its most recent occurrence). History items the model does not
know are left out of the query. Items LensKit cannot score (``NaN``: no neighbours, an
item it was not trained on) get ``-inf``.

Saving pickles the pipeline — LensKit's documented way to keep a trained pipeline — next to
a JSON file with the item ids and settings. **A pickle runs code when it is read: load
model directories only from sources you trust**, as for any pickled model.
"""

from __future__ import annotations

import hashlib
import importlib
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from whyrec.errors import ModelError
from whyrec.io import write_json
from whyrec.models.outside import SETTINGS_FILE, ItemMap, read_adapter_settings

MODEL_FILE = "lenskit.pkl"
INSTALL_HINT = "pip install 'whyrec[lenskit]'"


def _lenskit() -> Any:
    """The ``lenskit`` package, or a clear error naming the extra to install."""
    try:
        return importlib.import_module("lenskit")
    except ImportError as exc:
        raise ModelError(
            f"the LensKit adapter needs LensKit, which is not installed ({exc}): {INSTALL_HINT}"
        ) from exc


def _init_threads() -> None:
    """Keep LensKit and torch to whyrec's thread setting.

    LensKit sets up its own parallelism (a Rust thread pool, BLAS and torch threads) the
    first time a component needs it, with defaults that can differ from whyrec's
    (``$WHYREC_THREADS``, else every core this process may use). If LensKit has not done so
    yet, the adapter initialises it with whyrec's count; either way torch's intra-op threads
    are put back to whyrec's count (LensKit's Rust pool, once started, keeps its size).
    """
    import torch
    from lenskit.parallel import config as lk_parallel

    from whyrec.models.training import configure_threads

    configure_threads()
    n = torch.get_num_threads()
    if getattr(lk_parallel, "_config", None) is None:
        lk_parallel.initialize(processes=1, threads=n, backend_threads=n)
    configure_threads()


class LensKitScorer:
    """Scores of every item from a trained LensKit pipeline or scorer component.

    ``model``: a trained :class:`lenskit.pipeline.Pipeline` (e.g. from
    ``lenskit.topn_pipeline(scorer)`` then ``pipeline.train(data)``) or a trained scorer
    component (e.g. :class:`lenskit.knn.ItemKNNScorer`). ``node``: the pipeline node that
    scores (``"scorer"`` in LensKit's standard pipelines). ``item_ids``: the ids of the items
    to score; by default the scorer's own item vocabulary (every item it was trained on).
    ``uses_history``: whether scores depend on the history; by default ``True`` except
    for an ALS scorer configured with ``user_embeddings="prefer"``.

    Through a standard LensKit pipeline (scorer fed by the ``history-lookup`` component and
    the ``items`` input) the adapter runs the same two components the pipeline would run,
    without the pipeline runner's per-call bookkeeping (same scores, several times faster
    for ALS); any other wiring goes through ``pipeline.run(node, query=..., items=...)``.
    """

    adapter = "lenskit"

    def __init__(
        self,
        model: Any,
        *,
        node: str = "scorer",
        item_ids: Sequence[Any] | None = None,
        uses_history: bool | None = None,
    ) -> None:
        lk = _lenskit()
        from lenskit.data import Vocabulary
        from lenskit.pipeline import Pipeline

        self.node = str(node)
        self.pipeline: Any = None
        if isinstance(model, Pipeline):
            self.pipeline = model
            if model.node(self.node, missing="none") is None:
                raise ModelError(
                    f"lenskit adapter: the pipeline has no node {self.node!r}; its components "
                    f"are {model.component_names()} (pass node=...)"
                )
            component = model.component(self.node)
            if component is None:
                raise ModelError(
                    f"lenskit adapter: pipeline node {self.node!r} is not a component instance"
                )
        elif callable(model) and not isinstance(model, type):
            component = model
        else:
            raise ModelError(
                f"lenskit adapter: expected a trained LensKit Pipeline or scorer component, "
                f"got {type(model).__name__}"
            )
        self.component = component
        self.lenskit_version = str(getattr(lk, "__version__", "unknown"))
        _check_feedback(component)

        vocab = getattr(component, "items", None)
        self._vocab = vocab if isinstance(vocab, Vocabulary) else None
        if item_ids is None:
            if self._vocab is None:
                raise ModelError(
                    f"lenskit adapter: {type(component).__name__} has no item vocabulary — "
                    "it is not trained (call pipeline.train(data) first), or it keeps none: "
                    "pass item_ids (the ids of the items to score)"
                )
            ids = list(self._vocab.ids())
        else:
            ids = list(item_ids)
            if not ids:
                raise ModelError("lenskit adapter: item_ids is empty")
            if self._vocab is not None and not _same_ids(ids, self._vocab):
                self._vocab = None  # score by id: the list differs from the scorer's own
        self.item_ids = [i.item() if isinstance(i, np.generic) else i for i in ids]
        users = getattr(component, "users", None)
        self._user_vocab = users if isinstance(users, Vocabulary) else None
        prefer = getattr(getattr(component, "config", None), "user_embeddings", None) == "prefer"
        self.uses_history = (not prefer) if uses_history is None else bool(uses_history)
        #: LensKit reads a history as a set: evidence tries removing every item, not only
        #: the most recent (0 = the whole history; see OutsideModel.attribution)
        self.attribution_window = 0
        self._direct = self.pipeline is None or _standard_wiring(self.pipeline, self.node)
        self._lookup = (
            None
            if self.pipeline is None or not self._direct
            else self.pipeline.component(self.pipeline.node_input_connections(self.node)["query"])
        )
        self.item_map: ItemMap | None = None
        self._user_keys: list[Any] | None = None
        self._all_items: Any = None
        _init_threads()

    # ------------------------------------------------------------ catalogue
    def bind(self, model: Any) -> None:
        """Map whyrec's items (and users) to LensKit's ids; called by ``OutsideModel.wrap``."""
        from lenskit.data import ItemList

        self.item_map = ItemMap.from_ids([str(i) for i in model.item_ids], self.item_ids)
        if self._vocab is not None:
            self._all_items = ItemList(
                item_nums=np.arange(len(self.item_ids), dtype=np.int32), vocabulary=self._vocab
            )
        else:
            self._all_items = ItemList(item_ids=np.asarray(self.item_ids))
        self._id_array = np.asarray(self.item_ids, dtype=object)
        if self._user_vocab is not None:
            theirs = {
                str(u): (u.item() if isinstance(u, np.generic) else u)
                for u in self._user_vocab.ids()
            }
            self._user_keys = [theirs.get(str(u), str(u)) for u in model.user_ids]
        else:
            self._user_keys = [str(u) for u in model.user_ids]

    # -------------------------------------------------------------- scoring
    def score(self, histories: Sequence[np.ndarray], users: np.ndarray | None) -> np.ndarray:
        if self.item_map is None:
            raise ModelError(
                "lenskit adapter: not bound to a catalogue; wrap it with "
                "OutsideModel.wrap(scorer, dataset)"
            )
        rows = np.empty((len(histories), len(self.item_ids)), dtype=np.float32)
        for r, hist in enumerate(histories):
            user = None if users is None else int(users[r])
            rows[r] = self._score_one(np.asarray(hist, dtype=np.int64), user)
        return self.item_map.to_items(rows)

    def query(self, history: np.ndarray, user: int | None) -> Any:
        """LensKit's query for a whyrec history (internal item indices, oldest first)."""
        from lenskit.data import ItemList, RecQuery

        assert self.item_map is not None and self._user_keys is not None
        cols = self.item_map.to_columns(history)
        # LensKit histories are sets: each item once, in order of its last occurrence
        _, last = np.unique(cols[::-1], return_index=True)
        cols = cols[::-1][np.sort(last)][::-1]
        if self._vocab is not None:
            items = ItemList(item_nums=cols.astype(np.int32), vocabulary=self._vocab)
        else:
            items = ItemList(item_ids=self._id_array[cols])
        user_id = None if user is None else self._user_keys[user]
        return RecQuery(user_id=user_id, history_items=items)

    def _score_one(self, history: np.ndarray, user: int | None) -> np.ndarray:
        query = self.query(history, user)
        try:
            if self.pipeline is None:
                out = self.component(query, self._all_items)
            elif self._direct:
                out = self.component(self._lookup(query), self._all_items)
            else:
                out = self.pipeline.run(self.node, query=query, items=self._all_items)
        except (RuntimeError, ValueError, KeyError) as exc:
            if "rating" in str(exc):
                raise ModelError(
                    f"lenskit adapter: {type(self.component).__name__} needs a rating for "
                    f"each history item ({exc}); whyrec histories list items only — use an "
                    "implicit-feedback configuration"
                ) from exc
            raise ModelError(f"lenskit adapter: LensKit failed to score ({exc})") from exc
        return self._aligned(out)

    def _aligned(self, out: Any) -> np.ndarray:
        """LensKit's output list as one score per entry of ``item_ids`` (NaN → -inf)."""
        scores = out.scores("numpy")
        row = np.full(len(self.item_ids), -np.inf, dtype=np.float32)
        if scores is None:
            return row
        if self._vocab is not None:
            cols = out.numbers(vocabulary=self._vocab, missing="negative")
        else:
            cols = self._all_items_numbers(out)
        ok = cols >= 0
        row[cols[ok]] = np.asarray(scores, dtype=np.float32)[ok]
        row[np.isnan(row)] = -np.inf
        return row

    def _all_items_numbers(self, out: Any) -> np.ndarray:
        lookup = self.__dict__.get("_id_lookup")
        if lookup is None:
            lookup = self.__dict__["_id_lookup"] = {str(i): c for c, i in enumerate(self.item_ids)}
        return np.array([lookup.get(str(i), -1) for i in out.ids()], dtype=np.int64)

    # ----------------------------------------------------------------- io
    def save(self, directory: Path) -> None:
        """``lenskit.pkl`` (the pickled pipeline or component) and ``settings.json``."""
        blob = pickle.dumps(self.pipeline if self.pipeline is not None else self.component)
        (directory / MODEL_FILE).write_bytes(blob)
        write_json(
            directory / SETTINGS_FILE,
            {
                "kind": "pipeline" if self.pipeline is not None else "component",
                "node": self.node,
                "item_ids": self.item_ids,
                "uses_history": self.uses_history,
                "lenskit_version": self.lenskit_version,
                "sha256": hashlib.sha256(blob).hexdigest(),
            },
        )

    @classmethod
    def load(cls, directory: Path, model: Any) -> LensKitScorer:
        """Read what :meth:`save` wrote. Unpickles ``lenskit.pkl``: trusted sources only."""
        lk = _lenskit()
        settings = read_adapter_settings(
            directory,
            sorted({"kind", "node", "item_ids", "uses_history", "lenskit_version", "sha256"}),
        )
        path = directory / MODEL_FILE
        if not path.is_file():
            raise ModelError(f"{path} is missing: the LensKit pipeline was not saved")
        blob = path.read_bytes()
        digest = hashlib.sha256(blob).hexdigest()
        if digest != settings["sha256"]:
            raise ModelError(
                f"{path}: sha256 {digest} does not match {directory / SETTINGS_FILE} "
                f"({settings['sha256']}): the file was changed or truncated after saving"
            )
        try:
            obj = pickle.loads(blob)  # trusted model directories only (documented)
        except Exception as exc:  # unpickling runs foreign code: any error is possible
            raise ModelError(
                f"{path}: cannot read the pickled LensKit {settings['kind']} ({exc}); it was "
                f"saved with LensKit {settings['lenskit_version']}, this is LensKit "
                f"{getattr(lk, '__version__', 'unknown')}"
            ) from exc
        scorer = cls(
            obj,
            node=settings["node"],
            item_ids=settings["item_ids"],
            uses_history=settings["uses_history"],
        )
        scorer.bind(model)
        return scorer


def _check_feedback(component: Any) -> None:
    """Refuse scorers that need a rating for every history item (whyrec has none)."""
    config = getattr(component, "config", None)
    name = type(component).__name__
    if getattr(config, "feedback", None) == "explicit":
        raise ModelError(
            f"lenskit adapter: {name} is configured with feedback='explicit', which needs a "
            "rating for each history item; whyrec histories list items only — train it with "
            "feedback='implicit'"
        )
    if getattr(config, "use_ratings", False):
        raise ModelError(
            f"lenskit adapter: {name} is configured with use_ratings=True, which needs a "
            "rating for each history item; whyrec histories list items only — train it with "
            "use_ratings=False"
        )
    if name == "BiasedMFScorer":
        raise ModelError(
            "lenskit adapter: BiasedMFScorer (explicit ALS) folds a user in from ratings; "
            "whyrec histories list items only — use ImplicitMFScorer"
        )


def _same_ids(ids: list[Any], vocab: Any) -> bool:
    theirs = vocab.ids()
    return len(ids) == len(theirs) and all(
        str(a) == str(b) for a, b in zip(ids, theirs, strict=True)
    )


def _standard_wiring(pipeline: Any, node: str) -> bool:
    """Is ``node`` fed as in LensKit's standard pipelines — query from the
    ``UserTrainingHistoryLookup`` of the ``query`` input, items from the ``items`` input
    (directly or as the first choice over a candidate selector)? Then calling those two
    components gives what ``pipeline.run`` gives."""
    from lenskit.basic.history import UserTrainingHistoryLookup
    from lenskit.pipeline.nodes import ComponentInstanceNode, InputNode

    conns = pipeline.node_input_connections(node)
    if set(conns) != {"query", "items"}:
        return False
    lookup, items = conns["query"], conns["items"]
    if not (
        isinstance(lookup, ComponentInstanceNode)
        and type(lookup.component) is UserTrainingHistoryLookup
    ):
        return False
    src = pipeline.node_input_connections(lookup)
    if set(src) != {"query"} or not isinstance(src["query"], InputNode):
        return False
    if isinstance(items, InputNode):
        return items.name == "items"
    if isinstance(items, ComponentInstanceNode) and (
        getattr(items.component, "__name__", "") == "fallback_on_none"
    ):
        primary = pipeline.node_input_connections(items).get("primary")
        return isinstance(primary, InputNode) and primary.name == "items"
    return False
