"""End to end: the ``whyrec serve`` process killed with SIGKILL, and the real embedded LLM
(SmolLM2 via llama.cpp) writing a reason in the background."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from .conftest import free_port, wait_server_ready, wait_until

pytestmark = pytest.mark.slow


def _start(run: Path, store: Path, port: int, log: Path) -> subprocess.Popen:
    cmd = [
        sys.executable, "-m", "whyrec.cli", "serve", str(run), "--port", str(port),
        "--store", str(store), "--no-llm", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)
    wait_server_ready(proc, port, log)
    return proc


def test_sigkill_loses_nothing_acknowledged(runs, tmp_path):
    store = tmp_path / "kill.sqlite"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _start(runs["lane"], store, port, tmp_path / "a.log")
    acked: list[str] = []
    try:
        with httpx.Client(base_url=url, timeout=10) as h:
            explained = h.post("/v1/explanations", json={"user": "u6", "item_id": "i35"}).json()
            for j in range(25):
                item = f"i{(7 * j) % 36}"
                r = h.post("/v1/interactions", json={"user": "killed", "item_ids": [item]})
                assert r.status_code == 200
                acked.append(item)
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # no shutdown hook runs
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL

    port2 = free_port()
    proc2 = _start(runs["lane"], store, port2, tmp_path / "b.log")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port2}", timeout=10) as h:
            hist = h.get("/v1/users/killed/history", params={"limit": 100}).json()
            assert [x["item_id"] for x in reversed(hist["items"])] == acked
            again = h.post("/v1/explanations", json={"user": "u6", "item_id": "i35"}).json()
            assert again["cache"] == "store" and again["reason"] == explained["reason"]
    finally:
        proc2.terminate()
        proc2.wait(timeout=30)


@pytest.fixture
def local_llm_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("WHYREC_LLM_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("WHYREC_LLM_N_THREADS", "1")
    monkeypatch.setenv("WHYREC_LLM_N_CTX", "2048")
    monkeypatch.setenv("WHYREC_LLM_MAX_REASKS", "1")
    monkeypatch.setenv("WHYREC_LLM_CACHE", "false")


def test_real_llm_reason_replaces_the_template_in_the_background(
    runs, make_settings, client_for, local_llm_env
):
    # generous wait cap: on a loaded 1-core share one 135M-model reason can take minutes
    settings = make_settings(runs["lane"], llm=True, explain_budget_s=0.0, explain_max_wait_s=600)
    c = client_for(settings)
    first = c.post("/v1/explanations", json={"user": "u10", "item_id": "i1", "wait_s": 0}).json()
    # within a zero budget: the grounded template now, the LLM's reason later
    assert first["reason_source"] == "template" and first["pending"] is True
    assert first["llm_status"] == "pending" and "being written" in first["reason_note"]
    start = time.monotonic()
    done = c.post("/v1/explanations", json={"user": "u10", "item_id": "i1", "wait_s": 600}).json()
    took = time.monotonic() - start
    assert done["pending"] is False
    health = c.get("/health").json()["llm"]
    assert health["model"].startswith("SmolLM2") and health["backend"] == "local"
    if done["llm_status"] == "done":
        assert done["reason_source"] == "llm" and done["reason"] != first["reason"]
        assert done["llm_model"].startswith("SmolLM2") and done["steps"]["likelihood"]
        assert len(done["steps"]["fitness"]) == len(done["cited"]["preferences"])
    else:  # the 135M model's reply did not validate: recorded, template kept
        assert done["llm_status"] == "failed" and done["problems"]
        assert done["reason"] == first["reason"] and health["state"] != "down"
    # the evidence is the same whoever wrote the words
    assert (
        done["weights"] == first["weights"]
        and done["preference_effects"] == first["preference_effects"]
    )
    c.__exit__(None, None, None)

    again = client_for(settings)
    third = again.post("/v1/explanations", json={"user": "u10", "item_id": "i1"}).json()
    assert third["cache"] == "store" and third["reason"] == done["reason"]
    if done["llm_status"] == "done":
        assert third["pending"] is False
        assert again.get("/health").json()["llm"]["completed"] == 0  # nothing asked again
    print(f"LLM: {took:.1f}s, {done['llm_status']}: {done['reason'][:200]} {done['problems']}")


def test_real_llm_extracts_a_new_users_preferences_in_the_background(
    runs, make_settings, client_for, local_llm_env
):
    settings = make_settings(runs["lane"], llm=True, explain_budget_s=0.0)
    c = client_for(settings)
    titles = ["Film 12", "Film 13", "Film 15", "Film 18", "Film 20", "Film 22"]
    c.post("/v1/interactions", json={"user": "cartoons", "titles": titles})
    first = c.get("/v1/users/cartoons/preferences").json()
    # served at once with grounded preferences; the LLM works in the background
    assert first["source"] == "fallback" and first["pending"] is True
    assert len(first["preferences"]) == 5
    assert c.get("/v1/users/cartoons/recommendations", params={"k": 3}).status_code == 200
    svc = c.app.state.service
    wait_until(lambda: svc.llm.status()["pending_jobs"] == 0, timeout=600, every=0.5)
    after = c.get("/v1/users/cartoons/preferences").json()
    assert after["pending"] is False
    stored = svc.store.counts()["history_preferences"]
    if after["source"] in ("llm", "partial"):
        assert stored == 1
        assert [p["text"] for p in after["preferences"]] != [
            p["text"] for p in first["preferences"]
        ]
    else:  # nothing usable from the 135M model: fallback kept, not stored, retried later
        assert after["source"] == "fallback" and stored == 0
    assert abs(sum(p["weight"] for p in after["preferences"]) - 1) < 1e-4
    print(f"new user's preferences: {after['source']}: {after['preferences'][0]['text']}")
