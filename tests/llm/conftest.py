"""Fixtures for the LLM layer: a scripted fake backend, a scripted HTTP server, the
packaged SmolLM2 model loaded once, and llama-cpp-python's own OpenAI-compatible server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from whyrec.llm.backends.base import Decoding, RawReply
from whyrec.llm.errors import LLMTransientError
from whyrec.llm.settings import LLMSettings


@pytest.fixture(autouse=True)
def _clean_llm_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own WHYREC_LLM_* settings must not leak into tests."""
    for name in list(os.environ):
        if name.startswith("WHYREC_LLM_"):
            monkeypatch.delenv(name)


# --------------------------------------------------------------------------- fake backend


class FakeBackend:
    """Answers from a script of replies (strings, RawReply objects, callables of the
    messages) or errors (exceptions), recording every call.

    Only for unit tests of the client's own logic (parsing, re-asks, retries, batching).
    """

    name = "fake"
    # a stand-in for an API endpoint: remote, priced (an unknown model has no price)
    is_local = False
    costs_money = True
    max_concurrency = None

    def __init__(self, script: list[str | Exception] | None = None, default: str = "ok") -> None:
        self.model = "fake-1"
        self.script = list(script or [])
        self.default = default
        self.calls: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.hold: threading.Event | None = None
        self.closed = False

    def generate(self, messages, decoding: Decoding) -> RawReply:
        with self.lock:
            self.calls.append(
                {
                    "messages": messages,
                    "schema": decoding.schema,
                    "max_tokens": decoding.max_tokens,
                    "seed": decoding.seed,
                }
            )
            item = self.script.pop(0) if self.script else self.default
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.hold is not None:
                self.hold.wait(5)
            if callable(item) and not isinstance(item, Exception):
                item = item(messages)
            if isinstance(item, Exception):
                raise item
            if isinstance(item, RawReply):
                return item
            return RawReply(
                item, prompt_tokens=10, completion_tokens=5, finish_reason="stop", model=self.model
            )
        finally:
            with self.lock:
                self.in_flight -= 1

    def identity(self) -> dict[str, Any]:
        return {"fake": True}

    def describe(self) -> dict[str, Any]:
        return {"script_left": len(self.script)}

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_backend() -> Callable[..., FakeBackend]:
    return FakeBackend


@pytest.fixture
def transient() -> Callable[[str], LLMTransientError]:
    return lambda msg="HTTP 503": LLMTransientError(msg, status=503)


@pytest.fixture
def fast_settings() -> Callable[..., LLMSettings]:
    """Settings with tiny backoff so retry tests do not wait."""

    def make(**kw: Any) -> LLMSettings:
        base = {"backoff_base": 0.001, "backoff_max": 0.01, "cache": False}
        return LLMSettings.load(**{**base, **kw})

    return make


# --------------------------------------------------------------------------- scripted server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def completion_body(content: str, model: str = "stub") -> dict[str, Any]:
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    }


class ScriptedServer:
    """An OpenAI-like endpoint on 127.0.0.1 that misbehaves on purpose.

    ``script`` lists what to do for each request in turn: an HTTP status (429, 500, ...),
    ``"garbage"`` (200 with a non-JSON body), ``"nochoices"`` (200, JSON without
    choices), ``"slow"`` (sleep past the client timeout), or ``"ok"``. When the script
    is used up, every request gets ``reply(request_body)``. It serves at most
    ``max_requests`` requests, then stops.
    """

    def __init__(
        self,
        script: list[Any],
        reply: Callable[[dict[str, Any]], str] | str = "hello",
        *,
        slow_s: float = 1.0,
        max_requests: int = 50,
    ) -> None:
        self.script = list(script)
        self.reply = reply if callable(reply) else (lambda _body, r=reply: r)
        self.slow_s = slow_s
        self.max_requests = max_requests
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _send(self, status: int, body: bytes, ctype: str, headers=None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with outer.lock:
                    outer.requests.append(body)
                    action = outer.script.pop(0) if outer.script else "ok"
                if action == "slow":
                    time.sleep(outer.slow_s)
                    action = "ok"
                if isinstance(action, int):
                    err = {"error": {"message": f"scripted {action}", "type": "test"}}
                    headers = {"Retry-After": "0"} if action == 429 else None
                    self._send(action, json.dumps(err).encode(), "application/json", headers)
                elif action == "garbage":
                    self._send(200, b"<html>definitely not json", "text/html")
                elif action == "nochoices":
                    self._send(200, b'{"id": "x", "object": "chat.completion"}', "application/json")
                else:
                    out = completion_body(outer.reply(body), model=body.get("model", "stub"))
                    self._send(200, json.dumps(out).encode(), "application/json")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.httpd.daemon_threads = True
        self.httpd.timeout = 0.1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def _loop(self) -> None:
        # Bounded: stops when told to, or once max_requests requests have arrived.
        while not self._stop.is_set() and len(self.requests) < self.max_requests:
            self.httpd.handle_request()

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.httpd.server_close()


@pytest.fixture
def scripted_server() -> Iterator[Callable[..., ScriptedServer]]:
    started: list[ScriptedServer] = []

    def make(script: list[Any], reply: Any = "hello", **kw: Any) -> ScriptedServer:
        srv = ScriptedServer(script, reply, **kw).__enter__()
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.__exit__(None, None, None)


# --------------------------------------------------------------------------- real model


@pytest.fixture(scope="session")
def smollm_path():
    from whyrec.llm.backends.local import packaged_model_path

    return packaged_model_path()


@pytest.fixture(scope="session")
def local_backend(smollm_path):
    """One loaded SmolLM2 shared by every slow test (loading it again costs seconds).

    Clients built on it must not be closed by tests; the session closes it at the end.
    """
    from whyrec.llm.backends.local import LocalBackend

    backend = LocalBackend(LLMSettings(backend="local", n_ctx=2048, cache=False))
    assert backend.llama is not None  # load now, once
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def llama_server(smollm_path, tmp_path_factory) -> Iterator[str]:
    """llama-cpp-python's OpenAI-compatible server on 127.0.0.1, with the packaged model.

    Readiness is polled for at most 120 s; the process is terminated (then killed) after.
    """
    port = free_port()
    cmd = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(smollm_path), "--model_alias", "smollm2",
        "--host", "127.0.0.1", "--port", str(port),
        "--n_threads", "2", "--n_ctx", "2048",
    ]  # fmt: skip
    log_path = tmp_path_factory.mktemp("llama_server") / "server.log"
    log = log_path.open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                tail = log_path.read_text()[-2000:]
                raise RuntimeError(f"llama_cpp.server exited early: {tail}")
            try:
                if httpx.get(f"{base}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("llama_cpp.server not ready after 120 s")
            time.sleep(0.25)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()
