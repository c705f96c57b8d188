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

**BPR** (approximate). implicit has no fold-in for BPR (its user vectors come from SGD).
The adapter re-optimises BPR's own loss for one user with the item factors frozen —
``u*(P) = argmax_u mean over (i ∈ P, j ∉ P) of log σ(x_ui − x_uj) − (λ/2)|u|²``, the
point implicit's SGD updates of that user move towards — by Newton's method. A known
user's vector for history ``h`` is ``learned + u*(h) − u*(training row)`` (the learned
vector itself for the training history, so recommendations are implicit's own); a user
the model does not know gets ``u*(h)``. A removal's score is one Newton step from
``u*(h)`` on the loss without the removed items (the full history's Hessian), batched
for all removals: an influence-function estimate of re-optimising, not a retrained
model (see ``docs/outside-models.md`` for how close it is).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from whyrec.errors import ModelError
from whyrec.io import write_json
from whyrec.models.outside import SETTINGS_FILE, ItemMap, read_adapter_settings

INSTALL_HINT = "pip install 'whyrec[implicit]'"
MODEL_FILE = "model.npz"
MATRIX_FILE = "user_items.npz"
KINDS = ("als", "bpr")
#: BPR: how many users' training-row optima are kept (one ``f``-vector each)
TRAINED_CACHE = 100_000


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


def _source_ids(given: list[str] | None, n: int, ours: list[str], what: str) -> list[str]:
    """The source id of each of the matrix's ``n`` rows (``what`` "user") or columns
    ("item"): ``given``, else whyrec's own ids, which must then be as many."""
    if given is not None:
        return given
    if n != len(ours):
        axis = "row" if what == "user" else "column"
        raise ModelError(
            f"implicit adapter: the model has {n} {what}s but the dataset has "
            f"{len(ours)}; give {what}_ids (the source id of each {axis})"
        )
    return ours


class ImplicitScorer:
    """An implicit ``AlternatingLeastSquares`` or ``BayesianPersonalizedRanking`` model
    (the CPU classes) behind :class:`~whyrec.models.outside.OutsideScorer`.

    ``user_items``: the CSR matrix it was trained on (rows users, columns items, values
    the confidences before implicit's ``alpha``); ``user_ids`` / ``item_ids``: the
    source ids of its rows and columns (default: the dataset's users and items in order,
    as :func:`interaction_matrix` builds them). ``default_confidence``: the confidence of
    a history item that is not in the user's training row (ALS). ``attribution_window``:
    how many of the most recent history items the evidence tries removing (0: all —
    order means nothing to a matrix factorisation). The model's ``num_threads`` is set to
    whyrec's thread count (``$WHYREC_THREADS``, else the available cores).
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
        self.attribution_window = int(attribution_window)
        self.adapter = f"implicit-{self.kind}"
        self.item_map: ItemMap | None = None
        self.user_rows: np.ndarray | None = None
        self._trained_optimum: dict[int, np.ndarray] = {}  # BPR: u*(training row)

    # ------------------------------------------------------------- binding
    def bind(self, model: Any) -> None:
        """Map whyrec's item and user indices to the matrix's columns and rows."""
        n_rows, n_cols = self.user_items.shape
        whyrec_items = [str(i) for i in model.item_ids]
        whyrec_users = [str(u) for u in model.user_ids]
        self.item_ids = _source_ids(self.item_ids, n_cols, whyrec_items, "item")
        self.user_ids = _source_ids(self.user_ids, n_rows, whyrec_users, "user")
        self.item_map = ItemMap.from_ids(whyrec_items, self.item_ids)
        rows = {u: r for r, u in enumerate(self.user_ids)}
        self.user_rows = np.array([rows.get(u, -1) for u in whyrec_users], dtype=np.int64)

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
        """BPR user vectors: learned + u*(history) − u*(training row) for known users,
        u*(history) for others (:func:`bpr_optimum`); the last column (bias) is 1."""
        out = np.ones((len(histories), self.model.item_factors.shape[1]), dtype=np.float64)
        for n, (hist, row) in enumerate(zip(histories, rows, strict=True)):
            out[n, :-1] = self._bpr_vector(self._positives(hist), row)[0]
        return out.astype(np.float32)

    def _positives(self, history: np.ndarray) -> np.ndarray:
        cols = self._positions(history, -1)[0]
        return np.unique(cols[cols >= 0])

    def _bpr_vector(self, positives: np.ndarray, row: int) -> tuple[np.ndarray, np.ndarray]:
        """(the user's vector, u*(positives)) without the bias column."""
        factors = self._factors64()
        if row < 0:
            optimum = bpr_optimum(factors, positives, self.model.regularization)
            return optimum, optimum
        learned = self.model.user_factors[row, :-1].astype(np.float64)
        ui = self.user_items
        trained = ui.indices[ui.indptr[row] : ui.indptr[row + 1]]
        if np.array_equal(positives, trained):
            return learned, self._trained(row)
        trained_optimum = self._trained(row)  # a warm start: histories differ a little
        optimum = bpr_optimum(factors, positives, self.model.regularization, start=trained_optimum)
        return learned + optimum - trained_optimum, optimum

    def _trained(self, row: int) -> np.ndarray:
        """u* of a training row (cached: the same for every history of that user)."""
        cache = self._trained_optimum
        found = cache.get(row)
        if found is None:
            ui = self.user_items
            cols = ui.indices[ui.indptr[row] : ui.indptr[row + 1]]
            found = bpr_optimum(self._factors64(), cols, self.model.regularization)
            if len(cache) >= TRAINED_CACHE:  # bounded: drop the oldest entry
                cache.pop(next(iter(cache), None), None)
            cache[row] = found
        return found

    def _factors64(self) -> np.ndarray:
        cached = getattr(self, "_item_factors64", None)
        if cached is None or cached.shape != self.model.item_factors.shape:
            cached = self._item_factors64 = self.model.item_factors.astype(np.float64)
        return cached

    # ----------------------------------------------------- counterfactuals
    def counterfactual_scores(
        self, history: np.ndarray, user: int | None, removals: Sequence[tuple[int, ...]]
    ) -> np.ndarray:
        """The full history's scores, then the history without each removal's positions.

        ALS: the closed-form solve ``recalculate_user`` does, in float64, for every
        variant in one batch (the base system updated by the removed items' rank-one
        terms). BPR: one Newton step from the full history's optimum for each variant
        (:func:`bpr_removal_steps`), added to the full history's vector.
        """
        item_map, _ = self._bound()
        row = self._row(user)
        if self.kind == "bpr":
            vectors = self._bpr_variants(np.asarray(history), row, removals)
            return item_map.to_items((vectors @ self._factors64().T).astype(np.float32))
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

    def _bpr_variants(
        self, history: np.ndarray, row: int, removals: Sequence[tuple[int, ...]]
    ) -> np.ndarray:
        cols = self._positions(history, -1)[0]
        positives = np.unique(cols[cols >= 0])
        vector, optimum = self._bpr_vector(positives, row)
        removed = []
        for positions in removals:
            pos = _kept_removal(positions, len(history))
            kept = np.delete(cols, pos)
            removed.append(np.setdiff1d(positives, kept[kept >= 0]))
        steps = bpr_removal_steps(
            self._factors64(), positives, optimum, self.model.regularization, removed
        )
        out = np.ones((1 + len(removals), self.model.item_factors.shape[1]))
        out[0, :-1] = vector
        out[1:, :-1] = vector + steps
        return out

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
                "attribution_window": self.attribution_window,
            },
        )

    @classmethod
    def load(cls, directory: Path, model: Any) -> ImplicitScorer:
        import scipy.sparse as sp

        als_cls, bpr_cls = _implicit_classes()
        directory = Path(directory)
        settings = read_adapter_settings(directory, ["kind"])
        if settings["kind"] not in KINDS:
            raise ModelError(
                f"{directory / SETTINGS_FILE}: 'kind' must be one of {sorted(KINDS)}, "
                f"got {settings['kind']!r}"
            )
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
            attribution_window=settings.get("attribution_window", 0),
        )
        scorer.bind(model)
        return scorer


def _kept_removal(positions: Sequence[int], n: int) -> list[int]:
    """Positions removed, as :func:`whyrec.models.attribution.drop_positions` removes them
    (removing every item leaves the history as it is)."""
    pos = sorted({int(p) for p in positions})
    return [] if len(pos) >= n else pos


# ----------------------------------------------------------------- BPR fold-in
def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _bpr_terms(
    factors: np.ndarray, positives: np.ndarray, u: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """At ``u``: z[i, j] = σ(x_uj − x_ui) over (positive i, negative j), the positives'
    and negatives' factors (bias column last) and the negatives' mask."""
    negative = np.ones(len(factors), dtype=bool)
    negative[positives] = False
    vp, vn = factors[positives], factors[negative]
    sp_ = vp[:, :-1] @ u + vp[:, -1]
    sn = vn[:, :-1] @ u + vn[:, -1]
    z = _sigmoid(sn[None, :] - sp_[:, None])
    return z, vp[:, :-1], vn[:, :-1], sp_, negative


def _bpr_hessian(z: np.ndarray, vp: np.ndarray, vn: np.ndarray, reg: float) -> np.ndarray:
    """The negated Hessian of the mean BPR loss plus the ridge (positive definite)."""
    h = z * (1.0 - z)
    cross = vp.T @ (h @ vn)
    hess = (vp.T * h.sum(1)) @ vp + (vn.T * h.sum(0)) @ vn - cross - cross.T
    return hess / max(z.size, 1) + reg * np.eye(vp.shape[1])


def bpr_optimum(
    factors: np.ndarray,
    positives: np.ndarray,
    reg: float,
    *,
    start: np.ndarray | None = None,
    tol: float = 1e-7,
) -> np.ndarray:
    """``argmax_u mean_{i ∈ P, j ∉ P} log σ(u·(v_i − v_j) + b_i − b_j) − reg/2 |u|²``:
    BPR's loss for one user, the item factors (bias last) frozen; Newton's method (the
    objective is strictly concave), from ``start`` (default 0). No positives (or nothing
    else): ``u = 0``."""
    dims = factors.shape[1] - 1
    if len(positives) == 0 or len(positives) >= len(factors):
        return np.zeros(dims)
    u = np.zeros(dims) if start is None else np.array(start, dtype=np.float64)
    for _ in range(100):
        z, vp, vn, _, _ = _bpr_terms(factors, positives, u)
        grad = (z.sum(1) @ vp - z.sum(0) @ vn) / z.size - reg * u
        step = np.linalg.solve(_bpr_hessian(z, vp, vn, reg), grad)
        u = u + step
        if np.abs(step).max() < tol:
            break
    return u


def bpr_removal_steps(
    factors: np.ndarray,
    positives: np.ndarray,
    optimum: np.ndarray,
    reg: float,
    removed: Sequence[np.ndarray],
) -> np.ndarray:
    """For each set of removed positives K: one Newton step from ``optimum`` (= u*(P))
    on the loss over (P∖K) × (negatives ∪ K), with u*(P)'s Hessian — the change of the
    user's vector an influence function predicts. Rows of shape ``(len(removed), f)``."""
    dims = factors.shape[1] - 1
    out = np.zeros((len(removed), dims))
    if len(positives) == 0 or not any(len(k) for k in removed):
        return out
    z, vp, vn, sp_, negative = _bpr_terms(factors, positives, optimum)
    hess = _bpr_hessian(z, vp, vn, reg)
    total = z.sum(1) @ vp - z.sum(0) @ vn  # Σ z_ij (v_i − v_j) over all pairs
    rows = z.sum(1)
    lost = rows[:, None] * vp - z @ vn  # per positive k: Σ_j z_kj (v_k − v_j)
    q = _sigmoid(sp_[:, None] - sp_[None, :])  # q[k, i] = σ(x_uk − x_ui)
    where = {int(c): n for n, c in enumerate(positives)}
    n_pos, n_neg = len(positives), int(negative.sum())
    grads = np.zeros((len(removed), dims))
    for r, cols in enumerate(removed):
        k = np.array([where[int(c)] for c in cols], dtype=np.int64)
        if not len(k):
            continue
        if len(k) >= n_pos:  # no positive left: the ridge alone, u* = 0
            out[r] = -optimum
            continue
        rest = np.ones(n_pos, dtype=bool)
        rest[k] = False
        gained = q[k][:, rest]  # new pairs (i kept, k now negative)
        added = (gained.sum(0) @ vp[rest]) - gained.sum(1) @ vp[k]
        pairs = (n_pos - len(k)) * (n_neg + len(k))
        grads[r] = (total - lost[k].sum(0) + added) / pairs - reg * optimum
    steps = np.linalg.solve(hess, grads.T).T
    done = np.array([len(k) >= n_pos for k in removed])
    out[~done] = steps[~done]
    return out
