"""What changes when several service processes (replicas) share one store.

A replica's memory can be behind the shared store: another replica may have posted
interactions or finished an LLM reason since. :func:`for_store` picks the parts that
read through to the store when it is shared (``store.shared``), and the plain ones
otherwise (one process: memory is never behind, nothing extra is read).

* :class:`SharedCatalog` re-reads a user's posted interactions from the store whenever
  it is asked for that user's history or version (one indexed query), so a write
  acknowledged by any replica is in the next request's history on every replica. While
  the store cannot be reached, reads go on from what this replica last saw (writes fail).
* :class:`FinalOnlyLRU` keeps only final explanation records (written by the LLM, or the
  LLM is off) as memory hits; a template still waiting for the LLM is read from the
  store again, where another replica may have put the LLM's reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from whyrec.serve.catalog import Catalog, History
from whyrec.serve.store import LRU, Store, StoreUnavailable

#: ``llm_status`` values after which an explanation record no longer changes.
FINAL_STATUSES = ("done", "disabled")


class SharedCatalog(Catalog):
    """The catalogue, with posted interactions read from a store other processes write."""

    def _refresh(self, user: str) -> None:
        known = self._item_lookup
        try:
            rows = self.store.interactions(user)
        except StoreUnavailable:
            return  # reads go on from what this replica last saw; writes fail (503)
        items = [known[i] for _, _, i in rows if i in known]
        with self._write_lock:
            if items:
                self._extra[user] = items
            else:
                self._extra.pop(user, None)

    def _refresh_all(self) -> None:
        fresh: dict[str, list[int]] = {}
        known = self._item_lookup
        try:
            rows = self.store.interactions()
        except StoreUnavailable:
            return
        for _, user, item_id in rows:
            if item_id in known:
                fresh.setdefault(user, []).append(known[item_id])
        with self._write_lock:
            self._extra = fresh

    def history_of(self, user: str) -> History:
        self._refresh(str(user))
        return super().history_of(user)

    def version_of(self, user: str) -> int:
        self._refresh(str(user))
        return super().version_of(user)

    def user_ids(self, offset: int = 0, limit: int = 50) -> tuple[list[dict[str, Any]], int]:
        self._refresh_all()
        return super().user_ids(offset, limit)

    def add_interactions(self, user: str, items: Sequence[int]) -> dict[str, Any]:
        out = super().add_interactions(user, items)
        # the lengths in the reply include what other replicas acknowledged before
        base = out["history_length"] - out["new_interactions"]
        self._refresh(str(user))
        with self._write_lock:
            extra = len(self._extra.get(str(user), ()))
        out["new_interactions"] = extra
        out["history_length"] = base + extra
        return out


class FinalOnlyLRU(LRU):
    """An explanation LRU whose hits are final records only (others come from the store)."""

    def get(self, key: Any) -> Any:
        value = super().get(key)
        if isinstance(value, dict) and value.get("llm_status") not in FINAL_STATUSES:
            return None
        return value


def for_store(store: Store) -> tuple[type[Catalog], type[LRU]]:
    """The catalogue class and the explanation-cache class for ``store``."""
    if store.shared:
        return SharedCatalog, FinalOnlyLRU
    return Catalog, LRU


__all__ = ["FINAL_STATUSES", "FinalOnlyLRU", "SharedCatalog", "for_store"]
