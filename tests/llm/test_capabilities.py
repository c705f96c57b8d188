"""Backends say what they are able to do; the client and the settings ask that, not names."""

from __future__ import annotations

from typing import Any

import pytest

from whyrec.llm import LLMClient, LLMRequest
from whyrec.llm.backends.batched import BatchedLocalBackend
from whyrec.llm.backends.local import LocalBackend
from whyrec.llm.backends.openai_compat import OpenAIBackend
from whyrec.llm.backends.pool import WorkerPoolBackend


@pytest.mark.parametrize(
    ("cls", "local", "paid"),
    [
        (LocalBackend, True, False),
        (BatchedLocalBackend, True, False),
        (WorkerPoolBackend, True, False),
        (OpenAIBackend, False, True),
    ],
)
def test_every_backend_declares_its_capabilities(cls, local, paid):
    assert cls.is_local is local
    assert cls.costs_money is paid
    assert hasattr(cls, "max_concurrency")


def test_settings_say_whether_the_backend_is_local(fast_settings):
    local = fast_settings()
    remote = fast_settings(backend="openai", model="m", workers=2, n_parallel=4)
    assert local.is_local and not remote.is_local
    assert remote.calls_to_fill == 1  # only a local model decodes several calls at once


def test_a_free_backend_books_no_price_whatever_its_name(fake_backend, fast_settings):
    fb = fake_backend()
    fb.costs_money, fb.is_local = False, True
    fb.model = "gpt-4o-mini"  # a priced model name: still free on a backend that costs nothing
    client = LLMClient(fast_settings(backend="openai", model="gpt-4o-mini"), backend=fb)
    client.complete("x")
    assert client.usage.total().cost_usd == 0
    assert client.info()["price_per_1m_tokens"] == "free (local)"

    paid = fake_backend()
    paid.model = "gpt-4o-mini"
    client2 = LLMClient(fast_settings(backend="openai", model="gpt-4o-mini"), backend=paid)
    client2.complete("x")
    assert client2.usage.total().cost_usd == pytest.approx((10 * 0.15 + 5 * 0.60) / 1e6)


def test_complete_many_keeps_within_the_backends_max_concurrency(fake_backend, fast_settings):
    import threading

    def run(limit: int | None) -> int:
        fb = fake_backend()
        fb.max_concurrency = limit
        fb.hold = threading.Event()  # the first calls wait, so unlimited threads pile up
        timer = threading.Timer(0.5, fb.hold.set)
        timer.start()
        outcomes = LLMClient(fast_settings(concurrency=6), backend=fb).complete_many(
            [f"q{i}" for i in range(6)]
        )
        timer.join()
        assert all(o.ok for o in outcomes)
        return fb.max_in_flight

    assert run(1) == 1
    assert run(None) > 1  # the settings' concurrency when the backend sets no limit


class _Recorder:
    """A client that only records what it was asked (for LLMRequest.send)."""

    model = "recorder"

    def __init__(self) -> None:
        self.calls: list[tuple[Any, dict[str, Any]]] = []

    def complete(self, messages: Any, **kwargs: Any) -> Any:
        self.calls.append((messages, kwargs))
        return "reply"


def test_a_request_is_sent_field_by_field_and_unset_options_are_left_to_the_client():
    rec = _Recorder()
    req = LLMRequest(
        "hi", schema={"type": "object"}, max_tokens=9, temperature=0.5, seed=3,
        stage="s", prompt_version="v2",
    )  # fmt: skip
    assert req.send(rec) == "reply"
    messages, kw = rec.calls[-1]
    assert messages == "hi"
    assert kw == {
        "schema": {"type": "object"}, "max_tokens": 9, "temperature": 0.5, "seed": 3,
        "stage": "s", "prompt_version": "v2",
    }  # fmt: skip
    LLMRequest("hi", use_cache=False, tag=("u1", 0), retry_failed=True).send(rec)
    _, kw = rec.calls[-1]
    assert (kw["use_cache"], kw["tag"], kw["retry_failed"]) == (False, ("u1", 0), True)


def test_send_and_complete_give_the_same_result(fake_backend, fast_settings):
    fb = fake_backend(['{"score": 0.5}', '{"score": 0.5}'])
    client = LLMClient(fast_settings(), backend=fb)
    schema = {"type": "object", "properties": {"score": {"type": "number"}}}
    a = LLMRequest("rate", schema=schema, tag="t", stage="x").send(client)
    b = client.complete("rate", schema=schema, tag="t", stage="x")
    assert (a.parsed, a.tag, a.stage) == (b.parsed, b.tag, b.stage) == ({"score": 0.5}, "t", "x")
    assert fb.calls[0]["messages"] == fb.calls[1]["messages"]
