"""LLM faults in the preference stage and in batch jobs, against real local endpoints:
outages are asked again on the next run, schema failures are redone by --retry-failed
(past the negative cache), echoed credentials never reach a store, and a job killed with
SIGKILL is reported as interrupted (stale lock) and taken over by the next run."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from whyrec.batch import BatchOptions, PreferenceJob, read_manifest, read_output, run_batch
from whyrec.data import load_dataset
from whyrec.explain.preferences import PreferenceExtractor, PreferenceStore
from whyrec.llm import LLMClient, LLMSettings

from . import conftest as bconf
from .test_kill_resume import keys_on_disk, kill, start, wait_for

KEY = "whyrec-batch-test-key-9876543210"


def client_for(base_url: str, **kw: Any) -> LLMClient:
    base = {
        "backend": "openai",
        "model": "stub-1",
        "base_url": base_url,
        "max_retries": 0,
        "backoff_base": 0.0,
        "cache": False,
        "concurrency": 1,
    }
    return LLMClient(LLMSettings.load(**{**base, **kw}))


def opts(**kw: Any) -> BatchOptions:
    return BatchOptions(**{"shard_size": 4, "progress": False, **kw})


def first_user_hash(body: dict[str, Any]) -> int:
    """Stable over re-asks: a hash of the first user message only."""
    first = next(m["content"] for m in body["messages"] if m["role"] == "user")
    return int(hashlib.sha256(first.encode()).hexdigest()[:8], 16)


@pytest.fixture
def schema_failures(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make the stub endpoint answer a third of the users with replies that never
    validate (one preference instead of five); call the result to heal it."""
    good = bconf.reply_for

    def bad(body: dict[str, Any]) -> str:
        if first_user_hash(body) % 3 == 0:
            return json.dumps({"preferences": ["Likes films"]})
        return good(body)

    monkeypatch.setattr(bconf, "reply_for", bad)
    return lambda: monkeypatch.setattr(bconf, "reply_for", good)


def dead_url() -> str:
    with socket.socket() as s:  # nothing listens on this port once it is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


class EchoingAuthServer:
    """Rejects every request with 401 and an error body quoting its Authorization header."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                auth = self.headers.get("authorization")
                msg = f"invalid key in header Authorization: {auth}; raw key={KEY}"
                data = json.dumps({"error": {"message": msg}}).encode()
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", _free_port()), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        host, port = self.httpd.server_address[:2]
        self.base_url = f"http://{host}:{port}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def echoing_server() -> Iterator[EchoingAuthServer]:
    srv = EchoingAuthServer()
    yield srv
    srv.close()


# ------------------------------------------------------------------------- preferences


def test_outage_fallbacks_are_marked_and_asked_again(endpoint, tiny_data_dir, tmp_path):
    ds = load_dataset(tiny_data_dir)
    store = tmp_path / "prefs.sqlite"
    down = PreferenceExtractor(client_for(dead_url()), store=store)
    prefs = down.extract_dataset(ds, progress=False)
    assert all(p.source == "fallback" and p.outage for p in prefs.values())
    assert down.last_report.llm_failed and down.last_report.outage == 12
    assert "connection failed" in down.last_report.first_outage

    client = client_for(endpoint.base_url)  # the endpoint is back
    ex = PreferenceExtractor(client, store=store)
    prefs = ex.extract_dataset(ds, progress=False)
    assert (ex.last_report.asked, ex.last_report.reused, ex.last_report.outage) == (12, 0, 0)
    assert all(p.source == "llm" and not p.outage for p in prefs.values())
    assert not ex.last_report.llm_failed

    again = PreferenceExtractor(client, store=store)
    again.extract_dataset(ds, progress=False)
    assert (again.last_report.asked, again.last_report.reused) == (0, 12)


def test_schema_fallbacks_are_kept_unless_retry_failed(
    endpoint, tiny_data_dir, tmp_path, schema_failures
):
    ds = load_dataset(tiny_data_dir)
    store = tmp_path / "prefs.sqlite"
    cache = str(tmp_path / "cache.sqlite")
    ex = PreferenceExtractor(
        client_for(endpoint.base_url, cache=True, cache_path=cache), store=store
    )
    prefs = ex.extract_dataset(ds, progress=False)
    fallback = {p.user for p in prefs.values() if p.source == "fallback"}
    assert 0 < len(fallback) < 12 and not any(p.outage for p in prefs.values())
    assert ex.last_report.outage == 0 and not ex.last_report.llm_failed

    schema_failures()  # the model would answer now, but nothing asks it
    n = len(endpoint.log)
    ex = PreferenceExtractor(
        client_for(endpoint.base_url, cache=True, cache_path=cache), store=store
    )
    ex.extract_dataset(ds, progress=False)
    assert ex.last_report.reused == 12 and len(endpoint.log) == n

    retry = client_for(endpoint.base_url, cache=True, cache_path=cache, retry_failed=True)
    ex = PreferenceExtractor(retry, store=store)
    prefs = ex.extract_dataset(ds, progress=False)
    assert ex.last_report.asked == len(fallback) and len(endpoint.log) == n + len(fallback)
    assert all(p.source == "llm" for p in prefs.values())


def test_echoed_credentials_never_reach_the_store(
    echoing_server, tiny_data_dir, tmp_path, monkeypatch
):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    ds = load_dataset(tiny_data_dir)
    store = tmp_path / "prefs.sqlite"
    ex = PreferenceExtractor(client_for(echoing_server.base_url), store=store)
    ex.extract_dataset(ds, [0, 1], progress=False)
    assert ex.last_report.llm_failed
    records = PreferenceStore(store).all()
    dump = json.dumps({u: r.problems for u, r in records.items()})
    assert "HTTP 401" in dump and "[redacted]" in dump
    assert KEY not in dump and "Bearer" not in dump
    assert KEY not in store.read_bytes().decode("utf-8", "replace")

    out = tmp_path / "out"  # a batch job's failure records
    client = client_for(echoing_server.base_url)
    report = run_batch(
        PreferenceJob(tiny_data_dir, client=client), out, client=client, options=opts()
    )
    assert report.failed == 12
    fails = read_output(out, failures=True)
    assert all("HTTP 401" in r and KEY not in r for r in fails["reason"])
    for path in out.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def test_preferences_command_exits_nonzero_when_every_user_hit_an_outage(tiny_data_dir, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHYREC_LLM_")}
    env.update(
        WHYREC_LLM_BACKEND="openai",
        WHYREC_LLM_MODEL="stub-1",
        WHYREC_LLM_BASE_URL=dead_url(),
        WHYREC_LLM_MAX_RETRIES="0",
        WHYREC_LLM_CACHE="false",
    )
    out = tmp_path / "prefs.jsonl"
    cmd = [
        sys.executable, "-m", "whyrec", "preferences", str(tiny_data_dir),
        "--store", str(tmp_path / "store.sqlite"), "--out", str(out), "--show", "0",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "LLM stage failed for all 12 user(s)" in proc.stderr
    assert "Traceback" not in proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]  # still written
    assert len(rows) == 12 and all(r["outage"] and r["source"] == "fallback" for r in rows)


# ------------------------------------------------------------------------------- batch


def test_retry_failed_redoes_schema_fallback_rows(
    endpoint, tiny_data_dir, tmp_path, schema_failures
):
    cache = str(tmp_path / "cache.sqlite")
    client = client_for(endpoint.base_url, cache=True, cache_path=cache)
    job = PreferenceJob(tiny_data_dir, client=client)
    out = tmp_path / "out"
    first = run_batch(job, out, client=client, options=opts())
    df = read_output(out)
    n_fb = int((df["status"] == "fallback").sum())
    assert first.status == "complete" and first.failed == 0 and 0 < first.fallback == n_fb < 12
    assert any("--retry-failed" in note for note in first.notes)

    schema_failures()
    endpoint.log.clear()
    plain = run_batch(job, out, client=client, options=opts())
    assert plain.computed_now == 0 and endpoint.log == []

    # the negative cache answers the same requests in a new directory without asking
    other = run_batch(job, tmp_path / "other", client=client, options=opts())
    assert other.fallback == n_fb and endpoint.log == []

    retry = run_batch(job, out, client=client, options=opts(retry_failed=True))
    assert retry.computed_now == n_fb and len(endpoint.log) == n_fb  # really asked again
    assert retry.status == "complete" and retry.fallback == 0 and retry.done == 12
    df = read_output(out)
    assert len(df) == 12 and df["key"].is_unique and set(df["status"]) == {"ok"}
    assert read_manifest(out)["counts"]["fallback"] == 0

    # the superseded fallback rows stay on disk; reopening accepts them, the latest wins
    again = run_batch(job, out, client=client, options=opts(retry_failed=True))
    assert again.computed_now == 0 and again.done == 12


def test_status_reports_a_stale_lock_after_sigkill_and_the_next_run_takes_over(
    endpoint, tiny_data_dir, tmp_path
):
    from typer.testing import CliRunner

    from whyrec.cli import app

    endpoint.delay = 0.15
    out = tmp_path / "out"
    env = {**os.environ, **endpoint.env()}
    cmd = [
        sys.executable, "-m", "whyrec", "batch", "preferences", str(tiny_data_dir),
        "--out", str(out), "--shard-size", "2", "--no-progress",
    ]  # fmt: skip
    proc = start(cmd, env)
    wait_for(lambda: len(keys_on_disk(out)) >= 2, proc)
    assert (out / ".lock").read_text().startswith(f"pid {proc.pid} ")
    res = CliRunner().invoke(app, ["batch", "status", str(out)])
    assert json.loads(res.stdout[: res.stdout.rindex("}") + 1])["status"] == "running"
    kill(proc, endpoint)

    assert read_manifest(out)["status"] == "running"  # what the dead job left behind
    res = CliRunner().invoke(app, ["batch", "status", str(out)])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout[: res.stdout.rindex("}") + 1])
    assert summary["status"] == f"interrupted (stale lock from PID {proc.pid})"

    endpoint.delay = 0.0
    client = client_for(endpoint.base_url)
    report = run_batch(
        PreferenceJob(tiny_data_dir, client=client), out, client=client, options=opts()
    )
    assert report.status == "complete" and report.done == 12
    assert any(f"stale lock from PID {proc.pid}" in note for note in report.notes)
    manifest = read_manifest(out)
    assert manifest["runs"][0]["interrupted"] is True and manifest["status"] == "complete"
    assert (out / ".lock").read_text() == ""  # a clean exit names no holder
    res = CliRunner().invoke(app, ["batch", "status", str(out)])
    assert json.loads(res.stdout[: res.stdout.rindex("}") + 1])["status"] == "complete"
