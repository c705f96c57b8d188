"""Auth, LLM outage, concurrent writes over real HTTP, and settings."""

from __future__ import annotations

import json
import threading

import httpx
import pytest
from typer.testing import CliRunner

from whyrec.errors import ConfigError
from whyrec.serve import ServeSettings, ServeStore, is_loopback

from .conftest import free_port, wait_until

# ------------------------------------------------------------------------ auth


def test_auth_rejects_missing_and_wrong_keys(runs, make_settings, client_for):
    c = client_for(make_settings(runs["lane"], api_keys="k-one, k-two"))
    paths = [
        ("get", "/v1/users/u0/recommendations", None),
        ("get", "/v1/users/u0/preferences", None),
        ("post", "/v1/recommendations", {"item_ids": ["i1"]}),
        ("post", "/v1/explanations", {"user": "u0", "item_id": "i1"}),
        ("post", "/v1/interactions", {"user": "u0", "item_ids": ["i1"]}),
    ]
    for method, path, body in paths:
        kw = {"json": body} if body is not None else {}
        r = getattr(c, method)(path, **kw)
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"] == "Bearer"
        assert "API key" in r.json()["detail"]
        r = getattr(c, method)(path, headers={"Authorization": "Bearer k-three"}, **kw)
        assert r.status_code == 401, path
        r = getattr(c, method)(path, headers={"Authorization": "Basic k-one"}, **kw)
        assert r.status_code == 401, path
        for key in ("k-one", "k-two"):
            r = getattr(c, method)(path, headers={"Authorization": f"Bearer {key}"}, **kw)
            assert r.status_code == 200, (path, r.text)
    # rejected writes were not stored: only the two accepted posts are
    assert c.app.state.service.store.counts()["interactions"] == 2
    assert c.get("/health").status_code == 200  # health needs no key
    assert c.get("/health").json()["auth"] is True


def test_without_keys_only_loopback(runs, tmp_path):
    for host in ("0.0.0.0", "192.168.1.20", "::", "example.org"):
        with pytest.raises(ConfigError, match="without API keys"):
            ServeSettings.load(run=runs["lane"], host=host)
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.5"):
        assert ServeSettings.load(run=runs["lane"], host=host).auth_enabled is False
    ok = ServeSettings.load(run=runs["lane"], host="0.0.0.0", api_keys="secret")
    assert ok.auth_enabled and "secret" not in repr(ok)
    keys = tmp_path / "keys.txt"
    keys.write_text("# service keys\nalpha\n\nbeta  # for the batch job\n")
    s = ServeSettings.load(run=runs["lane"], host="0.0.0.0", api_keys_file=keys)
    assert s.keys() == ["alpha", "beta"]
    assert is_loopback("127.0.0.1") and not is_loopback("10.0.0.1")


def test_cli_refuses_a_public_host_without_keys(runs, monkeypatch):
    from whyrec.cli import app

    monkeypatch.delenv("WHYREC_SERVE_API_KEYS", raising=False)
    res = CliRunner().invoke(app, ["serve", str(runs["lane"]), "--host", "0.0.0.0"])
    assert res.exit_code != 0
    assert isinstance(res.exception, ConfigError) and "without API keys" in str(res.exception)


# ---------------------------------------------------------------- settings


def test_settings_from_env_and_file(runs, tmp_path, monkeypatch):
    monkeypatch.setenv("WHYREC_SERVE_RUN", str(runs["lane"]))
    monkeypatch.setenv("WHYREC_SERVE_API_KEYS", "a,b")
    monkeypatch.setenv("WHYREC_SERVE_K_MAX", "20")
    s = ServeSettings.load()
    assert s.keys() == ["a", "b"] and s.k_max == 20
    assert s.store_path() == runs["lane"].resolve().with_name("lane.serve.sqlite")
    cfg = tmp_path / "serve.toml"
    cfg.write_text('[serve]\nport = 9123\napi_keys = ["x", "y"]\nexplain_budget_s = 0.5\n')
    monkeypatch.delenv("WHYREC_SERVE_API_KEYS")
    s = ServeSettings.load(cfg)
    assert (s.port, s.keys(), s.explain_budget_s) == (9123, ["x", "y"], 0.5)
    monkeypatch.setenv("WHYREC_SERVE_PORT", "9200")  # env beats the file
    assert ServeSettings.load(cfg).port == 9200
    cfg.write_text("[serve]\nprot = 1\n")
    with pytest.raises(ConfigError, match=r"prot: unknown setting"):
        ServeSettings.load(cfg)
    cfg.write_text("[serve]\nk_default = 50\n")
    with pytest.raises(ConfigError, match="k_default .50. is larger than k_max .20."):
        ServeSettings.load(cfg)
    cfg.write_text("port = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        ServeSettings.load(cfg)
    monkeypatch.setenv("WHYREC_SERVE_PORT", "eighty")
    with pytest.raises(ConfigError, match="WHYREC_SERVE_PORT"):
        ServeSettings.load()


def test_bad_run_directory_is_a_clear_error(tmp_path, make_settings):
    from whyrec.errors import ModelError
    from whyrec.serve import create_app

    with pytest.raises(ModelError, match="does not exist"):
        create_app(make_settings(tmp_path / "missing"))


# ------------------------------------------------------------------ outage


@pytest.fixture
def dead_llm(monkeypatch):
    """The LLM settings point at a port where nothing listens: every call fails."""
    for name, value in {
        "WHYREC_LLM_BACKEND": "openai",
        "WHYREC_LLM_MODEL": "gone-model",
        "WHYREC_LLM_BASE_URL": f"http://127.0.0.1:{free_port()}/v1",
        "WHYREC_LLM_MAX_RETRIES": "0",
        "WHYREC_LLM_TIMEOUT": "2",
        "WHYREC_LLM_CACHE": "false",
    }.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize("kind", ["lane", "sasrec"])
def test_llm_outage_never_breaks_recommendations(kind, runs, make_settings, client_for, dead_llm):
    c = client_for(make_settings(runs[kind], llm=True, explain_budget_s=5.0))
    assert c.get("/v1/users/u4/recommendations", params={"k": 3}).status_code == 200
    r = c.get("/v1/users/u4/recommendations", params={"k": 3, "explain": "true"})
    assert r.status_code == 200
    for it in r.json()["items"]:
        ex = it["explanation"]
        assert ex["reason_source"] == "template" and ex["title"] in ex["reason"]
        assert ex["llm_status"] in ("failed", "pending")
    svc = c.app.state.service
    wait_until(lambda: svc.llm.status()["pending_jobs"] == 0)
    health = c.get("/health").json()["llm"]
    assert health["state"] == "down" and health["failed"] >= 1 and health["completed"] == 0
    again = c.get("/v1/users/u4/recommendations", params={"k": 3, "explain": "true"}).json()
    for it in again["items"]:
        ex = it["explanation"]
        assert ex["llm_status"] == "failed" and ex["problems"] and ex["pending"] is False
        assert "failed" in ex["reason_note"]
    # while the LLM is down new histories are still served (grounded preferences)
    r = c.post("/v1/recommendations", json={"item_ids": ["i1", "i2"], "k": 2, "explain": True})
    assert r.status_code == 200 and len(r.json()["items"]) == 2


def test_failed_reasons_are_asked_again_after_the_outage_cooldown(
    runs, make_settings, client_for, dead_llm
):
    import time

    c = client_for(
        make_settings(runs["lane"], llm=True, explain_budget_s=5.0, llm_outage_cooldown_s=3.0)
    )
    svc = c.app.state.service
    params = {"k": 2, "explain": "true"}
    c.get("/v1/users/u12/recommendations", params=params)
    wait_until(lambda: svc.llm.status()["pending_jobs"] == 0)
    failed = svc.llm.status()["failed"]
    assert failed >= 1
    # within the cooldown: no new attempt
    c.get("/v1/users/u12/recommendations", params=params)
    assert svc.llm.status()["failed"] == failed
    time.sleep(3.2)
    again = c.get("/v1/users/u12/recommendations", params=params).json()
    wait_until(lambda: svc.llm.status()["pending_jobs"] == 0)
    assert svc.llm.status()["failed"] > failed  # asked again, failed again
    assert all(it["explanation"]["reason_source"] == "template" for it in again["items"])


def test_unusable_llm_settings_do_not_stop_the_service(runs, make_settings, client_for, tmp_path):
    bad = tmp_path / "llm.toml"
    bad.write_text('backend = "openai"\n')  # no model: invalid LLM settings
    c = client_for(make_settings(runs["lane"], llm=True, llm_config=bad))
    assert c.get("/health").json()["llm"]["state"] == "unavailable"
    r = c.get("/v1/users/u1/recommendations", params={"k": 2, "explain": "true"})
    assert r.status_code == 200
    assert r.json()["items"][0]["explanation"]["llm_status"] == "unavailable"


# -------------------------------------------------------- concurrent writes


def test_concurrent_interaction_posts_over_http(runs, make_settings, live_server):
    from whyrec.serve import create_app

    settings = make_settings(runs["lane"])
    srv = live_server(create_app(settings))
    n_threads, per_thread = 6, 15
    errors: list[str] = []
    acks: dict[int, list[int]] = {}

    def writer(t: int) -> None:
        with httpx.Client(base_url=srv.url, timeout=30) as h:
            seqs = []
            for j in range(per_thread):
                item = f"i{(t * per_thread + j) % 36}"
                r = h.post("/v1/interactions", json={"user": f"w{t}", "item_ids": [item]})
                if r.status_code != 200:
                    errors.append(r.text)
                    return
                seqs += r.json()["sequence"]
                # everyone also appends to one shared user
                r = h.post("/v1/interactions", json={"user": "shared", "item_ids": [item]})
                if r.status_code != 200:
                    errors.append(r.text)
                    return
            acks[t] = seqs

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors
    with httpx.Client(base_url=srv.url) as h:
        for t in range(n_threads):
            hist = h.get(f"/v1/users/w{t}/history", params={"limit": 100}).json()
            want = [f"i{(t * per_thread + j) % 36}" for j in range(per_thread)]
            assert [x["item_id"] for x in reversed(hist["items"])] == want
            assert acks[t] == sorted(acks[t])  # acknowledged in order
        shared = h.get("/v1/users/shared/history", params={"limit": 1000}).json()
        assert shared["history_length"] == n_threads * per_thread
    # the file holds exactly what was acknowledged, in acknowledgement order
    store = ServeStore(settings.store_path())
    rows = store.interactions()
    store.close()
    assert len(rows) == 2 * n_threads * per_thread
    assert [s for s, _, _ in rows] == sorted(s for s, _, _ in rows)
    for t in range(n_threads):
        assert [s for s, u, _ in rows if u == f"w{t}"] == acks[t]


# ------------------------------------------------------------------- store


def test_store_is_wal_and_survives_reopen(tmp_path):
    path = tmp_path / "s.sqlite"
    st = ServeStore(path)
    assert st.journal_mode == "wal"
    assert st._conn().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    seqs = st.add_interactions("a", ["x", "y"])
    st.put_explanation("k1", {"item_id": "x", "reason_source": "template", "reason": "r"})
    st.close()
    st = ServeStore(path)
    assert st.interactions("a") == [(seqs[0], "a", "x"), (seqs[1], "a", "y")]
    assert st.get_explanation("k1")["reason"] == "r"
    st._conn().execute("UPDATE meta SET value = '99' WHERE key = 'format'")
    st.close()
    with pytest.raises(ConfigError, match="store format 99"):
        ServeStore(path)
    bad = tmp_path / "bad.sqlite"
    bad.write_text("this is not sqlite" * 100)
    with pytest.raises(ConfigError, match="not a usable SQLite store"):
        ServeStore(bad)


def test_lru_evicts_least_recently_used():
    from whyrec.serve import LRU

    lru = LRU(2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1  # a is now the most recent
    lru.put("c", 3)
    assert lru.get("b") is None and lru.get("a") == 1 and lru.get("c") == 3
    off = LRU(0)
    off.put("a", 1)
    assert off.get("a") is None


def test_stored_explanation_json_is_what_the_api_returns(runs, make_settings, client_for):
    settings = make_settings(runs["lane"])
    c = client_for(settings)
    ex = c.post("/v1/explanations", json={"user": "u8", "item_id": "i2"}).json()
    st = ServeStore(settings.store_path())
    rows = st._conn().execute("SELECT record FROM explanations").fetchall()
    st.close()
    stored = [json.loads(r[0]) for r in rows]
    assert any(s["reason"] == ex["reason"] and s["item_id"] == "i2" for s in stored)
