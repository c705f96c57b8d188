"""The optional LLM behind the service: its client, state, cooldown and background jobs.

:class:`LLMGate` is created once per service. An outage (the LLM cannot be reached) puts
it in cooldown; :class:`RecordingClient` lets callers that swallow exceptions still tell
an outage from an invalid reply (:func:`is_outage`).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from whyrec.serve.settings import ServeSettings

log = logging.getLogger("whyrec.serve")


def now_iso() -> str:
    """The current UTC time, to the second (ISO 8601): record and status timestamps."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def is_outage(exc: BaseException | None) -> bool:
    """An error that means "the LLM cannot be reached now" rather than "it answered badly"."""
    if exc is None:
        return False
    from whyrec.llm.errors import LLMOutputError, LLMRequestError

    return not isinstance(exc, LLMOutputError | LLMRequestError)


class RecordingClient:
    """Wraps an LLM client and remembers the last error of ``complete``/``complete_many``,
    so callers that swallow exceptions (``LaneExplainer``) can still be told apart:
    outage (cool down) or invalid reply (keep the template)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.last_error: BaseException | None = None

    def complete(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self._client.complete(*args, **kwargs)
        except Exception as exc:
            self.last_error = exc
            raise

    def complete_many(self, *args: Any, **kwargs: Any) -> Any:
        outcomes = self._client.complete_many(*args, **kwargs)
        for o in outcomes:
            if not getattr(o, "ok", True):
                self.last_error = o.error
        return outcomes

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class LLMGate:
    """The optional LLM: created once, its state tracked, its jobs run in background threads.

    An outage puts the gate in cooldown (no new jobs) for ``llm_outage_cooldown_s``.
    """

    def __init__(self, settings: ServeSettings, client: Any = None) -> None:
        self.settings = settings
        self.enabled = settings.llm
        self.client: Any = None
        self.error: str | None = None
        self.down_until = 0.0
        self.last_ok: str | None = None
        self.last_failure: str | None = None
        self.completed = 0
        self.failed = 0
        self._inflight: dict[str, Future[Any]] = {}
        self._lock = threading.Lock()
        if self.enabled:
            if client is not None:
                self.client = client
            else:
                try:
                    from whyrec.llm import LLMClient

                    self.client = LLMClient.from_settings(settings.llm_config)
                except Exception as exc:  # a broken LLM setup must not stop the service
                    self.error = f"{type(exc).__name__}: {exc}"
                    log.warning("LLM unavailable, serving template reasons: %s", self.error)
        llm_settings = getattr(self.client, "settings", None)
        if self.client is None or self.client.backend.is_local:  # workers x n_parallel at once
            default = int(getattr(llm_settings, "calls_to_fill", 1))
        else:
            default = int(getattr(llm_settings, "concurrency", 4))
        workers = settings.llm_workers or default
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="whyrec-llm")
        self.workers = workers

    @property
    def author(self) -> str:
        """Who writes reasons: part of the explanation cache key."""
        if self.client is None:
            return "template"
        return f"{getattr(self.client.backend, 'name', '?')}:{self.client.model}"

    @property
    def model(self) -> str:
        return str(getattr(self.client, "model", "")) if self.client is not None else ""

    def usable(self) -> bool:
        return self.client is not None and time.monotonic() >= self.down_until

    def state(self) -> str:
        if not self.enabled:
            return "disabled"
        if self.client is None:
            return "unavailable"
        if time.monotonic() < self.down_until:
            return "down"
        return "up" if self.last_ok else "unknown"

    def running(self, key: str) -> Future[Any] | None:
        with self._lock:
            return self._inflight.get(key)

    def submit(self, key: str, fn: Callable[[], Any]) -> Future[Any] | None:
        """Run ``fn`` in the background unless a job for ``key`` runs or the queue is full."""
        with self._lock:
            if key in self._inflight:
                return self._inflight[key]
            if len(self._inflight) >= self.settings.max_pending_llm:
                return None
            fut = self.pool.submit(fn)
            self._inflight[key] = fut
        fut.add_done_callback(lambda _f, k=key: self._done(k))
        return fut

    def _done(self, key: str) -> None:
        with self._lock:
            self._inflight.pop(key, None)

    def record(self, ok: bool, error: str | None = None, outage: bool = False) -> None:
        if ok:
            self.completed += 1
            self.last_ok = now_iso()
            self.down_until = 0.0
        else:
            self.failed += 1
            self.last_failure = now_iso()
            self.error = error
            if outage:
                self.down_until = time.monotonic() + self.settings.llm_outage_cooldown_s

    def status(self) -> dict[str, Any]:
        with self._lock:
            pending = len(self._inflight)
        return {
            "enabled": self.enabled,
            "state": self.state(),
            "model": self.model,
            "backend": self.client.backend.name if self.client is not None else None,
            "workers": self.workers,
            "pending_jobs": pending,
            "completed": self.completed,
            "failed": self.failed,
            "last_ok": self.last_ok,
            "last_failure": self.last_failure,
            "last_error": self.error,
        }

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            busy = bool(self._inflight)
        if self.client is not None and not busy:
            try:
                self.client.close()
            except Exception:  # closing is best effort
                pass


__all__ = ["LLMGate", "RecordingClient", "is_outage", "now_iso"]
