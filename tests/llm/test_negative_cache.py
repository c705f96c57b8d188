"""The negative cache: a request whose replies never validated is remembered with its
problems, so a re-run raises the same ``LLMOutputError`` without asking the model again;
``retry_failed`` asks again; outages and refused requests are never remembered."""

from __future__ import annotations

import pytest

from whyrec.llm import (
    LLMClient,
    LLMOutputError,
    LLMRequest,
    LLMRequestError,
    LLMUnavailableError,
    ReplyCache,
)

SCHEMA = {
    "type": "object",
    "properties": {"score": {"type": "number", "minimum": 0, "maximum": 1}},
    "required": ["score"],
}
BAD = ["no idea", '{"score": 7}']  # two invalid replies: first ask + one re-ask


def make(fake_backend, fast_settings, tmp_path, script, **kw):
    fb = fake_backend(list(script))
    cache = ReplyCache(tmp_path / "c.sqlite")
    settings = fast_settings(max_reasks=1, max_retries=1, **kw)
    return fb, cache, LLMClient(settings, backend=fb, cache=cache)


def test_second_call_raises_the_stored_failure_without_asking(
    fake_backend, fast_settings, tmp_path
):
    fb, cache, client = make(fake_backend, fast_settings, tmp_path, BAD)
    with pytest.raises(LLMOutputError) as first:
        client.complete("rate", schema=SCHEMA, stage="p", prompt_version="v1")
    assert not first.value.cached and len(fb.calls) == 2
    with pytest.raises(LLMOutputError) as again:
        client.complete("rate", schema=SCHEMA, stage="p", prompt_version="v1")
    assert len(fb.calls) == 2  # the backend was not asked
    assert again.value.cached and again.value.problems == first.value.problems
    assert again.value.text == '{"score": 7}' and again.value.attempts == 2
    assert "retry_failed" in str(again.value)
    usage = client.usage.by_stage()["p"]
    assert (usage.calls, usage.cached, usage.failures, usage.cached_failures) == (2, 1, 2, 1)
    assert usage.attempts == 2  # only the first call spent anything
    st = cache.stats()
    assert (st.entries, st.failed_entries, st.negative_hits, st.hits, st.misses) == (1, 1, 1, 0, 1)
    info = client.info()
    assert info["cache_failed_entries"] == 1 and info["cache_negative_hits"] == 1
    # keyed like a success: another prompt version, other parameters, no cache: asked
    with pytest.raises(LLMOutputError) as other:
        client.complete("rate", schema=SCHEMA, stage="p", prompt_version="v2")
    assert not other.value.cached and len(fb.calls) == 4


def test_a_fresh_process_also_remembers(fake_backend, fast_settings, tmp_path):
    fb, cache, client = make(fake_backend, fast_settings, tmp_path, BAD)
    with pytest.raises(LLMOutputError):
        client.complete("rate", schema=SCHEMA)
    client.close()
    fb2 = fake_backend(['{"score": 0.5}'])
    later = LLMClient(
        fast_settings(max_reasks=1), backend=fb2, cache=ReplyCache(tmp_path / "c.sqlite")
    )
    with pytest.raises(LLMOutputError, match="remembered from an earlier run"):
        later.complete("rate", schema=SCHEMA)
    assert fb2.calls == []


@pytest.mark.parametrize("how", ["call", "setting", "request"])
def test_retry_failed_asks_again_and_a_success_replaces_the_failure(
    fake_backend, fast_settings, tmp_path, how
):
    fb, cache, client = make(
        fake_backend, fast_settings, tmp_path, [*BAD, '{"score": 0.25}'],
        retry_failed=(how == "setting"),
    )  # fmt: skip
    if how == "setting":  # the first call fails for real; the setting only skips lookups
        assert client.settings.retry_failed
    with pytest.raises(LLMOutputError):
        client.complete("rate", schema=SCHEMA)
    assert cache.failed_entries() == 1
    if how == "call":
        res = client.complete("rate", schema=SCHEMA, retry_failed=True)
    elif how == "setting":
        res = client.complete("rate", schema=SCHEMA)
    else:
        [res] = client.complete_many([LLMRequest("rate", schema=SCHEMA, retry_failed=True)])
    assert res.ok and res.parsed == {"score": 0.25} and not res.cached and len(fb.calls) == 3
    assert cache.failed_entries() == 0 and len(cache) == 1
    assert client.complete("rate", schema=SCHEMA).cached  # the success is what is kept


def test_complete_many_reports_remembered_failures(fake_backend, fast_settings, tmp_path):
    fb, cache, client = make(fake_backend, fast_settings, tmp_path, BAD, concurrency=2)
    reqs = [LLMRequest("rate", schema=SCHEMA, tag="a")]
    [first] = client.complete_many(reqs)
    [again] = client.complete_many(reqs)
    assert not first.ok and not again.ok and again.tag == "a"
    assert isinstance(again.error, LLMOutputError) and again.error.cached
    assert len(fb.calls) == 2


def test_outages_are_never_remembered(fake_backend, fast_settings, tmp_path, transient):
    fb, cache, client = make(
        fake_backend, fast_settings, tmp_path, [transient(), transient(), '{"score": 0.5}']
    )
    with pytest.raises(LLMUnavailableError):
        client.complete("rate", schema=SCHEMA)
    assert len(cache) == 0
    assert client.complete("rate", schema=SCHEMA).parsed == {"score": 0.5}
    assert len(fb.calls) == 3


def test_refused_requests_are_never_remembered(fake_backend, fast_settings, tmp_path):
    fb, cache, client = make(
        fake_backend,
        fast_settings,
        tmp_path,
        [LLMRequestError("HTTP 401", status=401), '{"score": 0.2}'],
    )
    with pytest.raises(LLMRequestError):
        client.complete("rate", schema=SCHEMA)
    assert len(cache) == 0
    assert client.complete("rate", schema=SCHEMA).parsed == {"score": 0.2}
    assert len(fb.calls) == 2


def test_clear_failures_only_keeps_the_replies(fake_backend, fast_settings, tmp_path):
    fb, cache, client = make(fake_backend, fast_settings, tmp_path, [*BAD, '{"score": 0.1}'])
    with pytest.raises(LLMOutputError):
        client.complete("rate", schema=SCHEMA)
    client.complete("other", schema=SCHEMA)
    assert (len(cache), cache.failed_entries()) == (2, 1)
    assert cache.clear(failures_only=True) == 1
    assert (len(cache), cache.failed_entries()) == (1, 0)


def test_env_variable_turns_retry_failed_on(monkeypatch):
    from whyrec.llm import LLMSettings

    monkeypatch.setenv("WHYREC_LLM_RETRY_FAILED", "1")
    assert LLMSettings.load().retry_failed is True
