"""LLM faults against a real local HTTP endpoint: bodies that lie about being JSON, error
bodies that echo the request's credentials, and what ``whyrec llm chat`` prints for them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from whyrec.llm import LLMClient, LLMRequestError, LLMUnavailableError
from whyrec.safety import redact_secrets

from .conftest import completion_body, free_port

KEY = "whyrec-test-key-0123456789abcdef"  # not shaped like any known key format


class RawServer:
    """Answers each POST with the next scripted ``(status, content_type, body)``; a body
    may be a callable of the request headers (to echo them, as some proxies do)."""

    def __init__(self, script: list[tuple[int, str, Any]], default: Any = None) -> None:
        self.script = list(script)
        self.default = default or (200, "application/json", json.dumps(completion_body("fine")))
        self.headers: list[dict[str, str]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with outer.lock:
                    outer.headers.append({k.lower(): v for k, v in self.headers.items()})
                    status, ctype, body = outer.script.pop(0) if outer.script else outer.default
                if callable(body):
                    body = body(dict(self.headers))
                data = body.encode() if isinstance(body, str) else body
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
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
def raw_server() -> Iterator[Any]:
    made: list[RawServer] = []

    def make(script, default=None) -> RawServer:
        made.append(RawServer(script, default))
        return made[-1]

    yield make
    for srv in made:
        srv.close()


NOT_JSON = (200, "application/json", "<html><body>502 from the proxy</body></html>")


def echo_auth(status: int) -> tuple[int, str, Any]:
    """An error body quoting the request's Authorization header back."""

    def body(headers: dict[str, str]) -> str:
        auth = {k.lower(): v for k, v in headers.items()}.get("authorization")
        msg = f"rejected request with Authorization: {auth} (key {KEY[:-1]}{KEY[-1]})"
        return json.dumps({"error": {"message": msg, "type": "auth"}})

    return (status, "application/json", body)


def client_for(server, fast_settings, **kw) -> LLMClient:
    return LLMClient(fast_settings(backend="openai", model="stub", base_url=server.base_url, **kw))


def test_json_content_type_with_a_non_json_body_is_retried(raw_server, fast_settings):
    server = raw_server([NOT_JSON, NOT_JSON])
    res = client_for(server, fast_settings, max_retries=3).complete("hello")
    assert res.text == "fine" and res.attempts == 3 and len(server.headers) == 3


def test_json_content_type_with_a_non_json_body_ends_in_a_typed_error(raw_server, fast_settings):
    server = raw_server([NOT_JSON] * 5)
    client = client_for(server, fast_settings, max_retries=2)
    with pytest.raises(LLMUnavailableError, match=r"after 3 attempt.*body is not JSON"):
        client.complete("hello")
    assert len(server.headers) == 3


def test_error_bodies_echoing_the_key_are_redacted(raw_server, fast_settings, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    server = raw_server([echo_auth(401), echo_auth(500), echo_auth(500)])
    client = client_for(server, fast_settings, max_retries=1)
    with pytest.raises(LLMRequestError) as refused:
        client.complete("hello")
    assert server.headers[0]["authorization"] == f"Bearer {KEY}"  # the key was sent...
    text = str(refused.value)
    assert KEY not in text and "Bearer" not in text and "[redacted]" in text  # ...not shown
    assert "HTTP 401" in text and "OPENAI_API_KEY" in text
    with pytest.raises(LLMUnavailableError) as down:
        client.complete("hello again")
    assert KEY not in str(down.value) and KEY not in str(down.value.last_error)
    assert "HTTP 500" in str(down.value)


def test_redact_secrets_rule():
    text = (
        "401: {'authorization': 'Bearer abc.def-123', 'x-api-key': 'k9k9k9k9'} "
        "token sk-proj-ABCDEFGHIJKLMNOPQRSTU and my-own-secret-value"
    )
    out = redact_secrets(text, ["my-own-secret-value", "short"])
    for leaked in ("abc.def-123", "k9k9k9k9", "sk-proj-ABCDEFGHIJKLMNOPQRSTU", "my-own-secret"):
        assert leaked not in out
    assert out.count("[redacted]") == 4 and out.startswith("401: {'authorization': '")
    assert redact_secrets("a short word stays", ["short"]) == "a short word stays"
    assert redact_secrets("no secrets here: HTTP 500") == "no secrets here: HTTP 500"


def run_chat(server, *extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHYREC_LLM_")}
    env.update(
        WHYREC_LLM_BACKEND="openai",
        WHYREC_LLM_MODEL="stub",
        WHYREC_LLM_BASE_URL=server.base_url,
        WHYREC_LLM_MAX_RETRIES="1",
        WHYREC_LLM_BACKOFF_BASE="0",
        WHYREC_LLM_CACHE="false",
        OPENAI_API_KEY=KEY,
    )
    return subprocess.run(
        [sys.executable, "-m", "whyrec", "llm", "chat", "hello", *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_chat_prints_one_clear_line_for_a_non_json_body(raw_server):
    server = raw_server([NOT_JSON] * 4)
    proc = run_chat(server)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "LLMUnavailableError" in lines[0] and "not JSON" in lines[0]
    assert len(server.headers) == 2  # retried once, as configured


def test_chat_never_prints_an_echoed_key(raw_server):
    server = raw_server([echo_auth(403)])
    proc = run_chat(server)
    assert proc.returncode != 0 and "HTTP 403" in proc.stderr
    assert KEY not in proc.stderr + proc.stdout and "Traceback" not in proc.stderr
