"""The service's durable store and the in-memory LRU in front of it.

Three tables: new ``interactions`` posted to the API, ``explanations`` keyed by
(history hash, item, model, prompt version) and ``history_preferences`` for histories
the model has not seen. :class:`Store` is the one interface; it has two implementations
running the same SQL:

* :class:`ServeStore` (the default): one SQLite file in WAL mode, for one process. With
  ``synchronous=FULL`` a commit is on disk, so neither a killed process nor a power cut
  loses it. Each thread has its own connection; WAL lets readers run while one writer
  commits, and a busy timeout makes concurrent writers queue instead of fail.
* :class:`whyrec.serve.store_pg.PostgresStore`: a PostgreSQL database that several
  service replicas share (``store_url`` setting), through a connection pool.

:func:`whyrec.serve.stores.open_store` picks one from the settings.

Either way a write is acknowledged only after its transaction commits.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from whyrec.errors import ConfigError, WhyrecError
from whyrec.sqlite import connect_wal

STORE_FORMAT = 1

# The statements both backends run, with '?' placeholders (PostgreSQL's '%s' is
# substituted). "user" is quoted: PostgreSQL reserves the word, SQLite accepts either.
SQL_ADD_INTERACTION = (
    'INSERT INTO interactions ("user", item_id, created) VALUES (?, ?, ?) RETURNING seq'
)
SQL_INTERACTIONS = 'SELECT seq, "user", item_id FROM interactions ORDER BY seq'
SQL_USER_INTERACTIONS = (
    'SELECT seq, "user", item_id FROM interactions WHERE "user" = ? ORDER BY seq'
)
SQL_USER_INTERACTIONS_AFTER = (
    'SELECT seq, item_id FROM interactions WHERE "user" = ? AND seq > ? ORDER BY seq'
)
SQL_INTERACTION_COUNTS = 'SELECT "user", COUNT(*) FROM interactions GROUP BY "user"'
SQL_GET_EXPLANATION = "SELECT record FROM explanations WHERE key = ?"
# A template never replaces a reason the LLM wrote: with several replicas, one replica's
# failed LLM attempt (which keeps the template) can end after another's succeeded.
SQL_PUT_EXPLANATION = (
    'INSERT INTO explanations (key, "user", item_id, source, record, updated)'
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET"
    ' "user" = excluded."user", item_id = excluded.item_id, source = excluded.source,'
    " record = excluded.record, updated = excluded.updated"
    " WHERE explanations.source = 'template' OR excluded.source <> 'template'"
)
SQL_GET_PREFERENCES = "SELECT record FROM history_preferences WHERE key = ?"
SQL_PUT_PREFERENCES = (
    "INSERT INTO history_preferences (key, record, updated) VALUES (?, ?, ?)"
    " ON CONFLICT (key) DO UPDATE SET record = excluded.record, updated = excluded.updated"
)
# One replica at a time writes a reason with the LLM: a claim row per explanation key,
# taken when there is none, when it has expired (its replica died) or by its owner.
SQL_CLAIM_LLM = (
    "INSERT INTO llm_claims (key, owner, until) VALUES (?, ?, ?)"
    " ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, until = excluded.until"
    " WHERE llm_claims.until < ? OR llm_claims.owner = excluded.owner"
    " RETURNING owner"
)
SQL_RELEASE_LLM = "DELETE FROM llm_claims WHERE key = ? AND owner = ?"
SQL_GET_FORMAT = "SELECT value FROM meta WHERE key = 'format'"
SQL_SET_FORMAT = "INSERT INTO meta (key, value) VALUES ('format', ?) ON CONFLICT (key) DO NOTHING"
TABLES = ("interactions", "explanations", "history_preferences")

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
    "CREATE TABLE IF NOT EXISTS llm_claims ("
    " key TEXT PRIMARY KEY, owner TEXT NOT NULL, until REAL NOT NULL)",
)

#: ``run(sql, args)`` inside a transaction: executes one statement, returns its rows.
Run = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]


class StoreUnavailable(WhyrecError):
    """The store could not be reached or refused a statement; nothing was acknowledged."""


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


def _dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


class Store:
    """What the service keeps durably; subclasses give transactions and reads.

    ``shared`` is true when other processes (service replicas) may write the same store
    at the same time, so what this process holds in memory can be out of date.
    """

    backend = "?"
    shared = False

    # ----------------------------------------------------- backend primitives
    @contextmanager
    def transaction(self) -> Iterator[Run]:
        """Statements run through the yielded function commit together when the block
        exits (and roll back if it raises): the commit has happened when it returns."""
        raise NotImplementedError
        yield  # pragma: no cover

    def read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of one read-only statement."""
        raise NotImplementedError

    def lock_user(self, run: Run, user: str) -> None:
        """Inside a transaction: hold off other writers of ``user`` until it commits."""

    def location(self, detail: bool = False) -> str:
        """Where the store is, for logs and the operator's health view (no secrets)."""
        raise NotImplementedError

    def info(self, detail: bool = False) -> dict[str, Any]:
        """The store's part of ``/health`` (``detail``: also where it is)."""
        out: dict[str, Any] = {"backend": self.backend, "shared": self.shared}
        if detail:
            out["location"] = self.location(detail=True)
        return out

    def close(self) -> None:
        """Release connections (call once, at shutdown)."""

    # ------------------------------------------------------------ interactions
    def add_interactions(self, user: str, item_ids: Sequence[str]) -> list[int]:
        """Append items for ``user`` in one transaction; returns their sequence numbers.

        When this returns, the rows are committed. Writes for one user are serialised,
        so one user's sequence numbers grow in the order their writes committed.
        """
        return self.add_interactions_since(user, item_ids, None)[0]

    def add_interactions_since(
        self, user: str, item_ids: Sequence[str], after_seq: int | None
    ) -> tuple[list[int], list[tuple[int, str]]]:
        """:meth:`add_interactions`, plus the user's ``(seq, item_id)`` rows with a sequence
        number above ``after_seq`` as of the commit — the new ones and whatever other
        processes acknowledged for the user before (``after_seq`` None: no rows read).

        One user's writes hold a lock until they commit, so every earlier write of the
        user is committed, and visible, when the rows are read.
        """
        now = time.time()
        with self.transaction() as run:
            self.lock_user(run, user)
            seqs = [
                int(run(SQL_ADD_INTERACTION, (user, str(item), now))[0][0]) for item in item_ids
            ]
            self.announce(run, user, seqs, item_ids)
            rows: list[tuple[int, str]] = []
            if after_seq is not None:
                found = run(SQL_USER_INTERACTIONS_AFTER, (user, int(after_seq)))
                rows = [(int(s), str(i)) for s, i in found]
            return seqs, rows

    def announce(self, run: Run, user: str, seqs: Sequence[int], item_ids: Sequence[str]) -> None:
        """Inside a write's transaction: tell the other processes sharing the store (sent
        only if the transaction commits). Nothing to do for a store of one process."""

    def interactions(self, user: str | None = None) -> list[tuple[int, str, str]]:
        """``(seq, user, item_id)`` rows in the order they were acknowledged."""
        if user is None:
            rows = self.read(SQL_INTERACTIONS)
        else:
            rows = self.read(SQL_USER_INTERACTIONS, (user,))
        return [(int(s), str(u), str(i)) for s, u, i in rows]

    def interaction_counts(self) -> dict[str, int]:
        """Posted interactions per user."""
        return {str(u): int(n) for u, n in self.read(SQL_INTERACTION_COUNTS)}

    # ------------------------------------------------------------ explanations
    def get_explanation(self, key: str) -> dict[str, Any] | None:
        rows = self.read(SQL_GET_EXPLANATION, (key,))
        return json.loads(rows[0][0]) if rows else None

    def put_explanation(self, key: str, record: dict[str, Any]) -> None:
        """Store (or replace) the record under ``key``; a template record does not replace
        one whose reason the LLM wrote (``reason_source`` other than ``template``)."""
        user = record.get("user")
        args = (
            key,
            None if user is None else str(user),
            str(record.get("item_id", "")),
            str(record.get("reason_source", "")),
            _dumps(record),
            time.time(),
        )
        with self.transaction() as run:
            run(SQL_PUT_EXPLANATION, args)

    def claim_llm(self, key: str, owner: str, hold_s: float) -> bool:
        """Take the right to write ``key``'s reason with the LLM for ``hold_s`` seconds:
        true when no other owner holds a live claim (several replicas then ask the LLM
        once per reason; a replica killed mid-job loses its claim when it expires)."""
        now = time.time()
        with self.transaction() as run:
            return bool(run(SQL_CLAIM_LLM, (key, owner, now + hold_s, now)))

    def release_llm(self, key: str, owner: str) -> None:
        """Give up ``owner``'s claim on ``key`` (its LLM job ended, either way)."""
        with self.transaction() as run:
            run(SQL_RELEASE_LLM, (key, owner))

    # ------------------------------------------------------ history preferences
    def get_history_preferences(self, key: str) -> dict[str, Any] | None:
        rows = self.read(SQL_GET_PREFERENCES, (key,))
        return json.loads(rows[0][0]) if rows else None

    def put_history_preferences(self, key: str, record: dict[str, Any]) -> None:
        with self.transaction() as run:
            run(SQL_PUT_PREFERENCES, (key, json.dumps(record, ensure_ascii=False), time.time()))

    # ------------------------------------------------------------------ other
    def counts(self) -> dict[str, int]:
        return {t: int(self.read(f"SELECT COUNT(*) FROM {t}")[0][0]) for t in TABLES}

    def check_format(self, found: Any) -> None:
        if found is not None and str(found) != str(STORE_FORMAT):
            raise ConfigError(
                f"{self.location()}: store format {found}, this whyrec reads format {STORE_FORMAT}"
            )


class ServeStore(Store):
    """The default store: interactions, explanations and new-history preferences in one
    SQLite file (WAL), for one service process."""

    backend = "sqlite"

    def __init__(self, path: str | Path, *, synchronous: str = "FULL") -> None:
        self.path = Path(path)
        if synchronous not in ("FULL", "NORMAL"):
            raise ConfigError(f"sqlite synchronous must be FULL or NORMAL, got {synchronous!r}")
        self.synchronous = synchronous
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"{self.path}: cannot create the store's directory ({exc})") from None
        refuse_empty_file(self.path)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        try:
            con = self._conn()
            for stmt in _SCHEMA:
                con.execute(stmt)
            row = con.execute(SQL_GET_FORMAT).fetchone()
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"{self.path}: not a usable SQLite store ({exc})") from None
        if row is None:
            con.execute(SQL_SET_FORMAT, (str(STORE_FORMAT),))
        self.check_format(row[0] if row else None)

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

    @contextmanager
    def transaction(self) -> Iterator[Run]:
        con = self._conn()

        def run(sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
            return con.execute(sql, tuple(args)).fetchall()

        con.execute("BEGIN IMMEDIATE")  # the write lock now: writers queue, never deadlock
        try:
            yield run
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._conn().execute(sql, tuple(args)).fetchall()

    def location(self, detail: bool = False) -> str:
        return str(self.path)

    def info(self, detail: bool = False) -> dict[str, Any]:
        out = super().info(detail)
        out["journal_mode"] = self.journal_mode
        if detail:
            out["path"] = str(self.path)
        return out

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


def refuse_empty_file(path: Path, wait_s: float = 1.0) -> None:
    """Refuse a store file that exists but is empty (0 bytes).

    SQLite would take it for a new database and start with no interactions: after a
    truncation (``truncate -s 0``, a failed copy, a full disk) every acknowledged write
    would be silently gone. A file another process is creating this moment is 0 bytes
    for a few milliseconds, so an empty file is looked at again for up to ``wait_s``.
    A new store is started by giving a path that does not exist (or deleting the file).
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            if path.stat().st_size > 0:
                return
        except FileNotFoundError:
            return  # a new store
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the store file ({exc})") from None
        if time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    wal = path.with_name(path.name + "-wal")
    extra = (
        f" ({wal.name} beside it holds {wal.stat().st_size} bytes: keep it for recovery)"
        if wal.is_file() and wal.stat().st_size > 0
        else ""
    )
    raise ConfigError(
        f"{path}: the store file exists but is empty (0 bytes){extra}; it was probably "
        "truncated, and opening it would start a new store without any of the interactions "
        "acknowledged so far. Restore it from a backup, or to start a new store on purpose "
        "delete the file (or give another --store path)."
    )


#: The SQLite store under the name that says what it is.
SQLiteStore = ServeStore
