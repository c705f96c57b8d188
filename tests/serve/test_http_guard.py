"""The HTTP boundary (issue 21): malformed bodies are 4xx (never 500, never a reset),
bodies are size-limited, error replies never echo large inputs, /health hides paths.

Everything runs against a real uvicorn server on 127.0.0.1 with the real app, so what
is checked is what a client receives on the wire (encoding failures included).
"""

from __future__ import annotations

import json

import httpx
import pytest

JSON_TYPE = {"Content-Type": "application/json"}
#: Largest error reply accepted for any malformed body (the inputs go up to 900 KB).
MAX_REPLY = 8_000


def _deep(n: int) -> bytes:
    return b'{"item_ids": ' + b"[" * n + b"]" * n + b"}"


# (name, body bytes, headers)
MALFORMED: list[tuple[str, bytes, dict[str, str]]] = [
    ("nan", b'{"item_ids": ["i1"], "user": "u1", "wait_s": NaN}', JSON_TYPE),
    ("infinity", b'{"item_ids": ["i1"], "user": "u1", "wait_s": Infinity}', JSON_TYPE),
    ("minus-infinity", b'{"item_ids": ["i1"], "wait_s": -Infinity}', JSON_TYPE),
    ("1e400", b'{"item_ids": ["i1"], "user": "u1", "wait_s": 1e400}', JSON_TYPE),
    ("-1e400", b'{"item_ids": ["i1"], "wait_s": -1e400}', JSON_TYPE),
    ("nan-in-list", b'{"item_ids": [NaN], "user": "u1"}', JSON_TYPE),
    ("nan-alone", b"NaN", JSON_TYPE),
    ("huge-int", b'{"item_ids": ["i1"], "k": 1' + b"0" * 5000 + b"}", JSON_TYPE),
    ("deep-array-100k", _deep(100_000), JSON_TYPE),
    ("deep-array-500", _deep(500), JSON_TYPE),
    ("wrong-type-string", b'{"item_ids": "i1", "user": "u1"}', JSON_TYPE),
    ("wrong-type-ints", b'{"item_ids": [1, 2], "user": "u1"}', JSON_TYPE),
    ("wrong-type-object", b'{"item_ids": {"a": 1}, "user": "u1"}', JSON_TYPE),
    ("wrong-type-k", b'{"item_ids": ["i1"], "k": "ten"}', JSON_TYPE),
    ("wrong-type-user", b'{"item_ids": ["i1"], "user": 5}', JSON_TYPE),
    ("top-level-array", b"[]", JSON_TYPE),
    ("top-level-string", b'"hello"', JSON_TYPE),
    ("top-level-null", b"null", JSON_TYPE),
    ("both-histories", b'{"item_ids": ["i1"], "titles": ["Film 1"], "user": "u1"}', JSON_TYPE),
    ("huge-string", b'{"titles": ["' + b"x" * 900_000 + b'"], "user": "u1"}', JSON_TYPE),
    ("huge-extra-field", b'{"item_ids": ["i1"], "zzz": "' + b"y" * 500_000 + b'"}', JSON_TYPE),
    ("huge-list", json.dumps({"item_ids": ["i1"] * 20_000}).encode(), JSON_TYPE),
    ("invalid-utf8", b'{"titles": ["\xff\xfe\xfd"], "user": "u1"}', JSON_TYPE),
    ("invalid-utf8-text-plain", b'{"titles": ["\xff"]}', {"Content-Type": "text/plain"}),
    ("surrogate-raw", b'{"titles": ["\xed\xa0\x80"], "user": "u1"}', JSON_TYPE),
    ("surrogate-escape", b'{"titles": ["\\ud800"], "user": "u1", "item_id": "i1"}', JSON_TYPE),
    ("surrogate-user", b'{"user": "\\udfff", "item_ids": ["i1"], "item_id": "i1"}', JSON_TYPE),
    ("nul-in-user", b'{"user": "a\\u0000b", "item_ids": ["i1"]}', JSON_TYPE),
    ("bom", b'\xef\xbb\xbf{"item_ids": ["i1"]}', JSON_TYPE),
    ("truncated", b'{"item_ids": [', JSON_TYPE),
    ("not-json", b"item_ids=i1", JSON_TYPE),
    ("empty-json", b"", JSON_TYPE),
    ("empty-no-type", b"", {}),
    ("text-plain", b'{"item_ids": ["i1"]}', {"Content-Type": "text/plain"}),
    ("form", b"item_ids=i1&user=u1", {"Content-Type": "application/x-www-form-urlencoded"}),
    ("multipart", b"--x\r\n\r\n--x--", {"Content-Type": "multipart/form-data; boundary=x"}),
]


@pytest.fixture(scope="module")
def server(runs, tmp_path_factory):
    """One real server (LANE run, LLM off) for the whole module."""
    from whyrec.serve import ServeSettings, create_app

    from .conftest import LiveServer

    store = tmp_path_factory.mktemp("guard") / "serve.sqlite"
    app = create_app(ServeSettings(run=runs["lane"], store=store, llm=False, access_log=False))
    with LiveServer(app) as srv:
        srv.app = app
        yield srv


def _post_routes(app) -> list[str]:
    return sorted(
        r.path for r in app.routes if "POST" in (getattr(r, "methods", None) or ()) and r.path
    )


def _raw_post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    """POST exactly these bytes with these headers (httpx adds Content-Length)."""
    with httpx.Client(timeout=60) as h:
        req = h.build_request("POST", url, content=body, headers=headers)
        r = h.send(req)
        return r.status_code, r.content


def test_every_post_route_answers_malformed_bodies_with_4xx(server):
    routes = _post_routes(server.app)
    assert set(routes) >= {"/v1/explanations", "/v1/interactions", "/v1/recommendations"}
    failures = []
    for route in routes:
        for name, body, headers in MALFORMED:
            status, reply = _raw_post(server.url + route, body, headers)
            ok = 400 <= status < 500 and len(reply) < MAX_REPLY
            try:
                detail = json.loads(reply)["detail"]
            except (ValueError, KeyError):
                ok, detail = False, reply[:200]
            if not ok:
                failures.append((route, name, status, len(reply), str(detail)[:200]))
    assert not failures, failures
    # the server is still healthy afterwards
    assert httpx.get(server.url + "/health").status_code == 200


def test_non_finite_numbers_are_a_422_naming_the_field(server):
    url = server.url + "/v1/recommendations"
    cases = {
        b'{"item_ids": ["i1"], "wait_s": NaN}': ["body", "wait_s"],
        b'{"item_ids": ["i1"], "wait_s": Infinity}': ["body", "wait_s"],
        b'{"item_ids": ["i1"], "k": 1e400}': ["body", "k"],
        b'{"item_ids": ["i1"], "wait_s": -1e400}': ["body", "wait_s"],
        b'{"item_ids": ["i1", NaN]}': ["body", "item_ids", 1],
    }
    for body, loc in cases.items():
        status, reply = _raw_post(url, body, JSON_TYPE)
        assert status == 422, (body, reply)
        (err,) = json.loads(reply)["detail"]
        assert err["loc"] == loc, (body, err)
        assert "finite number" in err["msg"]
    # a finite number is still fine
    status, reply = _raw_post(url, b'{"item_ids": ["i1"], "wait_s": 0.0, "k": 2}', JSON_TYPE)
    assert status == 200 and len(json.loads(reply)["items"]) == 2


def test_a_422_repeats_at_most_a_short_piece_of_the_input(server):
    big = "z" * 900_000
    r = httpx.post(
        server.url + "/v1/recommendations", json={"titles": [big]}, timeout=60
    )  # one title far over its 500-character limit
    assert r.status_code == 422 and len(r.content) < 2_000
    (err,) = r.json()["detail"]
    assert err["loc"] == ["body", "titles", 0]
    assert err["input"].startswith("zzz") and "900000 characters" in err["input"]
    # a model-level error (both histories) used to repeat the whole body
    r = httpx.post(
        server.url + "/v1/recommendations",
        json={"item_ids": ["i1"] * 5000, "titles": ["Film 1"] * 5000},
        timeout=60,
    )
    assert r.status_code == 422 and len(r.content) < 2_000
    assert "object with 2 keys" in r.text
    # thousands of bad entries: the reply lists a few and counts the rest
    r = httpx.post(server.url + "/v1/recommendations", json={"item_ids": [1] * 5000})
    assert r.status_code == 422 and len(r.content) < MAX_REPLY
    assert "and 4980 more errors" in r.text


def test_bodies_over_the_limit_are_413(runs, make_settings, live_server):
    from whyrec.serve import create_app

    srv = live_server(create_app(make_settings(runs["lane"], max_body_bytes=4096)))
    url = srv.url + "/v1/recommendations"
    small = json.dumps({"item_ids": ["i1", "i2"], "k": 2}).encode()
    assert _raw_post(url, small, JSON_TYPE)[0] == 200
    padded = json.dumps({"item_ids": ["i1"] * 900}).encode()  # ~6 KB, valid otherwise
    status, reply = _raw_post(url, padded, JSON_TYPE)
    assert status == 413 and b"4096 bytes" in reply
    # no Content-Length (chunked upload): refused while reading, not after

    def chunks():
        for _ in range(10):
            yield b" " * 1000

    with httpx.Client(timeout=30) as h:
        r = h.post(url, content=chunks(), headers=JSON_TYPE)
    assert r.status_code == 413


def test_a_20_mb_body_gets_a_small_413(server):
    body = b'{"titles": ["' + b"x" * 20_000_000 + b'"]}'
    status, reply = _raw_post(server.url + "/v1/recommendations", body, JSON_TYPE)
    assert status == 413 and len(reply) < 500
    assert b"1048576 bytes" in reply


def test_content_type_must_be_json(server):
    status, reply = _raw_post(
        server.url + "/v1/interactions",
        b'{"user": "u1", "item_ids": ["i1"]}',
        {"Content-Type": "text/plain"},
    )
    assert status == 415 and b"application/json" in reply
    status, _ = _raw_post(
        server.url + "/v1/interactions",
        b'{"user": "u1", "item_ids": ["i1"]}',
        {"Content-Type": "application/json; charset=utf-8"},
    )
    assert status == 200


def test_health_shows_paths_only_to_a_caller_with_a_key(runs, make_settings, client_for, tmp_path):
    open_client = client_for(make_settings(runs["lane"]))
    h = open_client.get("/health")
    assert h.status_code == 200
    assert str(tmp_path) not in h.text and str(runs["root"]) not in h.text
    assert "path" not in h.json()["store"] and "run" not in h.json()["model"]
    assert h.json()["detail"] is False and h.json()["store"]["journal_mode"] == "wal"

    keyed = client_for(
        make_settings(runs["sasrec"], api_keys="health-key-1", store=tmp_path / "keyed.sqlite")
    )
    for headers in ({}, {"Authorization": "Bearer wrong-key"}, {"Authorization": "Basic x"}):
        r = keyed.get("/health", headers=headers)
        assert r.status_code == 200  # health never needs a key
        assert str(tmp_path) not in r.text and str(runs["root"]) not in r.text
        assert "last_error" not in r.json()["llm"]
    r = keyed.get("/health", headers={"Authorization": "Bearer health-key-1"})
    assert r.status_code == 200 and r.json()["detail"] is True
    assert r.json()["store"]["path"] == str(tmp_path / "keyed.sqlite")
    assert r.json()["model"]["run"] == str(runs["sasrec"])
