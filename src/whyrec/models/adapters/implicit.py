"""The ``implicit`` adapters: an ALS or BPR model trained with the ``implicit`` package.

The team trains with implicit's own API on a user × item CSR matrix (its values are the
confidences, as implicit expects) and hands the trained model, that matrix and the source
ids of its rows and columns to :class:`ImplicitScorer`; :meth:`OutsideModel.wrap
<whyrec.models.outside.OutsideModel.wrap>` makes it a whyrec recommender::

    scorer = ImplicitScorer(als, user_items, user_ids=user_ids, item_ids=item_ids)
    model = OutsideModel.wrap(scorer, dataset)

**ALS** (exact). A user's vector is always recomputed from the history being scored,
with implicit's own closed-form solve (``recalculate_user``): ``x = (YᵀY + λI +
Σ (c−1) y yᵀ)⁻¹ Σ c y`` over the history's items, ``c = alpha × confidence``. A history
item's confidence is the value in the user's row of the training matrix (split evenly
when the item occurs several times in the history), and ``default_confidence`` (1.0: one
interaction, as in a binary matrix) for an item that is not in that row — an item seen
after training, or any item of a history with no known user. Removing history items
solves the same system without them, so each counterfactual is exactly the model's
score for the shorter history (the full history is scored the same way, never with the
stored ``user_factors``); :meth:`ImplicitScorer.counterfactual_scores` batches those
solves.

**BPR** (approximate). implicit has no fold-in for BPR. A known user keeps the learned
vector; a history changes it by what a *linear fold-in* predicts: ``fold(h) = W ·
[mean of the history's item factors, 1]``, ``W`` fitted by ridge regression of the
learned user vectors on their training rows (``fold_in_ridge``). The vector for history
``h`` is ``learned + fold(h) − fold(training row)`` (exactly the learned vector for the
training history); a user the model does not know gets ``fold(h)``. So BPR evidence is
the change that fold-in predicts, not a retrained model: see
``docs/outside-models.md`` for how close it is.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from whyrec.errors import ModelError
from whyrec.io import write_json
from whyrec.models.outside import ItemMap

INSTALL_HINT = "pip install 'whyrec[implicit]'"
SETTINGS_FILE = "settings.json"
MODEL_FILE = "model.npz"
MATRIX_FILE = "user_items.npz"
KINDS = ("als", "bpr")


def _implicit_classes() -> tuple[type, type]:
    """implicit's CPU ALS and BPR classes (a clear error when the package is missing)."""
    try:
        from implicit.cpu.als import AlternatingLeastSquares
        from implicit.cpu.bpr import BayesianPersonalizedRanking
    except ImportError as exc:
        raise ModelError(
            f"the implicit adapters need the implicit package: {INSTALL_HINT} ({exc})"
        ) from exc
    return AlternatingLeastSquares, BayesianPersonalizedRanking


def _threads() -> int:
    from whyrec.models.training import thread_count

    return thread_count()


def interaction_matrix(
    dataset: Any, *, splits: Sequence[str] = ("train",), values: str = "ones"
) -> tuple[Any, list[str], list[str]]:
    """The user × item CSR matrix implicit trains on, built from a whyrec dataset.

    Rows are the dataset's users and columns its items, in the dataset's order (so the
    adapter's default ids fit); ``values``: ``"ones"`` (1 per interaction, repeats add
    up) or ``"rating"`` (the rating column). Returns ``(matrix, user_ids, item_ids)``.
    """
    import scipy.sparse as sp

    if values not in ("ones", "rating"):
        raise ModelError(f"values must be 'ones' or 'rating', got {values!r}")
    inter = dataset.interactions
    inter = inter[inter["split"].isin(list(splits))]
    if values == "rating":
        data = inter["rating"].to_numpy(dtype=np.float32)
    else:
        data = np.ones(len(inter), dtype=np.float32)
    matrix = sp.csr_matrix(
        (data, (inter["user_idx"].to_numpy(), inter["item_idx"].to_numpy())),
        shape=(dataset.n_users, dataset.n_items),
        dtype=np.float32,
    )
    matrix.sum_duplicates()
    users = dataset.users["user_id"].astype(str).tolist()
    items = dataset.items["item_id"].astype(str).tolist()
    return matrix, users, items


def _check_ids(ids: Sequence[Any] | None, n: int, what: str) -> list[str] | None:
    if ids is None:
        return None
    out = [str(i) for i in ids]
    if len(out) != n:
        raise ModelError(
            f"implicit adapter: {len(out)} {what}_ids for a user_items matrix with {n} "
            f"{'rows' if what == 'user' else 'columns'}; give one id per "
            f"{'row' if what == 'user' else 'column'}"
        )
    if len(set(out)) != len(out):
        dup = next(i for i in out if out.count(i) > 1)
        raise ModelError(f"implicit adapter: {what}_ids repeats {dup!r}; ids must be unique")
    return out


class ImplicitScorer:
    """An implicit ``AlternatingLeastSquares`` or ``BayesianPersonalizedRanking`` model
    (the CPU classes) behind :class:`~whyrec.models.outside.OutsideScorer`.

    ``user_items``: the CSR matrix it was trained on (rows users, columns items, values
    the confidences before implicit's ``alpha``); ``user_ids`` / ``item_ids``: the
    source ids of its rows and columns (default: the dataset's users and items in order,
    as :func:`interaction_matrix` builds them). ``default_confidence``: the confidence of
    a history item that is not in the user's training row (ALS). ``fold_in_ridge``: the
    ridge of BPR's linear fold-in. ``attribution_window``: how many of the most recent
    history items the evidence tries removing (0: all — order means nothing to a matrix
    factorisation). The model's ``num_threads`` is set to whyrec's thread count
    (``$WHYREC_THREADS``, else the available cores).
    """

    uses_history = True

    def __init__(
        self,
        model: Any,
        user_items: Any,
        *,
        user_ids: Sequence[Any] | None = None,
        item_ids: Sequence[Any] | None = None,
        default_confidence: float = 1.0,
        fold_in_ridge: float = 0.1,
        attribution_window: int = 0,
    ) -> None:
        import scipy.sparse as sp

        als_cls, bpr_cls = _implicit_classes()
        if isinstance(model, als_cls):
            self.kind = "als"
        elif isinstance(model, bpr_cls):
            self.kind = "bpr"
        else:
            module = type(model).__module__
            hint = (
                " (a GPU model: convert it with model.to_cpu() first)"
                if module.startswith("implicit.gpu")
                else ""
            )
            raise ModelError(
                f"implicit adapter: expected implicit.cpu.als.AlternatingLeastSquares or "
                f"implicit.cpu.bpr.BayesianPersonalizedRanking, got {module}."
                f"{type(model).__name__}{hint}"
            )
        if getattr(model, "item_factors", None) is None or model.user_factors is None:
            raise ModelError(
                f"implicit adapter: the {type(model).__name__} is not trained; call "
                "model.fit(user_items) first"
            )
        if not sp.issparse(user_items):
            raise ModelError(
                "implicit adapter: user_items must be the scipy.sparse CSR matrix the model "
                f"was trained on (users × items), got {type(user_items).__name__}"
            )
        matrix = sp.csr_matrix(user_items, dtype=np.float32)
        want = (model.user_factors.shape[0], model.item_factors.shape[0])
        if matrix.shape != want:
            raise ModelError(
                f"implicit adapter: user_items has shape {matrix.shape} but the model has "
                f"{want[0]} users and {want[1]} items; pass the matrix it was trained on"
            )
        if not np.isfinite(matrix.data).all():
            raise ModelError("implicit adapter: user_items holds NaN or infinite values")
        matrix.sum_duplicates()
        matrix.eliminate_zeros()
        matrix.sort_indices()
        if not np.isfinite(default_confidence) or default_confidence <= 0:
            raise ModelError(
                f"implicit adapter: default_confidence must be > 0, got {default_confidence!r}"
            )
        self.model = model
        self.model.num_threads = _threads()
        self.user_items = matrix
        self.user_ids = _check_ids(user_ids, matrix.shape[0], "user")
        self.item_ids = _check_ids(item_ids, matrix.shape[1], "item")
        self.default_confidence = float(default_confidence)
        self.fold_in_ridge = float(fold_in_ridge)
        self.attribution_window = int(attribution_window)
        self.adapter = f"implicit-{self.kind}"
        self.item_map: ItemMap | None = None
        self.user_rows: np.ndarray | None = None
        self._fold: np.ndarray | None = None

    # ------------------------------------------------------------- binding
    def bind(self, model: Any) -> None:
        """Map whyrec's item and user indices to the matrix's columns and rows."""
        n_rows, n_cols = self.user_items.shape
        whyrec_items = [str(i) for i in model.item_ids]
        whyrec_users = [str(u) for u in model.user_ids]
        if self.item_ids is None:
            if n_cols != len(whyrec_items):
                raise ModelError(
                    f"implicit adapter: the model has {n_cols} items but the dataset has "
                    f"{len(whyrec_items)}; give item_ids (the source id of each column)"
                )
            self.item_ids = whyrec_items
        if self.user_ids is None:
            if n_rows != len(whyrec_users):
                raise ModelError(
                    f"implicit adapter: the model has {n_rows} users but the dataset has "
                    f"{len(whyrec_users)}; give user_ids (the source id of each row)"
                )
            self.user_ids = whyrec_users
        self.item_map = ItemMap.from_ids(whyrec_items, self.item_ids)
        rows = {u: r for r, u in enumerate(self.user_ids)}
        self.user_rows = np.array([rows.get(u, -1) for u in whyrec_users], dtype=np.int64)
        if self.kind == "bpr":
            self._fold = self._fit_fold_in()

    def _bound(self) -> tuple[ItemMap, np.ndarray]:
        if self.item_map is None or self.user_rows is None:
            raise ModelError(
                "implicit adapter: not bound to a dataset; wrap it with "
                "OutsideModel.wrap(scorer, dataset)"
            )
        return self.item_map, self.user_rows

    def _row(self, user: Any) -> int:
        """The matrix row of a whyrec user index (−1: none, or unknown to the model)."""
        if user is None:
            return -1
        return int(self._bound()[1][int(user)])

    # --------------------------------------------------------- confidences
    def _positions(self, history: np.ndarray, row: int) -> tuple[np.ndarray, np.ndarray]:
        """Per history position: the model's column (−1 unknown) and its confidence
        (a training-row value split evenly over the positions of its item; else
        ``default_confidence``)."""
        item_map, _ = self._bound()
        cols = item_map.columns[np.asarray(history, dtype=np.int64)]
        conf = np.where(cols >= 0, self.default_confidence, 0.0)
        if row >= 0:
            lo, hi = self.user_items.indptr[row], self.user_items.indptr[row + 1]
            r_cols, r_vals = self.user_items.indices[lo:hi], self.user_items.data[lo:hi]
            where = np.searchsorted(r_cols, cols)
            where = np.minimum(where, max(len(r_cols) - 1, 0))
            in_row = (cols >= 0) & (len(r_cols) > 0)
            if len(r_cols):
                in_row &= r_cols[where] == cols
            if in_row.any():
                uniq, counts = np.unique(cols[in_row], return_counts=True)
                share = dict(zip(uniq.tolist(), counts.tolist(), strict=True))
                k = np.array([share[c] for c in cols[in_row]], dtype=np.float64)
                conf[in_row] = r_vals[where[in_row]] / k
        return cols, conf

    def _csr_rows(self, histories: Sequence[np.ndarray], rows: Sequence[int]) -> Any:
        """One CSR row per history: its known columns and their summed confidences."""
        import scipy.sparse as sp

        indptr, indices, data = [0], [], []
        for hist, row in zip(histories, rows, strict=True):
            cols, conf = self._positions(hist, row)
            known = cols >= 0
            uniq, inv = np.unique(cols[known], return_inverse=True)
            indices.append(uniq)
            data.append(np.bincount(inv, weights=conf[known], minlength=len(uniq)))
            indptr.append(indptr[-1] + len(uniq))
        return sp.csr_matrix(
            (
                np.concatenate(data).astype(np.float32) if data else np.empty(0, np.float32),
                np.concatenate(indices).astype(np.int32) if indices else np.empty(0, np.int32),
                np.array(indptr, dtype=np.int64),
            ),
            shape=(len(rows), self.user_items.shape[1]),
        )

    # ------------------------------------------------------------- scoring
    def score(self, histories: Sequence[np.ndarray], users: np.ndarray | None) -> np.ndarray:
        item_map, _ = self._bound()
        rows = [self._row(None if users is None else users[i]) for i in range(len(histories))]
        if not histories:
            return np.empty((0, len(item_map.columns)), dtype=np.float32)
        if self.kind == "als":
            vectors = self.user_vectors_als(histories, rows)
        else:
            vectors = self.user_vectors_bpr(histories, rows)
        return item_map.to_items(vectors @ self.model.item_factors.T)

    def user_vectors_als(self, histories: Sequence[np.ndarray], rows: Sequence[int]) -> Any:
        """ALS user vectors recomputed from each history by implicit's
        ``recalculate_user`` (one call for the batch)."""
        matrix = self._csr_rows(histories, rows)
        return np.atleast_2d(self.model.recalculate_user(np.arange(len(rows)), matrix))

    def user_vectors_bpr(self, histories: Sequence[np.ndarray], rows: Sequence[int]) -> Any:
        """BPR user vectors: learned + fold(history) − fold(training row) for known users,
        fold(history) for others; the last column (item bias) is 1."""
        fold = self._fold_in([np.unique(self._positions(h, -1)[0]) for h in histories])
        known = np.array(rows, dtype=np.int64)
        has = known >= 0
        if has.any():
            ui = self.user_items
            train = [ui.indices[ui.indptr[r] : ui.indptr[r + 1]] for r in known[has]]
            fold[has] += self.model.user_factors[known[has], :-1] - self._fold_in(train)
        return np.hstack([fold, np.ones((len(fold), 1))]).astype(np.float32)

    def _features(self, column_sets: Sequence[np.ndarray]) -> np.ndarray:
        """Mean item factor (bias column left out) of each set of columns, then a 1."""
        factors = self.model.item_factors[:, :-1].astype(np.float64)
        out = np.zeros((len(column_sets), factors.shape[1] + 1))
        out[:, -1] = 1.0
        for i, cols in enumerate(column_sets):
            cols = cols[cols >= 0]
            if len(cols):
                out[i, :-1] = factors[cols].mean(0)
        return out

    def _fold_in(self, column_sets: Sequence[np.ndarray]) -> np.ndarray:
        assert self._fold is not None
        return self._features(column_sets) @ self._fold

    def _fit_fold_in(self) -> np.ndarray:
        """Ridge regression of the learned user vectors on their training rows' features."""
        ui = self.user_items
        rows = np.flatnonzero(np.diff(ui.indptr) > 0)
        if len(rows) == 0:
            raise ModelError("implicit adapter: user_items has no interactions")
        feats = self._features([ui.indices[ui.indptr[r] : ui.indptr[r + 1]] for r in rows])
        target = self.model.user_factors[rows, :-1].astype(np.float64)
        gram = feats.T @ feats + self.fold_in_ridge * np.eye(feats.shape[1])
        return np.linalg.solve(gram, feats.T @ target)

    # ----------------------------------------------------- counterfactuals
    def counterfactual_scores(
        self, history: np.ndarray, user: int | None, removals: Sequence[tuple[int, ...]]
    ) -> np.ndarray:
        """The full history's scores, then the history without each removal's positions.

        ALS: the closed-form solve ``recalculate_user`` does, in float64, for every
        variant in one batch (the base system updated by the removed items' rank-one
        terms). BPR: the fold-in of :meth:`user_vectors_bpr` for each variant.
        """
        from whyrec.models.outside import drop_positions_all

        item_map, _ = self._bound()
        row = self._row(user)
        if self.kind == "bpr":
            variants = drop_positions_all(np.asarray(history), removals)
            vectors = self.user_vectors_bpr(variants, [row] * len(variants))
            return item_map.to_items(vectors @ self.model.item_factors.T)
        vectors = self._als_variants(np.asarray(history), row, removals)
        return item_map.to_items(
            (vectors @ self.model.item_factors.T.astype(np.float64)).astype(np.float32)
        )

    def _als_variants(
        self, history: np.ndarray, row: int, removals: Sequence[tuple[int, ...]]
    ) -> np.ndarray:
        model = self.model
        y = model.item_factors.astype(np.float64)
        alpha = float(model.alpha)
        cols, conf = self._positions(history, row)
        known = cols >= 0
        uniq, inv = np.unique(cols[known], return_inverse=True)
        total = np.bincount(inv, weights=conf[known], minlength=len(uniq))
        count = np.bincount(inv, minlength=len(uniq))
        slot = np.full(len(history), -1, dtype=np.int64)
        slot[known] = inv

        def weights(c: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            a = alpha * c
            return (
                np.where(present, np.abs(a) - 1.0, 0.0),
                np.where(present & (a > 0), a, 0.0),
            )

        wa, wb = weights(total, count > 0)
        ys = y[uniq]
        f = y.shape[1]
        base_a = y.T @ y + model.regularization * np.eye(f) + (ys.T * wa) @ ys
        base_b = ys.T @ wb
        n = 1 + len(removals)
        a_stack = np.broadcast_to(base_a, (n, f, f)).copy()
        b_stack = np.broadcast_to(base_b, (n, f)).copy()
        for v, positions in enumerate(removals, start=1):
            pos = np.asarray(_kept_removal(positions, len(history)), dtype=np.int64)
            pos = pos[slot[pos] >= 0]
            if not len(pos):
                continue
            touched, removed_conf = np.unique(slot[pos], return_inverse=True)
            dc = np.bincount(removed_conf, weights=conf[pos], minlength=len(touched))
            dn = np.bincount(removed_conf, minlength=len(touched))
            new_c, new_n = total[touched] - dc, count[touched] - dn
            na, nb = weights(new_c, new_n > 0)
            oa, ob = wa[touched], wb[touched]
            yt = ys[touched]
            a_stack[v] += (yt.T * (na - oa)) @ yt
            b_stack[v] += yt.T @ (nb - ob)
        return np.linalg.solve(a_stack, b_stack[..., None])[..., 0]

    # ------------------------------------------------------------------ io
    def save(self, directory: Path) -> None:
        import scipy.sparse as sp

        directory = Path(directory)
        self.model.save(str(directory / MODEL_FILE))
        sp.save_npz(directory / MATRIX_FILE, self.user_items)
        write_json(
            directory / SETTINGS_FILE,
            {
                "kind": self.kind,
                "user_ids": self.user_ids,
                "item_ids": self.item_ids,
                "default_confidence": self.default_confidence,
                "fold_in_ridge": self.fold_in_ridge,
                "attribution_window": self.attribution_window,
            },
        )

    @classmethod
    def load(cls, directory: Path, model: Any) -> ImplicitScorer:
        import scipy.sparse as sp

        als_cls, bpr_cls = _implicit_classes()
        directory = Path(directory)
        settings = _read_settings(directory / SETTINGS_FILE)
        for name in (MODEL_FILE, MATRIX_FILE):
            if not (directory / name).is_file():
                raise ModelError(f"{directory / name} is missing: the implicit model was not saved")
        kind = settings["kind"]
        try:
            with warnings.catch_warnings():
                # implicit's advice on BLAS threads is about training, which whyrec never does
                warnings.filterwarnings("ignore", ".*BLAS is configured", RuntimeWarning)
                trained = (als_cls if kind == "als" else bpr_cls).load(str(directory / MODEL_FILE))
            matrix = sp.load_npz(directory / MATRIX_FILE)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"{directory}: cannot read the implicit model ({exc})") from exc
        scorer = cls(
            trained,
            matrix,
            user_ids=settings.get("user_ids"),
            item_ids=settings.get("item_ids"),
            default_confidence=settings.get("default_confidence", 1.0),
            fold_in_ridge=settings.get("fold_in_ridge", 0.1),
            attribution_window=settings.get("attribution_window", 0),
        )
        scorer.bind(model)
        return scorer


def _kept_removal(positions: Sequence[int], n: int) -> list[int]:
    """Positions removed, as :func:`whyrec.models.attribution.drop_positions` removes them
    (removing every item leaves the history as it is)."""
    pos = sorted({int(p) for p in positions})
    return [] if len(pos) >= n else pos


def _read_settings(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ModelError(f"{path} is missing: the adapter's settings were not saved")
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from exc
    if not isinstance(settings, dict) or settings.get("kind") not in KINDS:
        raise ModelError(f"{path}: expected an object with 'kind' 'als' or 'bpr'")
    return settings
