"""The service's store on a real PostgreSQL server (a throwaway cluster from Debian's
package, see ``pg_fixtures``): the same contract as the SQLite store, the settings that
choose it, what replicas sharing it see, and two real ``whyrec serve`` processes on one
database, one of them SIGKILLed right after acknowledged writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from whyrec.errors import ConfigError, DataError
from whyrec.serve.store import STORE_FORMAT, ServeStore, Store

from .conftest import free_port, wait_server_ready
from .pg_fixtures import pg_server, pg_url, with_dbname  # noqa: F401

HOSTILE = 'Robert\'); DROP TABLE interactions;-- "quoted" \\ é 字 \u202e'


@pytest.fixture(params=["sqlite", "postgresql"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A function opening (and reopening) one store of each backend."""
    if request.param == "sqlite":
        path = tmp_path / "s.sqlite"
        target: Any = path
        opener = ServeStore
    else:
        target = request.getfixturevalue("pg_url")
        from whyrec.serve.store_pg import PostgresStore

        opener = PostgresStore
    opened: list[Store] = []

    def make() -> Store:
        st = opener(target)
        opened.append(st)
        return st

    yield make
    for st in opened:
        st.close()


# ------------------------------------------------------------------ contract


def test_interactions_are_kept_in_acknowledgement_order(open_store):
    st = open_store()
    a = st.add_interactions("a", ["i1", "i2"])
    b = st.add_interactions(HOSTILE, ["i3"])
    c = st.add_interactions("a", ["i4"])
    assert a[0] < a[1] < b[0] < c[0]
    assert st.interactions("a") == [(a[0], "a", "i1"), (a[1], "a", "i2"), (c[0], "a", "i4")]
    assert st.interactions(HOSTILE) == [(b[0], HOSTILE, "i3")]
    assert [r[2] for r in st.interactions()] == ["i1", "i2", "i3", "i4"]
    assert st.interaction_counts() == {"a": 3, HOSTILE: 1}
    assert st.interactions("nobody") == [] and st.interactions("a\x00") == []
    st.close()
    again = open_store()  # what was acknowledged is there after reopening
    assert again.interactions("a") == [(a[0], "a", "i1"), (a[1], "a", "i2"), (c[0], "a", "i4")]
    assert again.counts() == {"interactions": 4, "explanations": 0, "history_preferences": 0}


def test_explanations_and_preferences_are_replaced_and_read_back(open_store):
    st = open_store()
    assert st.get_explanation("k") is None and st.get_history_preferences("h") is None
    first = {"item_id": "i1", "user": "u1", "reason_source": "template", "reason": HOSTILE}
    st.put_explanation("k", first)
    assert st.get_explanation("k") == first
    # control characters inside a record are JSON-escaped: any backend can hold them
    second = {**first, "reason_source": "llm", "reason": "line\x00one\nline two", "n": 2.5}
    st.put_explanation("k", second)
    assert st.get_explanation("k") == second
    # a late template (another replica's failed LLM attempt) keeps the LLM's reason
    st.put_explanation("k", {**first, "llm_status": "failed"})
    assert st.get_explanation("k") == second
    st.put_explanation("k2", {"item_id": "i2", "user": None, "reason_source": "template"})
    st.put_history_preferences("h", {"preferences": [HOSTILE], "source": "llm"})
    st.put_history_preferences("h", {"preferences": ["a", "b"], "source": "partial"})
    assert st.get_history_preferences("h") == {"preferences": ["a", "b"], "source": "partial"}
    assert st.counts() == {"interactions": 0, "explanations": 2, "history_preferences": 1}
    rows = st.read("SELECT source, item_id FROM explanations WHERE key = ?", ("k",))
    assert rows == [("llm", "i1")]


def test_concurrent_writers_of_one_user_get_distinct_ordered_sequences(open_store):
    st = open_store()
    acks: dict[int, list[int]] = {}
    errors: list[BaseException] = []

    def writer(t: int) -> None:
        try:
            acks[t] = [st.add_interactions("shared", [f"t{t}-{j}"])[0] for j in range(12)]
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors
    rows = st.interactions("shared")
    assert len(rows) == 48 == len({s for s, _, _ in rows})
    for t in range(4):
        assert acks[t] == sorted(acks[t])
        assert [i for _, _, i in rows if i.startswith(f"t{t}-")] == [f"t{t}-{j}" for j in range(12)]


def test_a_store_of_another_format_is_refused(open_store):
    st = open_store()
    with st.transaction() as run:
        run("UPDATE meta SET value = ? WHERE key = 'format'", ("99",))
    with pytest.raises(
        ConfigError, match=f"store format 99, this whyrec reads format {STORE_FORMAT}"
    ):
        open_store()


# ------------------------------------------------------- PostgreSQL only


def test_one_owner_at_a_time_holds_an_llm_claim(open_store):
    a, b = open_store(), open_store()  # two replicas' connections to one store
    key = "k-" + HOSTILE
    assert a.claim_llm(key, "replica-a", 60)
    assert not b.claim_llm(key, "replica-b", 60)  # A holds it
    assert a.claim_llm(key, "replica-a", 60)  # its owner may renew it
    b.release_llm(key, "replica-b")  # not B's to give up
    assert not b.claim_llm(key, "replica-b", 60)
    a.release_llm(key, "replica-a")
    assert b.claim_llm(key, "replica-b", 60)
    # a claim whose replica died expires, and another replica takes it over
    assert a.claim_llm("other", "replica-a", -1)
    assert b.claim_llm("other", "replica-b", 60)
    assert not a.claim_llm("other", "replica-a", 60)


def test_postgres_errors_name_the_server_without_its_password(pg_server):  # noqa: F811
    from whyrec.serve.store_pg import PostgresStore, display_url

    password = pg_server.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
    shown = display_url(pg_server)
    assert password not in shown and "[redacted]" in shown and shown.endswith("/whyrec")
    missing = with_dbname(pg_server, "no_such_database")
    with pytest.raises(ConfigError) as err:
        PostgresStore(missing, timeout=5)
    assert "no_such_database" in str(err.value) and password not in str(err.value)
    wrong = pg_server.replace(password, "not-the-password")
    with pytest.raises(ConfigError, match="password authentication failed") as err:
        PostgresStore(wrong, timeout=5)
    assert "not-the-password" not in str(err.value)
    refused = f"postgresql://whyrec:{password}@127.0.0.1:{free_port()}/whyrec"
    with pytest.raises(ConfigError, match="cannot open the PostgreSQL store") as err:
        PostgresStore(refused, timeout=2)
    assert password not in str(err.value)


def test_nul_in_a_user_id_is_refused_by_name(pg_url):  # noqa: F811
    from whyrec.serve.store_pg import PostgresStore

    st = PostgresStore(pg_url)
    try:
        with pytest.raises(DataError, match="user contains a NUL character"):
            st.add_interactions("a\x00b", ["i1"])
        assert st.counts()["interactions"] == 0
    finally:
        st.close()


def test_settings_choose_postgres_by_url_only(runs, pg_url, monkeypatch):  # noqa: F811
    from whyrec.serve import ServeSettings

    s = ServeSettings.load(run=runs["lane"], store=pg_url)  # --store postgresql://...
    assert s.store is None and s.store_url.get_secret_value() == pg_url
    assert "[redacted]" in s.store_display() and pg_url not in repr(s)
    monkeypatch.setenv("WHYREC_SERVE_STORE_URL", pg_url)
    s = ServeSettings.load(run=runs["lane"])
    assert s.store_url.get_secret_value() == pg_url
    with pytest.raises(ConfigError, match="a SQLite path or store_url, not both"):
        ServeSettings.load(run=runs["lane"], store="/tmp/x.sqlite")
    monkeypatch.setenv("WHYREC_SERVE_STORE_URL", "mysql://u:secretpw@h/db")
    with pytest.raises(ConfigError, match="store_url must be a URL starting") as err:
        ServeSettings.load(run=runs["lane"])
    assert "secretpw" not in str(err.value)
    monkeypatch.delenv("WHYREC_SERVE_STORE_URL")
    assert ServeSettings.load(run=runs["lane"]).store_url is None  # SQLite stays the default


def test_two_apps_on_one_database_share_writes_and_explanations(
    runs,
    make_settings,
    client_for,
    pg_url,  # noqa: F811
):
    a = client_for(make_settings(runs["lane"], store=None, store_url=pg_url, precompute=False))
    b = client_for(make_settings(runs["lane"], store=None, store_url=pg_url, precompute=False))
    assert a.get("/health").json()["store"]["backend"] == "postgresql"
    before = b.get("/v1/users/u5/recommendations", params={"k": 3}).json()
    assert before["new_interactions"] == 0
    r = a.post("/v1/interactions", json={"user": "u5", "item_ids": ["i30", "i31"]})
    assert r.status_code == 200 and r.json()["new_interactions"] == 2
    token = r.json()["token"]
    assert r.headers["x-whyrec-token"] == token == str(max(r.json()["sequence"]))
    # with the write's token B answers from the new history (its cached response is not
    # reused), as a header or a query parameter
    after = b.get(
        "/v1/users/u5/recommendations", params={"k": 3}, headers={"X-Whyrec-After": token}
    ).json()
    assert after["new_interactions"] == 2 and after["history_length"] == 11
    hist = b.get("/v1/users/u5/history", params={"limit": 2, "after": token}).json()
    assert [x["item_id"] for x in hist["items"]] == ["i31", "i30"]
    # a user only A has seen exists on B too
    token = a.post("/v1/interactions", json={"user": "fresh", "item_ids": ["i1"]}).json()["token"]
    users = b.get("/v1/users", params={"limit": 100, "after": token}).json()
    assert any(u["user"] == "fresh" and u["new_interactions"] == 1 for u in users["users"])
    # B's reply to a write counts what A acknowledged before it
    r = b.post("/v1/interactions", json={"user": "u5", "item_ids": ["i32"]})
    assert r.json()["new_interactions"] == 3 and r.json()["history_length"] == 12
    # an explanation A wrote is served from the store by B
    ex_a = a.post("/v1/explanations", json={"user": "u7", "item_id": "i3"}).json()
    assert ex_a["cache"] == "miss"
    ex_b = b.post("/v1/explanations", json={"user": "u7", "item_id": "i3"}).json()
    assert ex_b["cache"] == "store" and ex_b["reason"] == ex_a["reason"]
    assert b.post("/v1/explanations", json={"user": "u7", "item_id": "i3"}).json()["cache"] == (
        "memory"
    )


class GatedLLM:
    """An LLM client whose every call waits until released, then fails (no reply)."""

    model = "gated-test-model"
    backend = SimpleNamespace(name="openai", is_local=False, costs_money=True, max_concurrency=None)

    def __init__(self) -> None:
        self.release = threading.Event()

    def complete(self, *args: Any, **kwargs: Any) -> Any:
        self.release.wait(60)
        raise ConnectionError("gated test LLM released without a reply")

    def complete_many(self, requests: Any, *args: Any, **kwargs: Any) -> Any:
        return [self.complete() for _ in requests]


def test_a_reason_another_replica_finished_replaces_the_pending_template(
    runs,
    make_settings,
    client_for,
    pg_url,  # noqa: F811
):
    from whyrec.serve.store_pg import PostgresStore

    llm = GatedLLM()
    settings = make_settings(
        runs["lane"], store=None, store_url=pg_url, llm=True, explain_budget_s=0.0,
        precompute=False,
    )  # fmt: skip
    b = client_for(settings, llm_client=llm)
    try:
        body = {"user": "u9", "item_id": "i4", "wait_s": 0}
        first = b.post("/v1/explanations", json=body).json()
        assert first["reason_source"] == "template" and first["llm_status"] == "pending"
        # another replica's LLM finished this reason: it is in the shared store
        other = PostgresStore(pg_url)
        (key,) = [k for (k,) in other.read("SELECT key FROM explanations")]
        done = {**other.get_explanation(key), "llm_status": "done", "reason_source": "llm"}
        done["reason"] = "Written by the other replica's LLM."
        other.put_explanation(key, done)
        other.close()
        second = b.post("/v1/explanations", json=body).json()
        assert second["reason"] == done["reason"] and second["cache"] == "store"
        assert second["llm_status"] == "done"
    finally:
        llm.release.set()


class CountingGatedLLM(GatedLLM):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def complete(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return super().complete(*args, **kwargs)


def test_two_replicas_ask_the_llm_once_for_one_reason(
    runs,
    make_settings,
    client_for,
    pg_url,  # noqa: F811
):
    from whyrec.serve.store_pg import PostgresStore

    settings = make_settings(
        runs["lane"], store=None, store_url=pg_url, llm=True, explain_budget_s=0.0,
        precompute=False,
    )  # fmt: skip
    llm_a, llm_b = CountingGatedLLM(), CountingGatedLLM()
    a = client_for(settings, llm_client=llm_a)
    b = client_for(settings, llm_client=llm_b)
    body = {"user": "u3", "item_id": "i6", "wait_s": 0}
    try:
        first = a.post("/v1/explanations", json=body).json()
        assert first["pending"] and first["llm_status"] == "pending"
        # B serves the template and says the reason is being written — by A
        second = b.post("/v1/explanations", json=body).json()
        assert second["pending"] and "being written" in second["reason_note"]
    finally:
        llm_a.release.set()
        llm_b.release.set()
    store = PostgresStore(pg_url)
    try:
        (key,) = [k for (k,) in store.read("SELECT key FROM explanations")]
        for _ in range(200):  # A's job ends (the gated LLM fails): failed, claim released
            if store.get_explanation(key)["llm_status"] == "failed":
                break
            threading.Event().wait(0.05)
        assert store.get_explanation(key)["llm_status"] == "failed"
        assert store.read("SELECT COUNT(*) FROM llm_claims")[0][0] == 0
    finally:
        store.close()
    assert llm_a.calls >= 1 and llm_b.calls == 0


def test_store_outage_is_a_503_and_nothing_is_acknowledged(
    runs,
    make_settings,
    client_for,
    pg_server,  # noqa: F811
):
    import psycopg

    name = "whyrec_gone_" + os.urandom(4).hex()
    with psycopg.connect(pg_server, autocommit=True) as con:
        con.execute(f'CREATE DATABASE "{name}"')
    url = with_dbname(pg_server, name)
    c = client_for(
        make_settings(
            runs["sasrec"], store=None, store_url=url, store_timeout_s=1.0, precompute=False
        )
    )
    assert c.post("/v1/interactions", json={"user": "x", "item_ids": ["i1"]}).status_code == 200
    with psycopg.connect(pg_server, autocommit=True) as con:
        con.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    r = c.post("/v1/interactions", json={"user": "x", "item_ids": ["i2"]})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    detail = r.json()["detail"]
    assert "store (postgresql) is unavailable" in detail and "127.0.0.1" not in detail
    # reads go on from what this replica last saw: recommendations do not need the store
    rec = c.get("/v1/users/x/recommendations", params={"k": 2})
    assert rec.status_code == 200 and rec.json()["new_interactions"] == 1
    assert c.get("/v1/users/u1/recommendations", params={"k": 2}).status_code == 200


# ------------------------------------------------ two real service processes


def _start(run: Path, url: str, port: int, log: Path) -> subprocess.Popen:
    cmd = [
        sys.executable, "-m", "whyrec.cli", "serve", str(run), "--port", str(port),
        "--no-llm", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    env = {**os.environ, "WHYREC_SERVE_STORE_URL": url}  # the password stays off argv
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)


@pytest.mark.slow
def test_two_serve_processes_share_one_database_and_a_sigkill_loses_nothing(
    runs,
    tmp_path,
    pg_url,  # noqa: F811
):
    from whyrec.serve.store_pg import PostgresStore

    ports = [free_port(), free_port()]
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [_start(runs["lane"], pg_url, p, lg) for p, lg in zip(ports, logs, strict=True)]
    try:
        url_a, url_b = (
            wait_server_ready(p, port, lg, timeout=120)
            for p, port, lg in zip(procs, ports, logs, strict=True)
        )
        with (
            httpx.Client(base_url=url_a, timeout=10) as a,
            httpx.Client(base_url=url_b, timeout=10) as b,
        ):
            health = b.get("/health").json()["store"]
            assert health["backend"] == "postgresql" and health["shared"] is True
            assert "location" not in health  # where the database is: operators only
            # an explanation A computed is served from the shared store by B
            ex_a = a.post("/v1/explanations", json={"user": "u6", "item_id": "i35"}).json()
            ex_b = b.post("/v1/explanations", json={"user": "u6", "item_id": "i35"}).json()
            assert ex_a["cache"] == "miss" and ex_b["cache"] == "store"
            assert ex_b["reason"] == ex_a["reason"]
            # writes alternate between the replicas; each is visible on the other at once
            acked: list[str] = []
            for j in range(20):
                writer, reader = (a, b) if j % 2 == 0 else (b, a)
                item = f"i{(7 * j) % 36}"
                r = writer.post("/v1/interactions", json={"user": "killed", "item_ids": [item]})
                assert r.status_code == 200
                acked.append(item)
                after = {"X-Whyrec-After": r.json()["token"]}  # read-your-writes
                seen = reader.get(
                    "/v1/users/killed/history", params={"limit": 100}, headers=after
                ).json()
                assert seen["history_length"] == len(acked)  # a new user: posted items only
            # a burst on A, then A is killed the moment the last write is acknowledged
            for j in range(10):
                item = f"i{(5 * j + 1) % 36}"
                r = a.post("/v1/interactions", json={"user": "killed", "item_ids": [item]})
                assert r.status_code == 200
                acked.append(item)
            os.kill(procs[0].pid, signal.SIGKILL)  # no shutdown hook runs
            procs[0].wait(timeout=10)
            assert procs[0].returncode == -signal.SIGKILL
            after = {"X-Whyrec-After": r.json()["token"]}
            hist = b.get("/v1/users/killed/history", params={"limit": 100}, headers=after).json()
            assert [x["item_id"] for x in reversed(hist["items"])] == acked
            again = b.post("/v1/explanations", json={"user": "u6", "item_id": "i35"}).json()
            assert again["reason"] == ex_a["reason"]
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=30)
    st = PostgresStore(pg_url)
    try:
        assert [i for _, _, i in st.interactions("killed")] == acked
    finally:
        st.close()
