"""Fixtures for batch jobs: a tiny dataset on disk, a tiny trained LANE model, and a
deterministic OpenAI-compatible HTTP endpoint.

The endpoint is a real HTTP server that the real ``openai``-backend client talks to;
its replies are a pure function of the prompt (so reruns and backends can be compared
exactly), it can be slowed down (so a job can be killed mid-run) and made to fail
(so failures and ``--retry-failed`` can be exercised). The real embedded model is used
by the slow tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from whyrec.data import RawData, build_dataset

GENRES = [
    "mystery plots",
    "broad comedy",
    "old westerns",
    "stage musicals",
    "nature documentaries",
    "period romance",
    "tense thrillers",
    "hand drawn animation",
    "space adventures",
    "war epics",
]


@pytest.fixture(autouse=True)
def _clean_llm_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own WHYREC_LLM_* settings must not leak into tests."""
    for name in list(os.environ):
        if name.startswith("WHYREC_LLM_") or name == "RAY_ADDRESS":
            monkeypatch.delenv(name)


def tiny_raw(n_users: int = 12, seed: int = 0) -> RawData:
    """Three taste groups of ten items; users watch within their group."""
    rng = np.random.default_rng(seed)
    genres = ["Crime|Drama", "Animation|Children's", "Sci-Fi|Action"]
    rows = []
    for u in range(n_users):
        g = u % 3
        for t, k in enumerate(rng.permutation(10)[:8]):
            rows.append((f"u{u}", f"i{g * 10 + k}", t))
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    items = pd.DataFrame(
        {
            "item_id": [f"i{k}" for k in range(30)],
            "title": [f"Film {k} ({1990 + k})" for k in range(30)],
            "genres": [genres[k // 10] for k in range(30)],
        }
    )
    return RawData(inter, items)


@pytest.fixture
def tiny_data_dir(tmp_path: Path) -> Path:
    """A prepared dataset directory (12 users, 30 titled items)."""
    ds = build_dataset(tiny_raw(), name="tiny")
    return ds.save(tmp_path / "tiny-data")


@pytest.fixture
def tiny_lane_run(tmp_path: Path) -> Path:
    """A small LANE model trained on the tiny data with grounded preferences, saved."""
    from whyrec.explain.fallback import fallback_preferences
    from whyrec.models.lane import Lane

    ds = build_dataset(tiny_raw(), name="tiny")
    seqs = ds.user_sequences(("train",))
    texts = []
    for u in range(ds.n_users):
        titles = [ds.titles[i] for i in seqs[u]]
        fields = [str(ds.items["genres"].iloc[i]) for i in seqs[u]]
        texts.append(fallback_preferences(titles, fields, 3, None))
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(ds.n_users, 3, 8)).astype(np.float32)
    model = Lane(dim=16, max_len=10, epochs=2, item_table="id", seed=0)
    model.set_preferences(vectors, texts, ["fallback"] * ds.n_users)
    model.fit(ds, progress=False)
    out = tmp_path / "lane-run"
    model.save(out)
    return out


# --------------------------------------------------------------------------- endpoint


_WORDS = ["calm", "bright", "quiet", "bold", "warm", "sharp", "gentle", "vivid", "dry", "rich"]


def synthesize(schema: dict[str, Any], digest: bytes, defs: dict[str, Any], n: int = 0) -> Any:
    """A value valid for a JSON schema, derived from ``digest`` (deterministic)."""
    if "$ref" in schema:
        return synthesize(defs[schema["$ref"].rsplit("/", 1)[-1]], digest, defs, n)
    if "enum" in schema:
        return schema["enum"][(digest[n % 32] + n) % len(schema["enum"])]
    if "const" in schema:
        return schema["const"]
    if "anyOf" in schema:
        return synthesize(schema["anyOf"][0], digest, defs, n)
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        return {k: synthesize(v, digest, defs, n + i) for i, (k, v) in enumerate(props.items())}
    if kind == "array":
        count = schema.get("minItems", 1)
        return [synthesize(schema.get("items", {}), digest, defs, n + 7 * i) for i in range(count)]
    if kind == "integer":
        lo, hi = schema.get("minimum", 0), schema.get("maximum", 10)
        return lo + digest[n % 32] % (hi - lo + 1)
    if kind == "number":
        lo, hi = schema.get("minimum", 0.0), schema.get("maximum", 1.0)
        return round(lo + (hi - lo) * (digest[n % 32] / 255), 2)
    if kind == "boolean":
        return bool(digest[n % 32] % 2)
    word = _WORDS[digest[n % 32] % len(_WORDS)]
    text = f"A {word} choice that fits what this viewer keeps returning to, case {n}."
    text = text[: schema.get("maxLength", 400)]
    return text.ljust(schema.get("minLength", 0), ".")


def reply_for(body: dict[str, Any]) -> str:
    """The deterministic reply to a chat request: preferences, or any requested schema."""
    msgs = body.get("messages", [])
    user = "\n".join(m["content"] for m in msgs if m["role"] == "user")
    digest = hashlib.sha256(user.encode("utf-8")).digest()
    fmt = body.get("response_format") or {}
    schema = (fmt.get("json_schema") or {}).get("schema") or fmt.get("schema")
    if schema and "preferences" not in schema.get("properties", {}):
        value = synthesize(schema, digest, schema.get("$defs", {}))
        item = re.search(r'<data name="item">\n(.*)\n</data>', user)
        if isinstance(value, dict) and "explanation" in value and item:
            # a reason names its evidence (the explainer shows the template otherwise)
            word = _WORDS[digest[0] % len(_WORDS)]
            value["explanation"] = f"{json.loads(item.group(1))} is a {word} choice for you."
            infl = re.search(r'<data name="influential">\n(.*)\n</data>', user)
            if infl:  # the verifier keeps sentences that name the cited evidence
                first = json.loads(infl.group(1))[0]
                value["explanation"] = f"You watched {first}, which raised its score the most."
        return json.dumps(value)
    order = sorted(range(len(GENRES)), key=lambda j: digest[j])
    return json.dumps({"preferences": [f"Likes {GENRES[j]} told with care" for j in order[:5]]})


def request_user(body: dict[str, Any]) -> str:
    """Identifies whose request this is: a hash of the user message."""
    user = "\n".join(m["content"] for m in body.get("messages", []) if m["role"] == "user")
    return hashlib.sha256(user.encode("utf-8")).hexdigest()[:16]


class StubEndpoint:
    """An OpenAI-compatible chat endpoint on 127.0.0.1 with deterministic replies.

    ``delay`` slows every request; while ``fail`` is a callable returning True for a
    request body, that request gets HTTP 500. ``log`` records (request id, status).
    """

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.fail: Any = None
        self.log: list[tuple[str, int]] = []
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.times: list[float] = []  # arrival time of every request
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client was killed mid-request (the kill tests do that)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                with outer.lock:
                    outer.times.append(time.monotonic())
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                if outer.delay:
                    time.sleep(outer.delay)
                failing = outer.fail is not None and outer.fail(body)
                with outer.lock:
                    outer.in_flight -= 1
                    outer.log.append((request_user(body), 500 if failing else 200))
                if failing:
                    self._send(500, {"error": {"message": "scripted outage", "type": "test"}})
                    return
                content = reply_for(body)
                self._send(
                    200,
                    {
                        "id": "stub",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body.get("model", "stub"),
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": content},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
                    },
                )

        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def env(self) -> dict[str, str]:
        """WHYREC_LLM_* variables that point a whyrec process at this endpoint."""
        return {
            "WHYREC_LLM_BACKEND": "openai",
            "WHYREC_LLM_MODEL": "stub-1",
            "WHYREC_LLM_BASE_URL": self.base_url,
            "WHYREC_LLM_MAX_RETRIES": "0",
            "WHYREC_LLM_CACHE": "false",
            "WHYREC_LLM_CONCURRENCY": "1",
        }

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def endpoint() -> Iterator[StubEndpoint]:
    ep = StubEndpoint()
    yield ep
    ep.close()
