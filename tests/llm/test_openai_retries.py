"""The openai backend's error handling against a real local HTTP server that answers
429 / 5xx / garbage a set number of times before a valid reply."""

from __future__ import annotations

import json
import socket

import pytest

from whyrec.llm import (
    LLMClient,
    LLMConfigError,
    LLMOutputError,
    LLMRequestError,
    LLMUnavailableError,
)

SCHEMA = {
    "type": "object",
    "properties": {"likelihood": {"enum": ["Low", "Medium", "High"]}},
    "required": ["likelihood"],
}


def client_for(server, fast_settings, **kw):
    return LLMClient(
        fast_settings(backend="openai", model="stub-model", base_url=server.base_url, **kw)
    )


@pytest.mark.parametrize(
    "script",
    [[429, 429], [500, 503], ["garbage", "garbage"], ["nochoices", 502]],
    ids=["429", "5xx", "garbage", "no-choices"],
)
def test_retries_until_a_valid_reply(scripted_server, fast_settings, script):
    server = scripted_server(script, reply="all good")
    client = client_for(server, fast_settings, max_retries=3)
    res = client.complete("hello", stage="s")
    assert res.text == "all good" and res.attempts == 3 and len(server.requests) == 3
    assert (res.prompt_tokens, res.completion_tokens, res.model) == (7, 3, "stub-model")
    assert client.usage.by_stage()["s"].attempts == 3


def test_gives_up_with_a_typed_error_after_the_last_try(scripted_server, fast_settings):
    server = scripted_server([500] * 10)
    client = client_for(server, fast_settings, max_retries=2)
    with pytest.raises(LLMUnavailableError, match=r"after 3 attempt.*HTTP 500: .*scripted 500"):
        client.complete("hello")
    assert len(server.requests) == 3
    assert client.usage.total().failures == 1


def test_timeouts_are_retried(scripted_server, fast_settings):
    server = scripted_server(["slow"], reply="late but fine", slow_s=1.5)
    client = client_for(server, fast_settings, timeout=0.5, max_retries=1)
    assert client.complete("hello").text == "late but fine"
    assert len(server.requests) == 2


def test_client_errors_are_not_retried(scripted_server, fast_settings):
    server = scripted_server([401, 401])
    client = client_for(server, fast_settings, max_retries=3)
    with pytest.raises(LLMRequestError, match=r"HTTP 401.*\$OPENAI_API_KEY"):
        client.complete("hello")
    assert len(server.requests) == 1


def test_unreachable_endpoint_is_unavailable(fast_settings):
    with socket.socket() as s:  # a port that nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = LLMClient(
        fast_settings(
            backend="openai", model="m", base_url=f"http://127.0.0.1:{port}/v1", max_retries=1
        )
    )
    with pytest.raises(LLMUnavailableError, match="after 2 attempt.*connection failed"):
        client.complete("hello")


def test_key_comes_from_the_named_variable_only(scripted_server, fast_settings, monkeypatch):
    # Against api.openai.com (no base_url) a missing key is a config error at first use.
    client = LLMClient(fast_settings(backend="openai", model="gpt-4o-mini", api_key_env="MY_KEY"))
    assert client.info()["api_key_set"] is False
    with pytest.raises(LLMConfigError, match="nor MY_KEY is set"):
        client.complete("x")


def test_structured_modes_step_down_when_the_server_refuses(scripted_server, fast_settings):
    def reply(body):
        return '```json\n{"likelihood": "High"}\n```'

    # The server refuses json_schema (422) and json_object+schema (400): prompt-and-parse.
    server = scripted_server([422, 400], reply=reply)
    client = client_for(server, fast_settings)
    res = client.complete([{"role": "user", "content": "How likely?"}], schema=SCHEMA)
    assert res.parsed == {"likelihood": "High"}
    formats = [r.get("response_format", {}).get("type") for r in server.requests]
    assert formats == ["json_schema", "json_object", None]
    assert server.requests[1]["response_format"]["schema"] == SCHEMA
    system = server.requests[2]["messages"][0]
    assert (
        system["role"] == "system"
        and json.dumps(SCHEMA, separators=(",", ":")) in system["content"]
    )
    # the weaker mode is remembered: the next call goes straight to it
    client.complete([{"role": "user", "content": "Again?"}], schema=SCHEMA)
    assert server.requests[3].get("response_format") is None


def test_json_schema_mode_is_sent_when_supported(scripted_server, fast_settings):
    server = scripted_server([], reply='{"likelihood": "Low"}')
    client = client_for(server, fast_settings)
    assert client.complete("How likely?", schema=SCHEMA).parsed == {"likelihood": "Low"}
    rf = server.requests[0]["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["schema"] == SCHEMA


def test_invalid_structured_reply_is_reasked_then_reported(scripted_server, fast_settings):
    replies = iter(['{"likelihood": "Huge"}', "no", '{"likelihood": "Maybe"}'])
    server = scripted_server([], reply=lambda body: next(replies))
    client = client_for(server, fast_settings, max_reasks=2)
    with pytest.raises(LLMOutputError) as err:
        client.complete("How likely?", schema=SCHEMA)
    assert err.value.attempts == 3 and len(server.requests) == 3
    feedback = server.requests[1]["messages"][-1]["content"]
    assert "'Huge' is not one of ['Low', 'Medium', 'High']" in feedback


def test_an_unrelated_400_does_not_downgrade_later_calls(scripted_server, fast_settings):
    # Every mode gets 400 (say, the prompt is too long): the error surfaces, and the
    # next call still starts with json_schema.
    server = scripted_server([400, 400, 400], reply='{"likelihood": "Medium"}')
    client = client_for(server, fast_settings)
    with pytest.raises(LLMRequestError, match="HTTP 400"):
        client.complete("How likely?", schema=SCHEMA)
    assert client.backend.structured_mode == "json_schema"
    assert client.complete("How likely?", schema=SCHEMA).parsed == {"likelihood": "Medium"}
    assert server.requests[-1]["response_format"]["type"] == "json_schema"
