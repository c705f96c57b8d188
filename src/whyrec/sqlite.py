"""Opening SQLite files that several threads and processes share.

Every durable store in whyrec (embedding cache, LLM reply cache, preference store, the
service's store) uses WAL mode. Turning WAL on needs a moment of exclusive access to the
file, and SQLite reports "database is locked" for that step without consulting the busy
handler when another process is creating or converting the same file at the same moment.
:func:`connect_wal` retries that step (and any schema statements) until ``timeout``.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def connect_wal(
    path: str | Path,
    *,
    timeout: float = 30.0,
    synchronous: str = "NORMAL",
    schema: Sequence[str] = (),
    isolation_level: str | None = None,
    check_same_thread: bool = True,
) -> sqlite3.Connection:
    """A connection to ``path`` in WAL mode that waits up to ``timeout`` seconds for locks.

    ``schema`` statements (``CREATE ... IF NOT EXISTS``) run right after WAL is on, inside
    the same retry loop. Errors other than a busy/locked database are raised at once.
    """
    conn = sqlite3.connect(
        path,
        timeout=timeout,
        isolation_level=isolation_level,
        check_same_thread=check_same_thread,
    )
    deadline = time.monotonic() + timeout
    delay = 0.01
    try:
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
                if str(mode).lower() != "wal":
                    conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(f"PRAGMA synchronous={synchronous}")
                for stmt in schema:
                    conn.execute(stmt)
                if conn.in_transaction:
                    conn.commit()
                return conn
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise
                if conn.in_transaction:
                    conn.rollback()
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
    except BaseException:
        conn.close()
        raise
