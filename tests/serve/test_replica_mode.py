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
        other.add_interactions("u4", ["i30", "i31"])
        big = [f"i{j % 36}" for j in range(1500)]
        other.add_interactions("bulk", big)
    finally:
        other.close()
    r = c.get("/v1/users/u4/recommendations", params={"k": 3}).json()
    assert r["new_interactions"] == 2 and r["stale"] is False
    hist = c.get("/v1/users/u4/history", params={"limit": 2}).json()
    assert [x["item_id"] for x in hist["items"]] == ["i31", "i30"] and hist["stale"] is False
    bulk = c.get("/v1/users/bulk/history", params={"limit": 1000}).json()
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
    assert c.post("/v1/interactions", json={"user": "x", "item_ids": ["i1"]}).status_code == 200
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
