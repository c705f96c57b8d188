"""The client's own logic (re-asks, retries, batches, cache use, accounting) on a fake
backend; the real backends are exercised in test_local_model.py and test_openai_*.py."""

from __future__ import annotations

import json
import threading

import pytest
from pydantic import BaseModel, field_validator

from whyrec.llm import (
    LLMClient,
    LLMFailure,
    LLMOutputError,
    LLMRequest,
    LLMRequestError,
    LLMUnavailableError,
    ReplyCache,
)
from whyrec.llm.backends.base import RawReply

SCHEMA = {
    "type": "object",
    "properties": {"score": {"type": "number", "minimum": 0, "maximum": 1}},
    "required": ["score"],
}


class Score(BaseModel):
    score: float


def test_plain_completion(fake_backend, fast_settings):
    fb = fake_backend(["hello there"])
    client = LLMClient(fast_settings(max_tokens=33, seed=7), backend=fb)
    res = client.complete("hi", stage="demo")
    assert (res.text, res.parsed, res.cached, res.attempts) == ("hello there", None, False, 1)
    assert (res.prompt_tokens, res.completion_tokens, res.backend, res.model) == (
        10, 5, "fake", "fake-1"
    )  # fmt: skip
    assert fb.calls[0]["messages"] == [{"role": "user", "content": "hi"}]
    assert (fb.calls[0]["max_tokens"], fb.calls[0]["seed"]) == (33, 7)


def test_reask_feeds_the_validation_error_back(fake_backend, fast_settings):
    fb = fake_backend(['{"score": 7}', 'Sure: ```json\n{"score": 0.5}\n```'])
    client = LLMClient(fast_settings(max_reasks=2), backend=fb)
    res = client.complete([{"role": "user", "content": "rate it"}], schema=SCHEMA)
    assert res.parsed == {"score": 0.5} and res.attempts == 2
    second = fb.calls[1]["messages"]
    assert second[1] == {"role": "assistant", "content": '{"score": 7}'}
    assert second[2]["role"] == "user"
    assert "at score: 7 is greater than the maximum of 1" in second[2]["content"]


def test_reask_after_a_cut_off_reply_asks_for_brevity(fake_backend, fast_settings):
    cut = RawReply('{"score": 0.', 10, 4, "length", "fake-1")
    fb = fake_backend([cut, '{"score": 0.5}'])
    client = LLMClient(fast_settings(max_reasks=1, max_tokens=4), backend=fb)
    assert client.complete("rate", schema=SCHEMA).parsed == {"score": 0.5}
    feedback = fb.calls[1]["messages"][-1]["content"]
    assert "cut off at the 4-token limit" in feedback


def test_pydantic_schema_gives_an_instance(fake_backend, fast_settings):
    client = LLMClient(fast_settings(), backend=fake_backend(['{"score": 0.25}']))
    res = client.complete("rate", schema=Score)
    assert isinstance(res.parsed, Score) and res.parsed.score == 0.25


def test_invalid_after_all_reasks_is_a_typed_failure(fake_backend, fast_settings):
    fb = fake_backend(["no idea", '{"score": "high"}', '{"nope": 1}'])
    client = LLMClient(fast_settings(max_reasks=2), backend=fb)
    with pytest.raises(LLMOutputError) as err:
        client.complete("rate", schema=SCHEMA, stage="explanations")
    assert err.value.attempts == 3 and len(fb.calls) == 3
    assert err.value.text == '{"nope": 1}'
    assert err.value.problems == ["at (root): 'score' is a required property"]
    assert "stage 'explanations'" in str(err.value)
    usage = client.usage.by_stage()["explanations"]
    assert (usage.calls, usage.failures, usage.attempts, usage.prompt_tokens) == (1, 1, 3, 30)


def test_transient_errors_are_retried_then_succeed(fake_backend, fast_settings, transient):
    fb = fake_backend([transient(), transient(), "fine"])
    client = LLMClient(fast_settings(max_retries=3), backend=fb)
    delays: list[float] = []
    client._sleep = delays.append
    res = client.complete("x")
    assert res.text == "fine" and res.attempts == 3 and len(delays) == 2


def test_transient_errors_exhaust_into_unavailable(fake_backend, fast_settings, transient):
    fb = fake_backend([transient("HTTP 503: busy")] * 5)
    client = LLMClient(fast_settings(max_retries=2), backend=fb)
    with pytest.raises(LLMUnavailableError, match="gave up after 3 attempt.*HTTP 503: busy") as e:
        client.complete("x")
    assert e.value.attempts == 3 and len(fb.calls) == 3


def test_request_errors_are_not_retried(fake_backend, fast_settings):
    fb = fake_backend([LLMRequestError("HTTP 400: bad", status=400), "never"])
    client = LLMClient(fast_settings(max_retries=3), backend=fb)
    with pytest.raises(LLMRequestError):
        client.complete("x")
    assert len(fb.calls) == 1


def test_backoff_is_exponential_capped_and_jittered(fake_backend, fast_settings):
    client = LLMClient(fast_settings(backoff_base=1.0, backoff_max=8.0), backend=fake_backend())
    for attempt, full in [(0, 1.0), (1, 2.0), (2, 4.0), (3, 8.0), (6, 8.0)]:
        delays = {client.backoff_delay(attempt) for _ in range(50)}
        assert all(full / 2 <= d <= full for d in delays)
        assert len(delays) > 1  # jitter
    assert client.backoff_delay(0, retry_after=5.0) >= 5.0
    assert client.backoff_delay(0, retry_after=100.0) <= 8.0


def test_messages_are_checked(fake_backend, fast_settings):
    client = LLMClient(fast_settings(), backend=fake_backend())
    with pytest.raises(ValueError, match=r"messages\[0\]: role 'robot'"):
        client.complete([{"role": "robot", "content": "x"}])
    with pytest.raises(ValueError, match="messages is empty"):
        client.complete([])
    with pytest.raises(ValueError, match=r"messages\[1\]: content must be a string"):
        client.complete([{"role": "user", "content": "a"}, {"role": "user", "content": 3}])


def test_batch_keeps_order_isolates_failures_and_bounds_concurrency(fake_backend, fast_settings):
    def reply(messages):
        text = messages[-1]["content"]
        if text == "boom":
            return LLMRequestError("HTTP 400: refused", status=400)
        if text == "bad json":
            return "not json at all"
        return '{"score": 0.5}' if "rate" in text else f"echo {text}"

    fb = fake_backend(default=reply)
    fb.hold = threading.Event()
    client = LLMClient(fast_settings(max_reasks=0), backend=fb)
    requests = [
        "one",
        {"messages": "boom", "stage": "s1", "tag": "u2"},
        LLMRequest(messages="rate me", schema=SCHEMA, tag="u3"),
        LLMRequest(messages="bad json", schema=SCHEMA, tag="u4"),
        {"messages": "x", "no_such_field": 1},
        *[f"item {i}" for i in range(10)],
    ]
    threading.Timer(0.2, fb.hold.set).start()
    out = client.complete_many(requests, concurrency=3)
    assert len(out) == len(requests)
    assert out[0].ok and out[0].text == "echo one"
    assert isinstance(out[1], LLMFailure) and isinstance(out[1].error, LLMRequestError)
    assert (out[1].stage, out[1].tag) == ("s1", "u2")
    assert out[2].ok and out[2].parsed == {"score": 0.5} and out[2].tag == "u3"
    assert not out[3].ok and isinstance(out[3].error, LLMOutputError)
    assert not out[4].ok and "no_such_field" in out[4].message
    assert [o.text for o in out[5:]] == [f"echo item {i}" for i in range(10)]
    assert 1 < fb.max_in_flight <= 3


def test_cache_hit_skips_the_backend_and_is_not_charged(fake_backend, fast_settings, tmp_path):
    fb = fake_backend(['{"score": 0.9}', '{"score": 0.1}', "plain", '{"score": 0.4}'])
    cache = ReplyCache(tmp_path / "c.sqlite")
    client = LLMClient(fast_settings(), backend=fb, cache=cache)
    first = client.complete("rate", schema=Score, stage="p", prompt_version="v1")
    again = client.complete("rate", schema=Score, stage="p", prompt_version="v1")
    assert not first.cached and again.cached and again.attempts == 0
    assert again.parsed == Score(score=0.9) and len(fb.calls) == 1
    assert (again.prompt_tokens, again.completion_tokens) == (10, 5)
    # a new template version, other sampling params, or the bypass switch all miss
    client.complete("rate", schema=Score, stage="p", prompt_version="v2")
    assert client.complete("rate", max_tokens=9, stage="p").text == "plain"
    assert len(fb.calls) == 3
    client.complete("rate", schema=Score, stage="p", prompt_version="v1", use_cache=False)
    assert len(fb.calls) == 4
    assert (cache.hits, cache.misses) == (1, 3)
    usage = client.usage.by_stage()["p"]
    assert (usage.calls, usage.cached, usage.prompt_tokens, usage.completion_tokens) == (
        5, 1, 40, 20
    )  # fmt: skip


class Pick(BaseModel):
    title: str
    score: float


def test_requests_keep_their_cache_keys(fake_backend, fast_settings, tmp_path):
    """The key of a request is pinned: replies cached by an earlier version must still hit.
    (The literals are the keys these requests had before the backends took a ``Decoding``;
    a change of what goes into the key must bump ``CACHE_FORMAT`` and these literals.)"""
    fb = fake_backend(['{"title": "Heat", "score": 0.5}', "Heat"])
    cache = ReplyCache(tmp_path / "c.sqlite")
    client = LLMClient(fast_settings(), backend=fb, cache=cache)
    client.complete(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Pick a film."}],
        schema=Pick, max_tokens=40, temperature=0.0, seed=3, prompt_version="v7",
    )  # fmt: skip
    client.complete("Name one film.", max_tokens=16, temperature=0.7, prompt_version="v1")
    assert len(cache) == 2
    assert cache.get("51012a48c8512bc6d971b1abca5c7e2090c3bd1c41183b38b36b93b000b6130d")
    assert cache.get("8ce01d6342478529ed2dfc28c472392f8a222515644ef87042c5ee01533b1559")


def test_a_failure_is_remembered_until_retried(fake_backend, fast_settings, tmp_path):
    # the negative cache in depth: test_negative_cache.py
    fb = fake_backend(["garbage", '{"score": 0.3}'])
    cache = ReplyCache(tmp_path / "c.sqlite")
    client = LLMClient(fast_settings(max_reasks=0), backend=fb, cache=cache)
    with pytest.raises(LLMOutputError):
        client.complete("rate", schema=SCHEMA)
    with pytest.raises(LLMOutputError):
        client.complete("rate", schema=SCHEMA)
    assert len(fb.calls) == 1 and len(cache) == 1
    assert client.complete("rate", schema=SCHEMA, retry_failed=True).parsed == {"score": 0.3}
    assert len(cache) == 1 and cache.failed_entries() == 0


def test_cost_is_booked_from_the_price_table(fake_backend, fast_settings):
    fb = fake_backend()
    fb.name = "openai"
    fb.model = "gpt-4o-mini"
    client = LLMClient(fast_settings(backend="openai", model="gpt-4o-mini"), backend=fb)
    for _ in range(4):
        client.complete("x", stage="explanations")
    total = client.usage.total()
    assert (total.prompt_tokens, total.completion_tokens) == (40, 20)
    assert total.cost_usd == pytest.approx((40 * 0.15 + 20 * 0.60) / 1e6)

    fb2 = fake_backend()
    fb2.name, fb2.model = "openai", "unpriced-model"
    client2 = LLMClient(fast_settings(backend="openai", model="unpriced-model"), backend=fb2)
    client2.complete("x")
    assert client2.usage.total().cost_usd is None


class Verdict(BaseModel):
    """Two fields, one with a check the grammar cannot express (like the explanation's)."""

    score: float
    reason: str

    @field_validator("reason")
    @classmethod
    def _no_shouting(cls, v: str) -> str:
        if v.isupper():
            raise ValueError("is all capitals")
        return v


def test_partial_reask_asks_only_for_the_fields_with_problems(fake_backend, fast_settings):
    fb = fake_backend(
        [
            RawReply('{"score": 0.75, "reason": "GREAT"}', 100, 40, "stop", "fake-1"),
            RawReply('{"reason": "fits the history"}', 150, 8, "stop", "fake-1"),
        ]
    )
    client = LLMClient(fast_settings(max_reasks=2), backend=fb)
    res = client.complete("judge", schema=Verdict, stage="explanations")
    assert res.parsed == Verdict(score=0.75, reason="fits the history")
    assert json.loads(res.text) == {"score": 0.75, "reason": "fits the history"}
    assert res.attempts == 2 and res.completion_tokens == 48  # both parts of the reply
    second = fb.calls[1]
    # the second call is constrained to the failed field only, with the problem named
    assert second["schema"].json_schema["properties"].keys() == {"reason"}
    assert second["schema"].json_schema["required"] == ["reason"]
    # the model is shown its reply without the failed field (not its own mistake to copy)
    assert second["messages"][1] == {"role": "assistant", "content": '{"score": 0.75}'}
    follow_up = second["messages"][2]["content"]
    assert "at reason: Value error, is all capitals" in follow_up
    assert "Write only reason again" in follow_up
    usage = client.usage.by_stage()["explanations"]
    assert (usage.attempts, usage.completion_tokens) == (2, 48)


def test_partial_reask_answer_that_fails_again_is_asked_for_again(fake_backend, fast_settings):
    fb = fake_backend(
        ['{"score": 0.5, "reason": "BAD"}', '{"reason": "WORSE"}', '{"reason": "fine now"}']
    )
    client = LLMClient(fast_settings(max_reasks=2), backend=fb)
    res = client.complete("judge", schema=Verdict)
    assert (res.parsed.score, res.parsed.reason, res.attempts) == (0.5, "fine now", 3)
    assert [set(c["schema"].json_schema["properties"]) for c in fb.calls] == [
        {"score", "reason"}, {"reason"}, {"reason"},
    ]  # fmt: skip
    # the second partial re-ask shows the first one's answer
    assert fb.calls[2]["messages"][-2]["content"] == '{"reason": "WORSE"}'

    # out of re-asks: the failure reports the last problems
    fb = fake_backend(['{"score": 0.5, "reason": "BAD"}', '{"reason": "WORSE"}'])
    client = LLMClient(fast_settings(max_reasks=1), backend=fb)
    with pytest.raises(LLMOutputError) as err:
        client.complete("judge", schema=Verdict)
    assert err.value.problems == ["at reason: Value error, is all capitals"]


def test_whole_reply_is_asked_again_when_problems_are_not_inside_fields(
    fake_backend, fast_settings
):
    two = {
        "type": "object",
        "properties": {"score": {"type": "number", "maximum": 1}, "note": {"type": "string"}},
        "required": ["score", "note"],
    }
    # a missing property is a root-level problem under a plain JSON schema
    fb = fake_backend(['{"score": 0.5}', '{"score": 0.5, "note": "ok"}'])
    client = LLMClient(fast_settings(max_reasks=1), backend=fb)
    assert client.complete("x", schema=two).parsed == {"score": 0.5, "note": "ok"}
    assert set(fb.calls[1]["schema"].json_schema["properties"]) == {"score", "note"}
    # every field wrong: nothing to keep
    fb = fake_backend(['{"score": 7, "note": 3}', '{"score": 0.5, "note": "ok"}'])
    client = LLMClient(fast_settings(max_reasks=1), backend=fb)
    client.complete("x", schema=two)
    assert "Reply again with only one JSON value" in fb.calls[1]["messages"][-1]["content"]
    # switched off
    fb = fake_backend(['{"score": 0.5, "reason": "BAD"}', '{"score": 0.5, "reason": "ok"}'])
    client = LLMClient(fast_settings(max_reasks=1, partial_reasks=False), backend=fb)
    assert client.complete("x", schema=Verdict).parsed.reason == "ok"
    assert set(fb.calls[1]["schema"].json_schema["properties"]) == {"score", "reason"}
