"""What changes when several service processes (replicas) share one store.

A replica's memory can be behind the shared store: another replica may have posted
interactions or finished an LLM reason since. :func:`for_store` picks the parts that
keep up with the store when it is shared (``store.shared``), and the plain ones
otherwise (one process: memory is never behind, nothing extra is read).

* :class:`SharedCatalog` keeps every user's posted interactions in memory, merged by
  sequence number from three sources: the store at start, this replica's own writes (a
  write also reads back what other replicas acknowledged for the user before it), and
  :class:`ReplicaSync`. Requests read memory only — no store call per request.
* :class:`ReplicaSync` (PostgreSQL) keeps that memory current and says whether it is: one
  connection of psycopg's async driver, on the event loop, LISTENs to the channel every
  write NOTIFYs in its own transaction. While idle it watches that connection's socket,
  so a notification is merged within milliseconds of the write's commit, with no query.
  Reads are answered from memory at once. A read that carries a *consistency token* (the
  sequence number a write's reply gave, ``X-Whyrec-After``) that this replica has not
  merged yet awaits a *round*: one ``SELECT 1`` started after the request arrived, which
  makes the server hand over every notification of a write committed before it
  (notifications are sent to a listening session before it reports ready for the next
  query), then the rows those notifications name are merged. So a client that sends its
  token reads its own writes on every replica (read-your-writes), and only reads that
  are ahead of this replica pay a round trip. ``read_consistency = "strict"`` makes
  every read await a round (every write acknowledged before the read, by anyone, is in
  it). Rounds are shared: at most one query is in flight, and every request that arrived
  meanwhile waits for the next one. An idle replica checks the database every
  ``store_check_s`` seconds. A round that fails or takes longer than ``store_timeout_s``
  (or a LISTEN connection the server closed) marks the database unreachable: the store's
  circuit breaker refuses statements at once (writes 503), requests are answered from
  memory, marked ``stale`` (a token this replica has not reached: 503), and the
  connection is tried again every ``store_check_s``; once it answers, the replica LISTENs
  again, re-reads all posted interactions (it missed notifications meanwhile) and the
  breaker closes.
* :class:`FinalOnlyLRU` keeps only final explanation records (written by the LLM, or the
  LLM is off) as memory hits; a template still waiting for the LLM is read from the
  store again, where another replica may have put the LLM's reason.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

from whyrec.serve.catalog import Catalog
from whyrec.serve.store import LRU, SQL_INTERACTIONS, Store, StoreUnavailable

log = logging.getLogger("whyrec.serve")

#: Why a read with a consistency token is refused while the database cannot be reached.
_BEHIND = (
    "this replica has not seen the write named by the consistency token (X-Whyrec-After) "
    "and cannot reach the store to catch up; try again, or another replica"
)

#: ``llm_status`` values after which an explanation record no longer changes.
FINAL_STATUSES = ("done", "disabled")

# The rows of several users above a sequence number per user, in one statement.
SQL_USERS_AFTER = (
    'SELECT i.seq, i."user", i.item_id FROM interactions i'
    ' JOIN unnest(%s::text[], %s::bigint[]) AS w(u, s) ON i."user" = w.u AND i.seq > w.s'
    " ORDER BY i.seq"
)


class SharedCatalog(Catalog):
    """The catalogue, with posted interactions merged from a store other processes write."""

    def __init__(self, model: Any, settings: Any, store: Store) -> None:
        self._seqs: dict[str, set[int]] = {}  # every sequence number merged, per user
        self._rows: dict[str, list[tuple[int, int]]] = {}  # (seq, item index), by seq
        self._top: dict[str, int] = {}  # the highest sequence number merged, per user
        self._merged: set[int] = set()  # every sequence number merged (consistency tokens)
        self.unknown_items = 0
        super().__init__(model, settings, store)

    def _load_interactions(self) -> None:
        self.merge_rows(self.store.interactions())
        if self.unknown_items:
            log.warning(
                "%s: %d stored interactions name items this model does not know; ignored",
                self.store.path,
                self.unknown_items,
            )

    def watermark(self, user: str) -> int:
        """The highest sequence number of ``user`` this replica has (0: none)."""
        return self._top.get(str(user), 0)

    def watermarks(self, users: Iterable[str]) -> dict[str, int]:
        return {str(u): self._top.get(str(u), 0) for u in users}

    def holds(self, tokens: Iterable[int]) -> bool:
        """True when every write the consistency ``tokens`` name (sequence numbers; 0 or
        less names none) has been merged here."""
        merged = self._merged
        return all(t <= 0 or t in merged for t in tokens)

    def merge_rows(self, rows: Iterable[tuple[int, str, str]]) -> int:
        """Merge ``(seq, user, item_id)`` rows; those merged before are skipped, the rest
        take their place by sequence number (one user's sequence numbers follow the order
        the store acknowledged them). Returns how many rows were new."""
        known = self._item_lookup
        new = 0
        with self._write_lock:
            touched: set[str] = set()
            for seq, user, item_id in rows:
                seq, user = int(seq), str(user)
                seen = self._seqs.setdefault(user, set())
                if seq in seen:
                    continue
                seen.add(seq)
                self._merged.add(seq)
                new += 1
                if seq > self._top.get(user, 0):
                    self._top[user] = seq
                idx = known.get(str(item_id))
                if idx is None:
                    self.unknown_items += 1
                    continue
                lst = self._rows.setdefault(user, [])
                if lst and lst[-1][0] > seq:
                    bisect.insort(lst, (seq, idx))
                else:
                    lst.append((seq, idx))
                touched.add(user)
            for user in touched:  # a new list: readers holding the old one are unaffected
                self._extra[user] = [i for _, i in self._rows[user]]
        return new

    def add_interactions(self, user: str, items: Sequence[int]) -> dict[str, Any]:
        """Persist, then merge: the reply counts what other replicas acknowledged for the
        user before this write (read back in the write's own transaction)."""
        user = str(user)
        ids = [self.item_ids[i] for i in items]
        seqs, rows = self.store.add_interactions_since(user, ids, self.watermark(user))
        self.merge_rows((s, user, i) for s, i in rows)
        return self._write_reply(user, ids, seqs)


class ReplicaSync:
    """Keeps a replica's memory of posted interactions current (PostgreSQL LISTEN/NOTIFY)
    and says, per request, whether it is (see the module's description). Runs on the
    event loop; nothing here blocks it."""

    def __init__(
        self, store: Any, catalog: SharedCatalog, *, check_s: float, timeout_s: float
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.check_s = float(check_s)
        self.timeout_s = float(timeout_s)
        #: starting (first round not done), up, down
        self.state = "starting"
        self.rounds = 0
        self.reconnects = 0
        #: reads answered from memory at once / after awaiting a round (for /health, tests)
        self.reads_at_once = 0
        self.reads_waited = 0
        #: notifications merged while idle (no round)
        self.merged_idle = 0
        self.last_ok: float | None = None  # wall clock of the last successful round
        self.error: str | None = None
        self._conn: Any = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._waiters: list[asyncio.Future[bool]] = []
        self._notes: list[str] = []
        self._watching: int | None = None  # the LISTEN socket watched while idle
        self._broken = False  # the idle watch found the connection closed
        self._round_ms: deque[float] = deque(maxlen=2000)  # recent rounds, for /health
        self._closing = False

    # ---------------------------------------------------------------- control
    def start(self) -> None:
        """Start the background task on the running loop (idempotent)."""
        loop = asyncio.get_running_loop()
        if self._task is not None and self._loop is loop and not self._task.done():
            return
        self._loop = loop
        self._closing = False
        self._wake = asyncio.Event()
        self._task = loop.create_task(self._run(), name="whyrec-replica-sync")

    async def stop(self) -> None:
        self._closing = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # the driver may turn a cancellation into an error of its own; the loop ends
            # on _closing either way, and shutdown never waits long for it
            await asyncio.wait({task}, timeout=5.0)
        await self._drop()
        self._resolve(self._take_waiters(), False)

    async def fresh(self) -> bool:
        """True once this replica's memory holds every write acknowledged (by any replica)
        before the call — after one round; False at once while the database cannot be
        reached."""
        if self._closing:
            return False
        if self._task is None or self._loop is not asyncio.get_running_loop():
            self.start()
        if self.state == "down":
            return False
        assert self._loop is not None and self._wake is not None
        fut: asyncio.Future[bool] = self._loop.create_future()
        self._waiters.append(fut)
        self._wake.set()
        return await fut

    async def settle(self, after: Sequence[int] = (), *, strict: bool = False) -> bool:
        """Before a read: True to answer it as fresh, False to answer it marked stale (the
        database cannot be reached; memory holds every write ``after`` names, though).

        Without a token (``after`` empty) or with tokens already merged here, a replica
        whose LISTEN connection is up answers at once (``strict``: only after a round).
        Otherwise the read awaits a round; a token still not held when the database cannot
        be reached raises :class:`StoreUnavailable` (503): this replica cannot show that
        write, and answering without it would break read-your-writes."""
        if self._task is None or self._loop is not asyncio.get_running_loop():
            self.start()
        held = self.catalog.holds(after)
        if held and not strict and self.state == "up" and not self._closing:
            self.reads_at_once += 1
            return True
        if self.state == "down" or self._closing:
            if held:
                return False
            raise StoreUnavailable(_BEHIND)
        self.reads_waited += 1
        ok = await self.fresh()
        if ok:
            # every write acknowledged before the round is merged: a token still not held
            # names no write of this store (nothing to wait for)
            return True
        if self.catalog.holds(after):
            return False
        raise StoreUnavailable(_BEHIND)

    def status(self) -> dict[str, Any]:
        """For ``/health``."""
        out: dict[str, Any] = {
            "sync": self.state,
            "sync_rounds": self.rounds,
            "reads_at_once": self.reads_at_once,
            "reads_waited": self.reads_waited,
        }
        if self.last_ok is not None:
            out["last_sync_s_ago"] = round(time.time() - self.last_ok, 2)
        recent = sorted(self._round_ms)
        if recent:
            out["sync_round_ms"] = {
                "p50": round(recent[len(recent) // 2], 2),
                "p99": round(recent[int(0.99 * (len(recent) - 1))], 2),
                "max": round(recent[-1], 2),
                "of": len(recent),
            }
        return out

    # ------------------------------------------------------------ background
    async def _run(self) -> None:
        assert self._wake is not None
        while not self._closing:
            if self._conn is None:
                try:
                    await asyncio.wait_for(self._connect(), max(self.timeout_s, 1.0) * 10)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    await self._drop()
                    self._down(exc)
                    self._resolve(self._take_waiters(), False)
                    await self._sleep_or_wake(self.check_s)
                    continue
            idle_check = False
            if not self._waiters and self.state == "up" and not self._broken:
                self._drain()  # notifications the driver read along with the last answer
                if not self._notes:
                    # idle: notifications are read as they arrive; a check every check_s
                    idle_check = not await self._idle(self.check_s)
            self._wake.clear()
            if not (self._waiters or self._broken or idle_check) and self.state == "up":
                if self._notes:  # woken by notifications: merge them, no round
                    try:
                        self.merged_idle += await asyncio.wait_for(self._apply(), self.timeout_s)
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:
                        await self._drop()
                        self._down(exc)
                continue
            waiters = self._take_waiters()  # the next round serves those who came before it
            t0 = time.perf_counter()
            try:
                await asyncio.wait_for(self._round(), self.timeout_s)
            except asyncio.CancelledError:
                self._resolve(waiters, False)
                raise
            except Exception as exc:
                await self._drop()
                self._down(exc)
                self._resolve(waiters, False)
                continue
            self._round_ms.append((time.perf_counter() - t0) * 1000)
            self._up()
            self._resolve(waiters, True)

    async def _sleep_or_wake(self, seconds: float) -> bool:
        """Wait ``seconds`` or until woken; True when woken."""
        assert self._wake is not None
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except TimeoutError:
            return False
        return True

    async def _idle(self, seconds: float) -> bool:
        """:meth:`_sleep_or_wake` while the LISTEN socket is watched: a notification (or
        the server closing the connection) wakes the loop at once, with no query."""
        self._watch(True)
        try:
            return await self._sleep_or_wake(seconds)
        finally:
            self._watch(False)

    def _watch(self, on: bool) -> None:
        """Watch the LISTEN connection's socket (only while no query runs on it: the
        driver watches the same socket while it waits for an answer)."""
        loop = self._loop
        if self._watching is not None and loop is not None:
            loop.remove_reader(self._watching)
            self._watching = None
        if on and self._conn is not None and loop is not None:
            try:
                fd = int(self._conn.pgconn.socket)
            except Exception:  # the connection is closed
                self._broken = True
                return
            loop.add_reader(fd, self._readable)
            self._watching = fd

    def _readable(self) -> None:
        """The LISTEN socket has data while idle: read it and take its notifications."""
        conn = self._conn
        try:
            if conn is None:
                raise ConnectionError("no LISTEN connection")
            conn.pgconn.consume_input()
        except Exception:  # the server closed the connection: the next round says so
            self._broken = True
            self._watch(False)
        else:
            self._drain()
        if (self._notes or self._broken) and self._wake is not None:
            self._wake.set()

    def _drain(self) -> None:
        """Hand over the notifications the driver has read but not delivered yet."""
        conn = self._conn
        if conn is None:
            return
        try:
            pg = conn.pgconn
            while (n := pg.notifies()) is not None:
                if pg.notify_handler:
                    pg.notify_handler(n)  # psycopg decodes it and calls _on_notify
        except Exception:
            self._broken = True

    async def _connect(self) -> None:
        from whyrec.serve.store_pg import CHANNEL

        conn = await self.store.connect_async(self.timeout_s)
        try:
            conn.add_notify_handler(self._on_notify)
            await conn.execute(f"LISTEN {CHANNEL}")
            # LISTEN first, then everything: a write that commits in between arrives as
            # a notification and is merged once (by its sequence number)
            cur = await conn.execute(SQL_INTERACTIONS)
            rows = await cur.fetchall()
        except BaseException:
            await asyncio.wait_for(conn.close(), 1.0)
            raise
        self.catalog.merge_rows(rows)
        self._conn = conn
        self._broken = False
        if self.rounds:
            self.reconnects += 1

    async def _round(self) -> None:
        await self._conn.execute("SELECT 1")  # the server hands over notifications first
        await self._apply()

    async def _apply(self) -> int:
        """Merge the notifications received, in the order they came; a write too large
        for its notification is read from the store first, so that memory never holds a
        later write without an earlier one. Returns how many rows were new."""
        notes, self._notes = self._notes, []
        rows: list[tuple[int, str, str]] = []
        reread: set[str] = set()
        for payload in notes:
            try:
                user, seqs, items = json.loads(payload)
            except (ValueError, TypeError):
                continue
            if seqs is None or items is None or len(seqs) != len(items):
                reread.add(str(user))  # too large for a notification: read the rows
                continue
            rows.extend((int(s), str(user), str(i)) for s, i in zip(seqs, items, strict=True))
        if reread:
            marks = self.catalog.watermarks(reread)
            cur = await self._conn.execute(SQL_USERS_AFTER, (list(marks), list(marks.values())))
            rows.extend(await cur.fetchall())
        return self.catalog.merge_rows(rows) if rows else 0

    def _on_notify(self, notify: Any) -> None:
        self._notes.append(str(notify.payload))

    async def _drop(self) -> None:
        self._watch(False)
        conn, self._conn = self._conn, None
        self._notes = []
        self._broken = False
        if conn is not None:
            try:
                await asyncio.wait_for(conn.close(), 1.0)
            except BaseException:  # closing a broken connection is best effort
                pass

    def _down(self, exc: BaseException) -> None:
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        if isinstance(exc, TimeoutError):
            reason = f"no answer within {self.timeout_s:g} s"
        reason = f"{type(exc).__name__}: {reason}" if reason != type(exc).__name__ else reason
        if self.state != "down":
            log.error("shared store unreachable (%s); serving what this replica last saw", reason)
        self.state = "down"
        self.error = reason
        self.store.breaker.hold(reason)

    def _up(self) -> None:
        if self.state == "down":
            log.warning("shared store reachable again")
            reset = getattr(self.store, "reset_pool", None)
            if reset is not None:
                try:
                    reset()
                except Exception:  # the old pool goes on (and recovers on its own)
                    log.exception("new store connection pool failed")
        self.state = "up"
        self.error = None
        self.rounds += 1
        self.last_ok = time.time()
        self.store.breaker.release()

    def _take_waiters(self) -> list[asyncio.Future[bool]]:
        waiters, self._waiters = self._waiters, []
        return waiters

    @staticmethod
    def _resolve(waiters: list[asyncio.Future[bool]], value: bool) -> None:
        for fut in waiters:
            if not fut.done():
                fut.set_result(value)


class FinalOnlyLRU(LRU):
    """An explanation LRU whose hits are final records only (others come from the store)."""

    def get(self, key: Any) -> Any:
        value = super().get(key)
        if isinstance(value, dict) and value.get("llm_status") not in FINAL_STATUSES:
            return None
        return value

    def last_seen(self, key: Any) -> Any:
        """Any record held for ``key``, final or not (served while the store is down)."""
        return super().get(key)


def for_store(store: Store) -> tuple[type[Catalog], type[LRU]]:
    """The catalogue class and the explanation-cache class for ``store``."""
    if store.shared:
        return SharedCatalog, FinalOnlyLRU
    return Catalog, LRU


__all__ = ["FINAL_STATUSES", "FinalOnlyLRU", "ReplicaSync", "SharedCatalog", "for_store"]
