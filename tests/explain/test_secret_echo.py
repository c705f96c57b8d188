"""No byte of an API key in any file or output of a run against an endpoint that echoes it.

A real OpenAI-compatible HTTP server on 127.0.0.1 answers every chat completion with the
caller's own ``Authorization`` header and key: in the reply text, in the JSON of a
structured reply (as a value and as a key), and in the reply's ``model`` field. Then
``whyrec llm chat`` (a successful reply, printed and cached), ``whyrec explain`` (replies
that never validate: a remembered failure with its raw JSON) and ``whyrec preferences``
(the preference store and its ``--out`` file) run in their own processes with
``$WHYREC_HOME`` and ``$TMPDIR`` inside the test's directory, and every file under it,
SQLite files and their WAL included, and every stdout/stderr, is searched for the key.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from whyrec.models.lane import Lane

from .conftest import GOOD

KEY = "whyrec-echo-key-5f0c2d9e4a7b1c3d"  # not shaped like a known key format
OWN_KEY = "whyrec-own-variable-key-77aa88bb99cc"


class EchoEndpoint:
    """``POST /v1/chat/completions`` answering with the caller's key in every field."""

    def __init__(self) -> None:
        self.auth: list[str] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                auth = self.headers.get("Authorization", "")
                key = auth.removeprefix("Bearer ")
                with outer.lock:
                    outer.auth.append(auth)
                wants_json = "response_format" in body or any(
                    "json" in str(m.get("content", "")).lower() for m in body["messages"]
                )
                if wants_json:  # parses, never matches a schema: remembered as a failure
                    content = json.dumps(
                        {"echo": f"called with {auth}", key: key, "note": [f"key={key}"]}
                    )
                else:
                    content = f"Hello! Your request carried '{auth}', so your key is {key}."
                reply = {
                    "id": "chatcmpl-echo",
                    "object": "chat.completion",
                    "created": 0,
                    "model": f"echo-{key}",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": content},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 7, "completion_tokens": 9, "total_tokens": 16},
                }
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def echo() -> Iterator[EchoEndpoint]:
    server = EchoEndpoint()
    yield server
    server.close()


def _env(tmp_path: Path, server: EchoEndpoint, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("WHYREC_LLM_", "WHYREC_HOME", "OPENAI_"))
    }
    (tmp_path / "tmp").mkdir(exist_ok=True)
    env.update(
        WHYREC_HOME=str(tmp_path / "home"),
        TMPDIR=str(tmp_path / "tmp"),
        WHYREC_LLM_BACKEND="openai",
        WHYREC_LLM_MODEL="echo",
        WHYREC_LLM_BASE_URL=server.base_url,
        WHYREC_LLM_MAX_RETRIES="0",
        WHYREC_LLM_MAX_REASKS="1",
        WHYREC_LLM_BACKOFF_BASE="0",
        PYTHONPATH=os.pathsep.join(sys.path),
        **extra,
    )
    return env


def _whyrec(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "whyrec", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _files_holding(root: Path, secret: str) -> list[str]:
    needle = secret.encode()
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and needle in p.read_bytes()
    )


def _cache_rows(home: Path) -> list[dict[str, Any]]:
    path = home / "llm" / "cache.sqlite"
    with sqlite3.connect(path) as conn:
        return [json.loads(row[0]) for row in conn.execute("SELECT payload FROM replies")]


@pytest.mark.slow  # three whyrec processes, one loading the sentence encoder
def test_an_echoed_key_reaches_no_file_and_no_output(echo, tiny_dataset, tmp_path):
    tiny_dataset.save(tmp_path / "data")
    from whyrec.data import load_dataset

    ds = load_dataset(tmp_path / "data")
    prefs = np.random.default_rng(0).normal(size=(ds.n_users, 5, 12)).astype(np.float32)
    lane = Lane(dim=16, max_len=10, epochs=1, item_table="id", seed=0)
    lane.set_preferences(prefs, [GOOD] * ds.n_users, ["llm"] * ds.n_users)
    run = lane.fit(ds, progress=False).save(tmp_path / "run")

    env = _env(tmp_path, echo, OPENAI_API_KEY=KEY)
    outputs: list[str] = []
    chat = _whyrec(env, "llm", "chat", "say hello")
    outputs += [chat.stdout, chat.stderr]
    assert chat.returncode == 0, chat.stderr
    assert "your key is [redacted]" in chat.stdout  # the reply is printed, the key is not
    explain = _whyrec(env, "explain", str(run), "-u", "u0", "-k", "1", "--format", "json")
    outputs += [explain.stdout, explain.stderr]
    assert explain.returncode == 0, explain.stderr
    [record] = json.loads(explain.stdout)
    assert record["reason_source"] == "template"  # the echoed JSON never validated
    prefs_out = tmp_path / "out" / "prefs.jsonl"
    pref = _whyrec(
        env, "preferences", str(tmp_path / "data"), "--llm-users", "2", "--out", str(prefs_out)
    )
    outputs += [pref.stdout, pref.stderr]
    assert pref.returncode == 0, pref.stderr
    assert prefs_out.is_file()

    # the key really went out with every request, and was echoed back
    assert echo.auth and set(echo.auth) == {f"Bearer {KEY}"}
    # the stores were written: a cached success and a remembered failure, both redacted
    rows = _cache_rows(tmp_path / "home")
    assert any(not r.get("failed") and "[redacted]" in r["text"] for r in rows)
    failed = [r for r in rows if r.get("failed")]
    assert failed and all(r["raw"] is not None for r in failed)
    assert "[redacted]" in json.dumps(failed[0]["raw"])
    assert list((tmp_path / "home").rglob("*.sqlite")), "no preference store was written"
    # ... and the key is in no file of the run and no output
    assert _files_holding(tmp_path, KEY) == []
    assert [i for i, text in enumerate(outputs) if KEY in text] == []


def test_whyrecs_own_key_variable_is_honoured_and_redacted(echo, tmp_path):
    env = _env(tmp_path, echo, WHYREC_LLM_API_KEY=OWN_KEY, WHYREC_LLM_CACHE="true")
    info = _whyrec(env, "llm", "info")
    assert info.returncode == 0, info.stderr
    rows = dict(line.split(None, 1) for line in info.stdout.splitlines() if line.strip())
    assert rows["api_key_set"].strip() == "True"
    assert rows["api_key_from"].strip() == "WHYREC_LLM_API_KEY"
    chat = _whyrec(env, "llm", "chat", "hello")
    assert chat.returncode == 0, chat.stderr
    assert echo.auth == [f"Bearer {OWN_KEY}"]  # the key from whyrec's own variable was used
    assert OWN_KEY not in chat.stdout + chat.stderr + info.stdout + info.stderr
    assert _files_holding(tmp_path, OWN_KEY) == []
