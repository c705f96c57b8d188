"""Chaos: two real ``whyrec serve`` replicas on a PostgreSQL cluster of this test, under a
bounded load of readers and writers, while the database server is stopped
(``pg_ctl -m fast stop``) and started again.

The bounds are loose on purpose (a loaded 2-core machine must not make the test flaky)
but far below what a replica that blocks its event loop on the database does: before
replica mode degraded, a read took 10-20 s and ``/health`` up to 60 s once the database
was gone. ``bench/chaos.py`` measures the same scenario (docs/benchmarks.md).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import Any

import httpx
import pytest

from .conftest import free_port, wait_server_ready, wait_until
from .pg_fixtures import pg_cluster  # noqa: F401
from .test_store_postgres import _start

#: no single request may take longer (the old freezes: 10-20 s)
MAX_REQUEST_S = 4.0
#: /health says degraded, and later ok again, within these (issue targets: 2 s and 10 s)
DEGRADED_WITHIN_S = 8.0
RECOVERED_WITHIN_S = 30.0


class Load:
    """Readers and writers in threads, each request recorded with its phase."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.phase = "up"
        self.stop = threading.Event()
        self.log: list[dict[str, Any]] = []
        self.acked: dict[str, list[str]] = defaultdict(list)
        self.tokens: dict[str, str] = {}  # each writer's last consistency token
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    def record(self, **row: Any) -> None:
        with self.lock:
            self.log.append({"phase": self.phase, **row})

    def reader(self, n: int) -> None:
        with httpx.Client(base_url=self.urls[n % 2], timeout=60) as c:
            j = n
            while not self.stop.is_set():
                t0 = time.monotonic()
                r = c.get(f"/v1/users/u{j % 45}/recommendations", params={"k": 5})
                stale = r.json().get("stale") if r.status_code == 200 else None
                self.record(
                    route="read", status=r.status_code, s=time.monotonic() - t0, stale=stale
                )
                j += 1
                time.sleep(0.01)

    def writer(self, n: int) -> None:
        clients = [httpx.Client(base_url=u, timeout=60) for u in self.urls]
        user = f"chaos-{n}"
        try:
            j = 0
            while not self.stop.is_set():
                item = f"i{(7 * j + n) % 36}"
                t0 = time.monotonic()
                r = clients[j % 2].post("/v1/interactions", json={"user": user, "item_ids": [item]})
                self.record(
                    route="write",
                    status=r.status_code,
                    s=time.monotonic() - t0,
                    retry_after=r.headers.get("retry-after"),
                )
                if r.status_code == 200:
                    with self.lock:
                        self.acked[user].append(item)
                        self.tokens[user] = r.json()["token"]
                j += 1
                time.sleep(0.03)
        finally:
            for c in clients:
                c.close()

    def start(self, readers: int, writers: int) -> None:
        for n in range(readers):
            self.threads.append(threading.Thread(target=self.reader, args=(n,), daemon=True))
        for n in range(writers):
            self.threads.append(threading.Thread(target=self.writer, args=(n,), daemon=True))
        for t in self.threads:
            t.start()

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(120)
            assert not t.is_alive(), "a load thread is stuck"

    def rows(self, phase: str, route: str) -> list[dict[str, Any]]:
        return [r for r in self.log if r["phase"] == phase and r["route"] == route]


def _health(url: str) -> tuple[float, dict[str, Any], int]:
    t0 = time.monotonic()
    h = httpx.get(url + "/health", timeout=60).json()
    ready = httpx.get(url + "/ready", timeout=60).status_code
    return time.monotonic() - t0, h, ready


@pytest.mark.slow
def test_two_replicas_degrade_while_postgres_is_stopped_and_lose_no_write(
    runs,
    tmp_path,
    pg_cluster,  # noqa: F811
):
    ports = [free_port(), free_port()]
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [
        _start(runs["sasrec"], pg_cluster.url, p, lg) for p, lg in zip(ports, logs, strict=True)
    ]
    load = None
    try:
        urls = [
            wait_server_ready(p, port, lg, timeout=120)
            for p, port, lg in zip(procs, ports, logs, strict=True)
        ]
        load = Load(urls)
        load.start(readers=4, writers=2)
        time.sleep(2.0)

        load.phase = "down"
        pg_cluster.halt()
        t_down = time.monotonic()
        slowest_health = 0.0
        for url in urls:  # both replicas say degraded, and not ready, soon
            wait_until(lambda u=url: _health(u)[1]["status"] == "degraded", DEGRADED_WITHIN_S)
            took, h, ready = _health(url)
            slowest_health = max(slowest_health, took)
            assert ready == 503 and h["store"]["state"] == "down" and h["degraded"]
        assert time.monotonic() - t_down < DEGRADED_WITHIN_S + 2 * MAX_REQUEST_S
        time.sleep(3.0)  # the load goes on against the stopped database

        load.phase = "back"
        pg_cluster.resume()
        t_back = time.monotonic()
        for url in urls:
            wait_until(
                lambda u=url: (lambda r: r[1]["status"] == "ok" and r[2] == 200)(_health(u)),
                RECOVERED_WITHIN_S,
            )
        recovered_s = time.monotonic() - t_back
        for j, url in enumerate(urls):  # each replica takes writes again
            wait_until(
                lambda u=url, j=j: (
                    httpx.post(
                        u + "/v1/interactions",
                        json={"user": f"after-{j}", "item_ids": ["i1"]},
                        timeout=60,
                    ).status_code
                    == 200
                ),
                RECOVERED_WITHIN_S,
            )
        time.sleep(2.0)
        load.phase = "after"
        time.sleep(1.0)
        load.join()

        # ---- what the clients saw
        up_reads, up_writes = load.rows("up", "read"), load.rows("up", "write")
        assert up_reads and up_writes
        assert {r["status"] for r in up_reads + up_writes} == {200}
        assert not any(r["stale"] for r in up_reads)
        down_reads, down_writes = load.rows("down", "read"), load.rows("down", "write")
        assert len(down_reads) > 20 and len(down_writes) > 5
        # reads go on from what the replicas last saw, marked stale; nothing freezes
        assert {r["status"] for r in down_reads} == {200}
        assert sum(1 for r in down_reads if r["stale"]) > len(down_reads) // 2
        assert max(r["s"] for r in load.log) < MAX_REQUEST_S
        assert slowest_health < MAX_REQUEST_S
        # writes: refused with 503 and Retry-After (the few before the stop: 200)
        refused = [r for r in down_writes if r["status"] == 503]
        assert len(refused) > len(down_writes) // 2
        assert {r["status"] for r in down_writes} <= {200, 503}
        assert all(r["retry_after"] == "1" for r in refused)
        assert {r["status"] for r in load.rows("after", "read") + load.rows("after", "write")} == {
            200
        }
        assert not any(r["stale"] for r in load.rows("after", "read"))
        assert recovered_s < RECOVERED_WITHIN_S

        # ---- no acknowledged write lost: in the database and on both replicas, in order
        import psycopg

        with psycopg.connect(pg_cluster.url) as con:
            for user, items in load.acked.items():
                stored = [
                    i
                    for (i,) in con.execute(
                        'SELECT item_id FROM interactions WHERE "user" = %s ORDER BY seq', (user,)
                    )
                ]
                assert stored == items, user
                for url in urls:
                    h = httpx.get(
                        f"{url}/v1/users/{user}/history",
                        params={"limit": 1000, "after": load.tokens[user]},
                        timeout=60,
                    ).json()
                    assert [x["item_id"] for x in reversed(h["items"])] == items
    finally:
        if load is not None:
            load.stop.set()
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=30)
