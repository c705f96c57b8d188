"""The service core, without HTTP: one trained run, a durable store and an optional LLM.

:class:`RecService` composes the parts, each in its own module, all built on one
:class:`whyrec.serve.parts.ServiceParts` (model, settings, store, catalogue, LLM gate):

* :mod:`whyrec.serve.catalog` — items, titles, search, users' histories, posted interactions;
* :mod:`whyrec.serve.llm_gate` — the optional LLM, its state, cooldown and background jobs;
* :mod:`whyrec.serve.preferences` — LANE preferences for known users and new histories;
* :mod:`whyrec.serve.recommend` — top lists (precomputed for known users, cached);
* :mod:`whyrec.serve.explanations` — explanations: cache, LLM within a budget, template.

Recommendations never touch the LLM. What is left here is the async glue the HTTP layer
calls (responses as JSON bytes, cached whole once final) and the health report.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from whyrec import __version__
from whyrec.serve.catalog import History
from whyrec.serve.errors import InvalidInput, NotFound
from whyrec.serve.explanations import (
    ExplainResult,
    Explanations,
)
from whyrec.serve.llm_gate import LLMGate, RecordingClient, is_outage
from whyrec.serve.parts import ServiceParts
from whyrec.serve.preferences import PreferenceProvider, Preferences
from whyrec.serve.recommend import TopLists
from whyrec.serve.replicas import ReplicaSync, SharedCatalog, for_store
from whyrec.serve.schemas import ExplainBody
from whyrec.serve.settings import ServeSettings
from whyrec.serve.store import LRU
from whyrec.serve.stores import open_store


class RecService:
    """Everything the HTTP layer calls. Thread-safe; blocking work is done in ``pool``."""

    def __init__(self, settings: ServeSettings, *, llm_client: Any = None) -> None:
        self.settings = settings
        self.model, self.manifest = _open_model(settings)
        self.started = time.time()
        ident = f"{self.model.name}|{self.manifest.get('created')}|{self.model.dataset_info}"
        self.model_id = hashlib.sha256(ident.encode()).hexdigest()[:16]
        self.k_max = settings.k_max
        self.n_items = int(self.model.n_items)

        # SQLite file, or PostgreSQL shared with other replicas (memory then reads through)
        self.store = open_store(settings)
        catalog_class, explanation_cache = for_store(self.store)
        self.catalog = catalog_class(self.model, settings, self.store)
        # a shared store: memory kept current by LISTEN/NOTIFY, checked before reads
        self.sync: ReplicaSync | None = None
        if isinstance(self.catalog, SharedCatalog) and hasattr(self.store, "connect_async"):
            self.sync = ReplicaSync(
                self.store,
                self.catalog,
                check_s=settings.store_check_s,
                timeout_s=settings.store_timeout_s,
            )

        self.responses = LRU(settings.response_cache_size)
        self.pool = ThreadPoolExecutor(settings.model_threads, thread_name_prefix="whyrec-model")
        # store writes wait for the database: their own threads, never the event loop's
        self.store_pool = ThreadPoolExecutor(
            settings.store_threads, thread_name_prefix="whyrec-store"
        )
        self.llm = LLMGate(settings, llm_client)
        parts = ServiceParts(self.model, settings, self.store, self.catalog, self.llm)
        self.prefs = PreferenceProvider(parts)
        self.tops = TopLists(parts, self.prefs)
        self.explanations = Explanations(parts, self.prefs, self.model_id)
        if explanation_cache is not LRU:
            self.explanations.cache = explanation_cache(settings.explanation_cache_size)

    def start(self) -> None:
        """Start background work (precomputing known users' top lists)."""
        self.tops.start()

    async def start_async(self) -> None:
        """Start the event loop's part (a shared store's :class:`ReplicaSync`)."""
        if self.sync is not None:
            self.sync.start()

    async def stop_async(self) -> None:
        if self.sync is not None:
            await self.sync.stop()

    def close(self) -> None:
        self.tops.close()
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.store_pool.shutdown(wait=True, cancel_futures=True)
        self.llm.close()
        self.store.close()

    # ------------------------------------------------------------- async API
    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run blocking work (model, SQLite) in the model thread pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, functools.partial(fn, *args))

    async def store_call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a store write in the store's thread pool (off the event loop)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.store_pool, functools.partial(fn, *args))

    async def fresh(self, after: Sequence[int] = ()) -> bool:
        """Before a read of users' state: True to answer it as fresh, False to mark it
        ``stale`` (a shared store that cannot be reached: the answer comes from what this
        replica last saw). ``after``: the consistency tokens the client sent (the
        ``token`` of its writes); a replica that has not merged those writes waits for
        the database first, and raises :class:`StoreUnavailable` (503) if it cannot reach
        it. A store of one process is always fresh. Never blocks the event loop."""
        if self.sync is None:
            return True
        strict = self.settings.read_consistency == "strict"
        return await self.sync.settle(after, strict=strict)

    def wait_budget(self, wait_s: float | None) -> float:
        """How long a request may wait for LLM reasons: its ``wait_s`` (capped by
        ``explain_max_wait_s``), else ``explain_budget_s``."""
        if wait_s is None:
            return self.settings.explain_budget_s
        return min(float(wait_s), self.settings.explain_max_wait_s)

    async def user_recommendations(
        self, user: str, k: int, explain: bool, after: Sequence[int] = ()
    ) -> bytes:
        """JSON body of a known (or API-created) user's top-k; whole responses are cached
        once nothing in them can change any more."""
        stale = not await self.fresh(after)
        rkey = (user, self.catalog.version_of(user), k, explain, stale)
        hit = self.responses.get(rkey)
        if hit is not None:
            return hit
        body, final = await self._recommend(
            self.catalog.history_of(user), k, explain, self.settings.explain_budget_s, stale=stale
        )
        if final:
            self.responses.put(rkey, body)
        return body

    async def history_recommendations(
        self,
        item_ids: Sequence[str] | None,
        titles: Sequence[str] | None,
        k: int | None,
        explain: bool,
        wait_s: float | None,
    ) -> bytes:
        """JSON body of the top-k for a history given by item ids or titles."""
        k = check_k(k, self.settings, ["body", "k"])
        items = self.catalog.resolve_items(item_ids, titles)
        budget = self.wait_budget(wait_s)
        body, _ = await self._recommend(self.catalog.new_history(items), k, explain, budget)
        return body

    async def _recommend(
        self, history: History, k: int, explain: bool, budget: float, *, stale: bool = False
    ) -> tuple[bytes, bool]:
        if self.tops.is_precomputed(history):
            items, scores = self.tops.top_items(history)  # precomputed: memory only
        else:
            items, scores = await self.call(self.tops.top_items, history)
        items, scores = items[:k], scores[:k]
        rows = self.tops.recommendation_rows(items, scores)
        final = True
        if explain and len(items):
            explanations = self.explanations
            results = await self.call(explanations.explain_items, history, [int(i) for i in items])
            await explanations.wait_jobs(results, budget)
            for row, r in zip(rows, results, strict=True):
                row["explanation"] = explanations.public(r)
                final = final and r.cache == "memory" and r.job is None
                final = final and explanations.is_final(r.record)
        payload = {
            "user": history.user,
            "model": self.model.name,
            "k": k,
            "explained": explain,
            "history_length": int(len(history.items)),
            "new_interactions": history.version,
            "stale": stale,
            "items": rows,
        }
        return dumps(payload), final

    async def user_preferences(self, user: str, after: Sequence[int] = ()) -> dict[str, Any]:
        """The user's preferences with LANE's weights (empty for non-LANE models)."""
        stale = not await self.fresh(after)
        history = self.catalog.history_of(user)
        return {**await self.call(self.prefs.user_preferences, history), "stale": stale}

    async def user_history(
        self, user: str, limit: int, after: Sequence[int] = ()
    ) -> dict[str, Any]:
        """The user's ``limit`` most recent items, newest first."""
        stale = not await self.fresh(after)
        history = self.catalog.history_of(user)
        rows = self.catalog.history_rows(history, limit)
        return {"user": user, "history_length": len(history.items), "stale": stale, "items": rows}

    async def users(self, offset: int, limit: int, after: Sequence[int] = ()) -> dict[str, Any]:
        """A page of the user ids the service knows."""
        stale = not await self.fresh(after)
        rows, total = self.catalog.user_ids(offset, limit)
        return {"total": total, "offset": offset, "stale": stale, "users": rows}

    async def search_items(self, query: str, limit: int) -> dict[str, Any]:
        """Catalogue search by title (fuzzy) or exact item id."""
        return {"items": await self.call(self.catalog.search_items, query, limit)}

    async def explain(self, body: ExplainBody, after: Sequence[int] = ()) -> dict[str, Any]:
        """Explain one item (by id or title) for a user or for a history given by item
        ids or titles, waiting up to the request's budget for the LLM's reason."""
        stale = False
        if body.user is not None:
            stale = not await self.fresh(after)
            history = self.catalog.history_of(body.user)
        else:
            items = self.catalog.resolve_items(body.item_ids, body.titles)
            history = self.catalog.new_history(items)
        item = self.catalog.resolve_item(body.item_id, body.item_title)
        results = await self.call(self.explanations.explain_items, history, [int(item)])
        await self.explanations.wait_jobs(results, self.wait_budget(body.wait_s))
        return {**self.explanations.public(results[0]), "stale": stale}

    async def add_interactions(
        self, user: str, item_ids: Sequence[str] | None, titles: Sequence[str] | None
    ) -> dict[str, Any]:
        """Append interactions given by item ids or titles; returns once they are durable."""
        items = self.catalog.resolve_items(item_ids, titles)
        return await self.store_call(self.catalog.add_interactions, user, items)

    # ----------------------------------------------------------------- health
    def store_state(self) -> dict[str, Any]:
        """The store's reachability: ``up``/``down`` (a store of one process: ``up``)."""
        breaker = getattr(self.store, "breaker", None)
        out: dict[str, Any] = breaker.state() if breaker is not None else {"state": "up"}
        if self.sync is not None:
            out.update(self.sync.status())
            if self.sync.state == "down" and out["state"] == "up":
                out["state"] = "down"
        return out

    def degraded(self, detail: bool = False) -> list[str]:
        """Why the service is degraded (empty: it is not); ``detail`` adds the driver's
        message (it may name hosts)."""
        st = self.store_state()
        if st["state"] != "down":
            return []
        why = f" ({st.get('reason') or 'no answer'})" if detail else ""
        return [
            f"store ({self.store.backend}) unreachable since {st.get('down_since')}{why}: "
            "writes and uncached explanations are refused (503), recommendations come from "
            "what this replica last saw (stale)"
        ]

    def health(self, detail: bool = False) -> dict[str, Any]:
        """Liveness and state. ``detail`` (the caller sent a valid API key) adds what
        only an operator should see: the run and store paths, the dataset note and the
        LLM's last error (both may name files or hosts)."""
        model = {
            "name": self.model.name,
            "id": self.model_id,
            "users": self.catalog.n_users,
            "items": self.n_items,
            "dataset": (self.model.dataset_info or {}).get("name"),
            "explanations": "lane" if self.model.has_preferences else "baseline",
        }
        if getattr(self.model, "adapter", None):  # an outside model: which library's
            model["adapter"] = str(self.model.adapter)
        store = self.store.info(detail)
        store.update(self.store_state())
        if not detail:
            store.pop("reason", None)  # a driver message may name hosts
        degraded = self.degraded(detail)
        llm = self.llm.status()
        if detail:
            model["run"] = str(Path(self.settings.run))
            model["item_text"] = self.catalog.dataset_note
        else:
            llm.pop("last_error", None)
        return {
            "status": "degraded" if degraded else "ok",
            "degraded": degraded,
            "version": __version__,
            "model": model,
            "precomputed_users": int(self.tops.precomputed),
            "store": store,
            "auth": self.settings.auth_enabled,
            "detail": bool(detail),
            "llm": llm,
            "explain_budget_s": self.settings.explain_budget_s,
            "k_max": self.k_max,
            "uptime_s": round(time.time() - self.started, 1),
        }


def dumps(payload: Any) -> bytes:
    """Compact JSON bytes (responses are built once and may be cached as bytes)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def check_k(k: int | None, settings: ServeSettings, loc: list[str | int]) -> int:
    """``k`` within 1..k_max, else :class:`InvalidInput`."""
    if k is None:
        return settings.k_default
    if k < 1 or k > settings.k_max:
        raise InvalidInput(loc, f"k must be between 1 and {settings.k_max}, got {k}")
    return int(k)


__all__ = [
    "ExplainResult",
    "History",
    "InvalidInput",
    "LLMGate",
    "NotFound",
    "Preferences",
    "RecService",
    "RecordingClient",
    "check_k",
    "dumps",
    "is_outage",
]


def _open_model(settings: ServeSettings) -> tuple[Any, dict[str, Any]]:
    """The served model and its manifest: a model directory (whyrec's own or a saved
    outside model), or an outside model's import path with ``settings.dataset``."""
    from whyrec.models import load_model
    from whyrec.models.base import read_manifest
    from whyrec.models.outside import is_import_path

    if is_import_path(str(settings.run)):
        from whyrec.data import load_dataset
        from whyrec.errors import ConfigError

        if settings.dataset is None:
            raise ConfigError(
                f"run {settings.run} is a Python import path: set the dataset it was trained "
                "on (--data / WHYREC_SERVE_DATASET)"
            )
        model = load_model(str(settings.run), load_dataset(settings.dataset))
        # no file to read: the manifest the model would write, with its import path
        return model, {**model._manifest(), "created": None, "import_path": str(settings.run)}
    run = Path(settings.run).expanduser()
    return load_model(run), read_manifest(run)
