"""A persistent reply cache in SQLite (WAL mode), safe for many threads and processes.

Each thread (and each process) gets its own connection; WAL lets readers run while
one writer commits, and a busy timeout makes concurrent writers wait instead of fail.

Two kinds of entry share one key space (the key describes the request, not the result):

* a validated reply: ``{"text", "json", "prompt_tokens", ...}``;
* a *negative* entry, for a request whose replies never validated after every re-ask:
  ``{"failed": true, "text": <last reply>, "problems": [...], "attempts", "message",
  "raw"}``. The client answers it with the same ``LLMOutputError`` without asking the
  model (``retry_failed`` asks again; a later success replaces it). Outages and refused
  requests are never stored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from whyrec.llm.errors import LLMError, redact_tree
from whyrec.sqlite import connect_wal

log = logging.getLogger(__name__)

# Bump when the stored payload of a success or the key recipe changes: old entries then
# never match. (Negative entries were added without a bump: older code reads one as an
# entry whose JSON fails the schema, i.e. a miss.)
CACHE_FORMAT = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS replies (
    key      TEXT PRIMARY KEY,
    created  REAL NOT NULL,
    backend  TEXT NOT NULL,
    model    TEXT NOT NULL,
    stage    TEXT NOT NULL,
    payload  TEXT NOT NULL
)
"""


# A negative entry's payload starts with this (json.dumps keeps insertion order).
_FAILED_SQL = "payload LIKE '{\"failed\": true%'"


def is_failure(payload: dict[str, Any]) -> bool:
    """Is this stored payload a negative entry (a request that never validated)?"""
    return payload.get("failed") is True


def cache_key(parts: dict[str, Any]) -> str:
    """A stable hash of everything that determines a reply (canonical JSON, SHA-256)."""
    blob = json.dumps(
        {"format": CACHE_FORMAT, **parts}, sort_keys=True, separators=(",", ":"), default=str
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CacheStats:
    """What ``whyrec llm info`` shows about the cache."""

    path: Path
    entries: int
    size_bytes: int
    hits: int
    misses: int
    failed_entries: int = 0  # negative entries (requests whose replies never validated)
    negative_hits: int = 0  # lookups this process answered with a stored failure


class ReplyCache:
    """Get and put JSON payloads by key; counts hits and misses for this process."""

    def __init__(self, path: str | Path, *, busy_timeout: float = 60.0) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.busy_timeout = busy_timeout
        self.hits = 0
        self.misses = 0
        self.negative_hits = 0
        self._lock = threading.Lock()
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._connect()  # fail early on an unusable path

    def _connect(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            return conn
        try:
            conn = connect_wal(
                self.path, timeout=self.busy_timeout, schema=[_SCHEMA], check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise LLMError(
                f"{self.path}: cannot open the LLM reply cache ({exc}); expected a writable "
                "SQLite file (set cache_path or WHYREC_HOME, or disable the cache)"
            ) from exc
        self._local.conn = conn
        self._local.pid = os.getpid()
        with self._lock:
            self._all.append(conn)
        return conn

    def journal_mode(self) -> str:
        """The database's journal mode (``wal`` once opened)."""
        return str(self._connect().execute("PRAGMA journal_mode").fetchone()[0])

    def get(self, key: str, *, failures: bool = True) -> dict[str, Any] | None:
        """The payload stored under ``key``, or ``None``; counts a hit or a miss.

        A negative entry (``payload["failed"]``) counts as a negative hit, or, with
        ``failures=False`` (the caller will ask again), as a miss and returns ``None``.
        """
        sql = "SELECT payload FROM replies WHERE key = ?"
        try:
            row = self._connect().execute(sql, (key,)).fetchone()
        except sqlite3.Error as exc:  # a sick cache must not fail the call: count a miss
            log.warning("LLM cache %s: lookup failed (%s); treating as a miss", self.path, exc)
            row = None
        payload = None
        if row is not None:
            try:
                payload = json.loads(row[0])
            except ValueError:
                payload = None  # a damaged row behaves like a miss and is overwritten later
        negative = payload is not None and is_failure(payload)
        if negative and not failures:
            payload = None
        with self._lock:
            if payload is None:
                self.misses += 1
            elif negative:
                self.negative_hits += 1
            else:
                self.hits += 1
        return payload

    def put(
        self, key: str, payload: dict[str, Any], *, backend: str, model: str, stage: str
    ) -> None:
        """Store ``payload`` under ``key`` (last writer wins; the values are equivalent).

        Every string in the payload (reply text, parsed JSON, a failure's message, problems
        and raw value) passes :func:`whyrec.safety.redact_tree` first: no credential the
        process holds is ever written to the cache file.
        """
        blob = json.dumps(redact_tree(payload), ensure_ascii=False)
        try:
            self._connect().execute(
                "INSERT OR REPLACE INTO replies (key, created, backend, model, stage, payload) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (key, time.time(), backend, model, stage, blob),
            )
        except sqlite3.Error as exc:  # the reply is still returned; only reuse is lost
            log.warning("LLM cache %s: store failed (%s); reply not cached", self.path, exc)

    def __len__(self) -> int:
        return int(self._connect().execute("SELECT COUNT(*) FROM replies").fetchone()[0])

    def failed_entries(self) -> int:
        """How many negative entries the cache holds."""
        sql = f"SELECT COUNT(*) FROM replies WHERE {_FAILED_SQL}"
        return int(self._connect().execute(sql).fetchone()[0])

    def stats(self) -> CacheStats:
        """Entry counts, file size and this process's hit/miss counters."""
        size = sum(
            p.stat().st_size
            for p in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm"))
            if p.exists()
        )
        with self._lock:
            hits, misses, negative = self.hits, self.misses, self.negative_hits
        return CacheStats(self.path, len(self), size, hits, misses, self.failed_entries(), negative)

    def clear(self, *, failures_only: bool = False) -> int:
        """Delete every entry (or only the negative ones); return how many were deleted."""
        conn = self._connect()
        where = f" WHERE {_FAILED_SQL}" if failures_only else ""
        n = conn.execute(f"DELETE FROM replies{where}").rowcount
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return int(n)

    def close(self) -> None:
        """Close every connection this object opened."""
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            try:
                conn.close()
            except sqlite3.Error:
                pass
        self._local = threading.local()
