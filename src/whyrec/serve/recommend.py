"""Top lists: every known user's top ``k_max`` precomputed in the background, other
histories computed on demand and kept in an LRU. The ranking itself is the model's
(:meth:`whyrec.models.base.Recommender.recommend` and ``top_k``): nothing here re-ranks.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from whyrec.serve.catalog import History
from whyrec.serve.errors import InvalidInput
from whyrec.serve.parts import ServicePart, ServiceParts
from whyrec.serve.preferences import PreferenceProvider, Preferences
from whyrec.serve.store import LRU

log = logging.getLogger("whyrec.serve")


class TopLists(ServicePart):
    """The top ``k_max`` unseen items and scores per history. Thread-safe."""

    def __init__(self, parts: ServiceParts, preferences: PreferenceProvider) -> None:
        super().__init__(parts)
        self.preferences = preferences
        self.k_max = self.settings.k_max
        self._tops = LRU(max(1024, self.settings.response_cache_size))
        n = int(self.model.n_users)
        self._pre_items = np.full((n, self.k_max), -1, dtype=np.int32)
        self._pre_scores = np.zeros((n, self.k_max), dtype=np.float32)
        self._pre_len = np.zeros(n, dtype=np.int32)
        self._pre_done = np.zeros(n, dtype=bool)
        self.precomputed = 0
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()

    # ------------------------------------------------------------- precompute
    def start(self) -> None:
        """Start precomputing known users' top lists in a background thread."""
        if self.settings.precompute and self._thread is None:
            self._thread = threading.Thread(
                target=self._precompute_all, name="whyrec-precompute", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _precompute_all(self, batch: int = 64) -> None:
        n = int(self.model.n_users)
        try:
            for start in range(0, n, batch):
                if self._closing.is_set():
                    return
                users = np.arange(start, min(n, start + batch))
                todo = users[~self._pre_done[users]]
                if len(todo):
                    hists = [self.model.histories[u] for u in todo]
                    scores = self.model.score_batch(hists, todo)
                    tops = self.model.top_k(scores, hists, self.k_max)
                    for u, (items, sc) in zip(todo, tops, strict=True):
                        self._set_pre(int(u), items, sc)
                self.precomputed = int(self._pre_done.sum())
            import gc

            gc.freeze()  # what precompute built lives as long as the process
        except Exception:  # the on-demand path still works; say why precompute stopped
            log.exception("precomputing top lists stopped")

    def _set_pre(self, u: int, items: np.ndarray, scores: np.ndarray) -> None:
        n = len(items)
        self._pre_items[u, :n] = items
        self._pre_scores[u, :n] = scores
        self._pre_len[u] = n
        self._pre_done[u] = True

    def is_precomputed(self, history: History) -> bool:
        """The history's top list is in memory already (no model work needed)."""
        return history.index is not None and history.version == 0 and self._pre_done[history.index]

    # ------------------------------------------------------------------ lookup
    def top_items(
        self, history: History, prefs: Preferences | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The top ``k_max`` unseen items and scores for a history (cached)."""
        model = self.model
        if history.index is not None and history.version == 0:
            u = history.index
            if not self._pre_done[u]:
                recs = model.recommend(u, k=self.k_max)
                self._set_pre(u, recs.items, recs.scores)
            n = int(self._pre_len[u])
            return self._pre_items[u, :n].astype(np.int64), self._pre_scores[u, :n]
        if self.model.has_preferences and prefs is None:
            prefs = self.preferences.preferences_for(history)
        key = (history.digest, prefs.tag if prefs is not None else "")
        hit = self._tops.get(key)
        if hit is not None:
            return hit
        if len(history.items) == 0:
            raise InvalidInput(["body"], "empty history: nothing to recommend from")
        if self.model.has_preferences:
            assert prefs is not None
            recs = model.recommend(history=history.items, preferences=prefs.vectors, k=self.k_max)
        else:
            recs = model.recommend(history=history.items, k=self.k_max)
        out = (recs.items.astype(np.int64), recs.scores.astype(np.float32))
        self._tops.put(key, out)
        return out

    def recommendation_rows(self, items: np.ndarray, scores: np.ndarray) -> list[dict[str, Any]]:
        cat = self.catalog
        return [
            {
                "rank": r + 1,
                "item_id": cat.item_ids[int(i)],
                "title": cat.item_titles[int(i)],
                "score": round(float(s), 6),
            }
            for r, (i, s) in enumerate(zip(items, scores, strict=True))
        ]


__all__ = ["TopLists"]
