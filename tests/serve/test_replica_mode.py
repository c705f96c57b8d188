"""Replica mode: a replica's memory kept current by LISTEN/NOTIFY (read-your-writes with no
store read per request), degraded answers while its database cannot be reached, recovery
without a restart — on a real PostgreSQL server — and the empty-store-file rule."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from whyrec.errors import ConfigError
from whyrec.serve.store import ServeStore

from .conftest import wait_until
from .pg_fixtures import pg_server, pg_url  # noqa: F401

# ----------------------------------------------------------- empty store file


def test_an_empty_store_file_is_refused_not_taken_for_a_new_store(runs, tmp_path):
    from whyrec.cli import app

    path = tmp_path / "store.sqlite"
    st = ServeStore(path)
    st.add_interactions("u1", ["i1"])
    st.close()
    path.write_bytes(b"")  # truncate -s 0
    with pytest.raises(ConfigError, match="exists but is empty") as err:
        ServeStore(path, synchronous="FULL")
    assert str(path) in str(err.value) and "delete the file" in str(err.value)
    res = CliRunner().invoke(app, ["serve", str(runs["sasrec"]), "--store", str(path)])
    assert res.exit_code != 0 and isinstance(res.exception, ConfigError)
    assert "exists but is empty" in str(res.exception)
    assert path.stat().st_size == 0  # untouched: nothing started on it
    # a path that does not exist is a new store, as before
    fresh = ServeStore(tmp_path / "new.sqlite")
    assert fresh.counts()["interactions"] == 0
    fresh.close()


# ------------------------------------------------------ NOTIFY-kept memory


def _other_replica(url: str):
    from whyrec.serve.store_pg import PostgresStore

    return PostgresStore(url)


def test_writes_of_another_replica_are_in_the_next_request_without_a_read_per_request(
    runs,
    make_settings,
    client_for,
    pg_url,  # noqa: F811
):
    c = client_for(make_settings(runs["sasrec"], store=None, store_url=pg_url, precompute=False))
    svc = c.app.state.service
    assert c.get("/v1/users/u4/recommendations", params={"k": 3}).json()["new_interactions"] == 0
    other = _other_replica(pg_url)
    try:
        # another replica's writes: a small one (items in the notification) and one too
        # large for a notification (the replica reads the user's new rows)
        small = other.add_interactions("u4", ["i30", "i31"])
        big = [f"i{j % 36}" for j in range(1500)]
        large = other.add_interactions("bulk", big)
    finally:
        other.close()
    after = {"after": f"{max(small)},{max(large)}"}  # the writes' consistency tokens
    r = c.get("/v1/users/u4/recommendations", params={"k": 3, **after}).json()
    assert r["new_interactions"] == 2 and r["stale"] is False
    hist = c.get("/v1/users/u4/history", params={"limit": 2, **after}).json()
    assert [x["item_id"] for x in hist["items"]] == ["i31", "i30"] and hist["stale"] is False
    bulk = c.get("/v1/users/bulk/history", params={"limit": 1000, **after}).json()
    assert bulk["history_length"] == 1500
    assert [x["item_id"] for x in reversed(bulk["items"])] == big[-1000:]
    # the requests were answered from memory: the store saw no read of interactions
    calls = []
    real = svc.store.read
    svc.store.read = lambda sql, args=(): calls.append(sql) or real(sql, args)
    try:
        for _ in range(5):
            assert c.get("/v1/users/u4/recommendations", params={"k": 3}).status_code == 200
    finally:
        svc.store.read = real
    assert not [s for s in calls if "interactions" in s]
    health = c.get("/health").json()
    assert health["status"] == "ok" and health["store"]["sync"] == "up"


# ------------------------------------------------------- degraded, recovered


def _block(server: str, dbname: str, allow: bool) -> None:
    """Refuse (or allow again) new connections to one database and end its sessions: to
    this test's replica the database is unreachable, as if its server had stopped."""
    import psycopg

    with psycopg.connect(server, autocommit=True) as con:
        con.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS {str(allow).lower()}')
        if not allow:
            con.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (dbname,),
            )


def test_an_unreachable_database_degrades_the_replica_and_it_recovers_alone(
    runs,
    make_settings,
    client_for,
    pg_server,  # noqa: F811
    pg_url,  # noqa: F811
):
    dbname = pg_url.rsplit("/", 1)[1].split("?")[0]
    c = client_for(
        make_settings(
            runs["lane"], store=None, store_url=pg_url, precompute=False, store_check_s=0.2
        )
    )
    w = c.post("/v1/interactions", json={"user": "x", "item_ids": ["i1"]})
    assert w.status_code == 200
    token = w.json()["token"]
    cached = {"user": "u2", "item_id": "i5"}
    assert c.post("/v1/explanations", json=cached).status_code == 200
    assert c.get("/v1/users/u2/recommendations", params={"k": 3, "explain": True}).is_success
    assert c.get("/ready").status_code == 200
    _block(pg_server, dbname, allow=False)
    try:
        wait_until(lambda: c.get("/health").json()["status"] == "degraded", timeout=30)
        health = c.get("/health").json()
        assert health["store"]["state"] == "down" and "unreachable" in health["degraded"][0]
        ready = c.get("/ready")
        assert ready.status_code == 503 and ready.headers["retry-after"] == "1"
        assert not ready.json()["ready"] and ready.json()["reasons"]
        # reads from what the replica last saw, marked stale
        rec = c.get("/v1/users/x/recommendations", params={"k": 2})
        assert rec.status_code == 200 and rec.json()["stale"] is True
        assert rec.json()["new_interactions"] == 1
        rec = c.get("/v1/users/u2/recommendations", params={"k": 3, "explain": True})
        assert rec.status_code == 200 and rec.json()["stale"] is True
        again = c.post("/v1/explanations", json=cached)
        assert again.status_code == 200 and again.json()["stale"] is True
        assert c.get("/v1/users/x/history").json()["stale"] is True
        assert c.get("/v1/users", params={"limit": 100}).json()["stale"] is True
        # a token this replica holds (its own write): answered, stale; one it does not
        # hold: 503, as answering without that write would break read-your-writes
        held = c.get("/v1/users/x/history", params={"after": token})
        assert held.status_code == 200 and held.json()["stale"] is True
        assert held.json()["history_length"] == 1
        ahead = c.get("/v1/users/x/history", headers={"X-Whyrec-After": str(int(token) + 99)})
        assert ahead.status_code == 503 and ahead.headers["retry-after"] == "1"
        assert "consistency token" in ahead.json()["detail"]
        # writes and explanations the replica never held: 503, nothing acknowledged
        w = c.post("/v1/interactions", json={"user": "x", "item_ids": ["i2"]})
        assert w.status_code == 503 and w.headers["retry-after"] == "1"
        new = c.post("/v1/explanations", json={"user": "u3", "item_id": "i7"})
        assert new.status_code == 503 and new.headers["retry-after"] == "1"
    finally:
        _block(pg_server, dbname, allow=True)
    # back without a restart
    wait_until(lambda: c.get("/health").json()["status"] == "ok", timeout=30)
    assert c.get("/ready").status_code == 200
    w = wait_until(
        lambda: (
            r
            if (r := c.post("/v1/interactions", json={"user": "x", "item_ids": ["i3"]})).is_success
            else None
        ),
        timeout=30,
    )
    assert w.json()["new_interactions"] == 2
    rec = c.get("/v1/users/x/recommendations", params={"k": 2}).json()
    assert rec["stale"] is False and rec["new_interactions"] == 2
    hist = c.get("/v1/users/x/history").json()
    assert [x["item_id"] for x in reversed(hist["items"])] == ["i1", "i3"]


def test_the_sync_reads_again_what_it_missed_while_down(
    runs,
    make_settings,
    client_for,
    pg_server,  # noqa: F811
    pg_url,  # noqa: F811
):
    """A write another replica acknowledged while this one could not reach the database
    (its notification was never delivered here) is read when the database answers again."""
    import psycopg

    c = client_for(make_settings(runs["sasrec"], store=None, store_url=pg_url, precompute=False))
    assert c.get("/v1/users/u8/recommendations").json()["new_interactions"] == 0
    svc = c.app.state.service
    # end only this replica's LISTEN session: its memory misses what comes next
    with psycopg.connect(pg_server, autocommit=True) as con:
        pid = svc.sync._conn.info.backend_pid
        con.execute("SELECT pg_terminate_backend(%s)", (pid,))
    other = _other_replica(pg_url)
    try:
        other.add_interactions("u8", ["i20", "i21", "i22"])
    finally:
        other.close()
    # read again, and (once the breaker has closed) no longer marked stale
    r = wait_until(
        lambda: (
            j
            if (j := c.get("/v1/users/u8/recommendations").json())["new_interactions"] == 3
            and j["stale"] is False
            else None
        ),
        timeout=30,
    )
    assert r["stale"] is False
    assert svc.sync.reconnects >= 1


def test_stores_of_one_process_are_never_stale(runs, make_settings, client_for):
    c = client_for(make_settings(runs["sasrec"], precompute=False))
    r = c.get("/v1/users/u1/recommendations", params={"k": 2}).json()
    assert r["stale"] is False
    h = c.get("/health").json()
    assert h["status"] == "ok" and h["degraded"] == [] and h["store"]["state"] == "up"
    assert c.get("/ready").json() == {"ready": True, "reasons": []}


# ------------------------------------------------------- consistency tokens


def test_a_write_on_one_replica_is_read_on_the_other_with_its_token_every_time(
    runs,
    make_settings,
    client_for,
    pg_url,  # noqa: F811
):
    """Read-your-writes across replicas: each write goes to one replica, the read right
    after it to the other with the write's token — 60 times, alternating, every route that
    reads a user's state; the answer always holds the write."""
    settings = make_settings(runs["sasrec"], store=None, store_url=pg_url, precompute=False)
    a, b = client_for(settings), client_for(settings)
    assert b.get("/v1/users/u3/recommendations", params={"k": 2}).json()["new_interactions"] == 0
    posted: list[str] = []
    for j in range(60):
        writer, reader = (a, b) if j % 2 == 0 else (b, a)
        item = f"i{(11 * j) % 36}"
        w = writer.post("/v1/interactions", json={"user": "u3", "item_ids": [item]})
        assert w.status_code == 200
        posted.append(item)
        token = w.json()["token"]
        assert w.headers["x-whyrec-token"] == token
        after = {"X-Whyrec-After": token}
        rec = reader.get("/v1/users/u3/recommendations", params={"k": 2}, headers=after).json()
        assert rec["new_interactions"] == len(posted) and rec["stale"] is False, j
        hist = reader.get("/v1/users/u3/history", params={"limit": 1, "after": token}).json()
        assert [x["item_id"] for x in hist["items"]] == [item], j
    # a user created on one replica, read through every user-state route of the other
    w = a.post("/v1/interactions", json={"user": "newcomer", "item_ids": ["i4", "i5"]})
    after = {"X-Whyrec-After": w.json()["token"]}
    users = b.get("/v1/users", params={"limit": 100}, headers=after).json()["users"]
    assert any(u["user"] == "newcomer" and u["new_interactions"] == 2 for u in users)
    assert b.get("/v1/users/newcomer/preferences", headers=after).status_code == 200
    ex = b.post("/v1/explanations", json={"user": "newcomer", "item_id": "i9"}, headers=after)
    assert ex.status_code == 200 and ex.json()["stale"] is False
    # the writes as they are stored
    b_hist = b.get("/v1/users/u3/history", params={"limit": 100}, headers=after).json()
    assert [x["item_id"] for x in reversed(b_hist["items"]) if x["source"] == "api"] == posted


def test_reads_without_a_token_are_answered_from_memory_with_no_round(
    runs,
    make_settings,
    client_for,
    pg_url,  # noqa: F811
):
    # no idle check within the test (store_check_s 60): every round counted is a read's
    c = client_for(
        make_settings(
            runs["sasrec"], store=None, store_url=pg_url, precompute=False, store_check_s=60
        )
    )
    svc = c.app.state.service
    sync = svc.sync
    c.get("/v1/users/u2/history")  # the first read waits for the replica's first round
    wait_until(lambda: sync.state == "up")
    rounds, waited, at_once = sync.rounds, sync.reads_waited, sync.reads_at_once
    queries: list[str] = []
    conn = sync._conn
    real_execute = conn.execute

    async def counting(query, *args, **kw):
        queries.append(str(query))
        return await real_execute(query, *args, **kw)

    conn.execute = counting
    reads = []
    real_read = svc.store.read
    svc.store.read = lambda sql, args=(): reads.append(sql) or real_read(sql, args)
    try:
        for j in range(10):
            assert c.get(f"/v1/users/u{j}/recommendations", params={"k": 2}).status_code == 200
            assert c.get(f"/v1/users/u{j}/history").json()["stale"] is False
        assert c.get("/v1/users").status_code == 200
        assert c.get("/v1/users/u1/preferences").status_code == 200
        # another replica's write reaches this one by its notification alone: no round
        other = _other_replica(pg_url)
        try:
            held = max(other.add_interactions("u7", ["i30", "i31", "i32"]))
        finally:
            other.close()
        wait_until(
            lambda: c.get("/v1/users/u7/history").json()["history_length"] == 9 + 3,
            timeout=30,
            every=0.02,
        )
        assert sync.merged_idle >= 3
        assert sync.rounds == rounds and sync.reads_waited == waited
        assert not queries  # the LISTEN connection sent nothing
        # a token this replica holds costs nothing either; one it does not hold (here:
        # a token no write has yet) costs one round, then the read is answered
        assert c.get("/v1/users/u7/history", params={"after": held}).status_code == 200
        assert sync.rounds == rounds and not queries
        r = c.get("/v1/users/u7/history", headers={"X-Whyrec-After": str(held + 1000)})
        assert r.status_code == 200 and r.json()["stale"] is False
        assert sync.reads_waited == waited + 1 and sync.rounds == rounds + 1
        assert queries == ["SELECT 1"]
    finally:
        conn.execute = real_execute
        svc.store.read = real_read
    assert not [s for s in reads if "interactions" in s]  # memory only
    health = c.get("/health").json()["store"]
    # 22 reads, at least one poll for u7's new rows, the read with a token held
    assert health["reads_waited"] == waited + 1 and health["reads_at_once"] >= at_once + 24


def test_strict_read_consistency_waits_for_a_round_on_every_read(
    runs,
    make_settings,
    client_for,
    pg_url,  # noqa: F811
):
    c = client_for(
        make_settings(
            runs["sasrec"],
            store=None,
            store_url=pg_url,
            precompute=False,
            store_check_s=60,
            read_consistency="strict",
        )
    )
    sync = c.app.state.service.sync
    c.get("/v1/users/u2/history")
    waited, rounds = sync.reads_waited, sync.rounds
    other = _other_replica(pg_url)
    try:
        for j in range(5):
            other.add_interactions("u5", [f"i{j}"])
            # no token: the round alone makes the write visible
            h = c.get("/v1/users/u5/history", params={"limit": 1}).json()
            assert h["items"][0]["item_id"] == f"i{j}" and h["stale"] is False
    finally:
        other.close()
    assert sync.reads_waited == waited + 5 and sync.rounds >= rounds + 5
    assert sync.reads_at_once == 0


def test_tokens_are_checked_and_harmless_on_a_store_of_one_process(runs, make_settings, client_for):
    c = client_for(make_settings(runs["sasrec"], precompute=False))
    w = c.post("/v1/interactions", json={"user": "solo", "item_ids": ["i1", "i2"]})
    assert w.status_code == 200
    token = w.json()["token"]
    assert token == w.headers["x-whyrec-token"] == str(max(w.json()["sequence"]))
    for params, headers in (({"after": token}, {}), ({}, {"X-Whyrec-After": f"{token},1"})):
        h = c.get("/v1/users/solo/history", params=params, headers=headers)
        assert h.status_code == 200 and h.json()["history_length"] == 2
        assert h.json()["stale"] is False
    # a token far ahead means nothing to one process: its memory is never behind
    far = c.get("/v1/users/solo/recommendations", params={"after": "999999999"})
    assert far.status_code == 200 and far.json()["stale"] is False
    for bad in ("", "abc", "-1", "1,,2", "1" * 19, ",".join(["1"] * 17)):
        r = c.get("/v1/users/solo/history", params={"after": bad})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "after"], bad
        r = c.get("/v1/users/solo/history", headers={"X-Whyrec-After": bad})
        assert r.status_code == 422, bad
        assert r.json()["detail"][0]["loc"] == ["header", "x-whyrec-after"], bad
