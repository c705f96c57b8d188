"""The service's durable store (SQLite, WAL) and the in-memory LRU in front of it.

Three tables: new ``interactions`` posted to the API, ``explanations`` keyed by
(history hash, item, model, prompt version) and ``history_preferences`` for histories
the model has not seen. A write is acknowledged only after its transaction commits; with
``synchronous=FULL`` (the default) that commit is on disk, so neither a killed process
nor a power cut loses it. Each thread has its own connection; WAL lets readers run while
one writer commits, and a busy timeout makes concurrent writers queue instead of fail.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from whyrec.errors import ConfigError
from whyrec.sqlite import connect_wal

STORE_FORMAT = 1

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS interactions ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT, user TEXT NOT NULL, item_id TEXT NOT NULL,"
    " created REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS interactions_user ON interactions (user, seq)",
    "CREATE TABLE IF NOT EXISTS explanations ("
    " key TEXT PRIMARY KEY, user TEXT, item_id TEXT NOT NULL, source TEXT NOT NULL,"
    " record TEXT NOT NULL, updated REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS history_preferences ("
    " key TEXT PRIMARY KEY, record TEXT NOT NULL, updated REAL NOT NULL)",
)


class LRU:
    """A thread-safe least-recently-used map with a fixed capacity (0 disables it)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._data: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: Any, value: Any) -> None:
        if self.capacity <= 0:
            return
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.capacity:
                self._data.popitem(last=False)

    def pop(self, key: Any) -> None:
        with self._lock:
            self._data.pop(key, None)

    def __len__(self) -> int:
        return len(self._data)


class ServeStore:
    """Interactions, explanations and new-history preferences in one SQLite file."""

    def __init__(self, path: str | Path, *, synchronous: str = "FULL") -> None:
        self.path = Path(path)
        if synchronous not in ("FULL", "NORMAL"):
            raise ConfigError(f"sqlite synchronous must be FULL or NORMAL, got {synchronous!r}")
        self.synchronous = synchronous
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"{self.path}: cannot create the store's directory ({exc})") from None
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        try:
            con = self._conn()
            for stmt in _SCHEMA:
                con.execute(stmt)
            row = con.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"{self.path}: not a usable SQLite store ({exc})") from None
        if row is None:
            con.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?)", (str(STORE_FORMAT),))
        elif int(row[0]) != STORE_FORMAT:
            raise ConfigError(
                f"{self.path}: store format {row[0]}, this whyrec reads format {STORE_FORMAT}"
            )

    def _conn(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = connect_wal(
                self.path, timeout=30, synchronous=self.synchronous, check_same_thread=False
            )
            self._local.con = con
            with self._all_lock:
                self._all.append(con)
        return con

    @property
    def journal_mode(self) -> str:
        return str(self._conn().execute("PRAGMA journal_mode").fetchone()[0])

    # ------------------------------------------------------------ interactions
    def add_interactions(self, user: str, item_ids: Sequence[str]) -> list[int]:
        """Append items for ``user`` in one transaction; returns their sequence numbers.

        When this returns, the rows are committed (durable per ``synchronous``).
        """
        con = self._conn()
        now = time.time()
        con.execute("BEGIN IMMEDIATE")
        try:
            seqs = [
                int(
                    con.execute(
                        "INSERT INTO interactions (user, item_id, created) VALUES (?, ?, ?)",
                        (user, str(item), now),
                    ).lastrowid
                )
                for item in item_ids
            ]
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return seqs

    def interactions(self, user: str | None = None) -> list[tuple[int, str, str]]:
        """``(seq, user, item_id)`` rows in the order they were acknowledged."""
        if user is None:
            sql, args = "SELECT seq, user, item_id FROM interactions ORDER BY seq", ()
        else:
            sql = "SELECT seq, user, item_id FROM interactions WHERE user = ? ORDER BY seq"
            args = (user,)
        return [(int(s), str(u), str(i)) for s, u, i in self._conn().execute(sql, args)]

    # ------------------------------------------------------------ explanations
    def get_explanation(self, key: str) -> dict[str, Any] | None:
        row = (
            self._conn().execute("SELECT record FROM explanations WHERE key = ?", (key,)).fetchone()
        )
        return json.loads(row[0]) if row else None

    def put_explanation(self, key: str, record: dict[str, Any]) -> None:
        self._conn().execute(
            "INSERT OR REPLACE INTO explanations VALUES (?, ?, ?, ?, ?, ?)",
            (
                key,
                record.get("user"),
                str(record.get("item_id", "")),
                str(record.get("reason_source", "")),
                json.dumps(record, ensure_ascii=False, separators=(",", ":")),
                time.time(),
            ),
        )

    # ------------------------------------------------------ history preferences
    def get_history_preferences(self, key: str) -> dict[str, Any] | None:
        row = (
            self._conn()
            .execute("SELECT record FROM history_preferences WHERE key = ?", (key,))
            .fetchone()
        )
        return json.loads(row[0]) if row else None

    def put_history_preferences(self, key: str, record: dict[str, Any]) -> None:
        self._conn().execute(
            "INSERT OR REPLACE INTO history_preferences VALUES (?, ?, ?)",
            (key, json.dumps(record, ensure_ascii=False), time.time()),
        )

    # ------------------------------------------------------------------ other
    def counts(self) -> dict[str, int]:
        con = self._conn()
        return {
            t: int(con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0])
            for t in ("interactions", "explanations", "history_preferences")
        }

    def close(self) -> None:
        """Close every thread's connection (call once, at shutdown)."""
        with self._all_lock:
            for con in self._all:
                try:
                    con.close()
                except sqlite3.Error:
                    pass
            self._all.clear()
        self._local = threading.local()
