"""Data-parallel local decoding: worker processes with the real SmolLM2 model, their
replies against the in-process backend, errors, a worker's death and the parent's."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from whyrec.explain.prompts import PREFERENCE_ASPECTS, aspect_preference_messages
from whyrec.explain.schemas import preference_schema
from whyrec.llm import LLMClient, LLMRequest
from whyrec.llm.backends import Decoding, make_backend
from whyrec.llm.backends.local import LocalBackend
from whyrec.llm.backends.pool import (
    WorkerPoolBackend,
    _flat,
    _lcp,
    _Worker,
    worker_cpus,
    worker_threads,
)
from whyrec.llm.errors import LLMConfigError, LLMRequestError
from whyrec.llm.parse import Schema
from whyrec.llm.settings import LLMSettings

HISTORIES = [
    ["Toy Story (1995)", "Aladdin (1992)", "Lion King, The (1994)", "Babe (1995)"],
    ["Heat (1995)", "Seven (Se7en) (1995)", "Usual Suspects, The (1995)", "Fargo (1996)"],
    ["Star Wars (1977)", "Contact (1997)", "Alien (1979)", "Twelve Monkeys (1995)"],
]


# ----------------------------------------------------------------------------- unit


def test_lcp_matches_a_plain_scan():
    rng = random.Random(0)
    for _ in range(300):
        a = "".join(rng.choice("ab") for _ in range(rng.randint(0, 40)))
        tail = "".join(rng.choice("ab") for _ in range(rng.randint(0, 5)))
        b = a[: rng.randint(0, len(a))] + tail
        assert _lcp(a, b) == len(os.path.commonprefix([a, b]))


def test_threads_and_cpus_are_shared_out():
    assert worker_threads(2, 2) == 1 and worker_threads(8, 3) == 2 and worker_threads(1, 4) == 1
    cpus = sorted(os.sched_getaffinity(0))
    sets = worker_cpus(len(cpus), 1)
    assert sets == [[c] for c in cpus]  # one core each, disjoint
    assert worker_cpus(len(cpus) + 1, 1) == [None] * (len(cpus) + 1)  # too few: no pinning


def test_settings_choose_the_pool_and_fill_it():
    s = LLMSettings(backend="local", workers=2, n_parallel=3)
    assert s.calls_to_fill == 6
    assert LLMSettings(backend="local").calls_to_fill == 1
    backend = make_backend(s)
    try:
        assert isinstance(backend, WorkerPoolBackend)
        assert backend.max_concurrency == 12 and backend.threads_per_worker == 1
        seq = LocalBackend(LLMSettings(backend="local"))
        assert backend.identity() == seq.identity()  # same replies: shared cache entries
        info = backend.describe()
        assert info["workers"] == 2 and info["loaded"] is False
        assert "2 worker processes, batched (3 sequences) in each" == info["decoding"]
    finally:
        backend.close()
    with pytest.raises(ValueError, match="workers"):
        LLMSettings(backend="local", workers=0)


def test_env_variable_sets_workers(monkeypatch):
    monkeypatch.setenv("WHYREC_LLM_WORKERS", "3")
    assert LLMSettings.load().workers == 3


def _fake_worker(index: int, pending: int = 0, recent: tuple[str, ...] = ()) -> _Worker:
    w = _Worker(index, proc=None, conn=None)  # type: ignore[arg-type]
    w.pending = {i: None for i in range(pending)}  # type: ignore[misc]
    w.recent.extend(recent)
    return w


def test_calls_go_where_their_prefix_is_unless_that_worker_is_far_behind():
    pool = WorkerPoolBackend(LLMSettings(backend="local", workers=2, n_parallel=2))
    first = [{"role": "system", "content": "rules"}, {"role": "user", "content": "x" * 800}]
    reask = [*first, {"role": "assistant", "content": "{bad"}, {"role": "user", "content": "fix"}]
    other = [{"role": "system", "content": "rules"}, {"role": "user", "content": "y" * 800}]
    a, b = _fake_worker(0, pending=1, recent=(_flat(first),)), _fake_worker(1)
    assert pool._choose([a, b], _flat(reask)) is a  # its first attempt's prompt is cached there
    assert pool._choose([a, b], _flat(other)) is b  # only the system prompt shared: least busy
    a = _fake_worker(0, pending=3, recent=(_flat(first),))  # slots busy, one queued: fine
    assert pool._choose([a, b], _flat(reask)) is a
    a = _fake_worker(0, pending=4, recent=(_flat(first),))  # 4 more than b (capacity): move
    assert pool._choose([a, b], _flat(reask)) is b
    b = _fake_worker(1, pending=3)  # both busy: a has only one call more waiting
    assert pool._choose([a, b], _flat(reask)) is a
    b = _fake_worker(1, pending=3, recent=(_flat(first),))  # both hold it: the less busy
    assert pool._choose([a, b], _flat(reask)) is b
    pool.close()


# ------------------------------------------------------------------ the real model


def _calls() -> list[dict]:
    calls = [
        {"messages": aspect_preference_messages(h, PREFERENCE_ASPECTS[j]), "schema": None,
         "max_tokens": 20}
        for h in HISTORIES for j in (0, 1)
    ]  # fmt: skip
    calls.append(
        {"messages": aspect_preference_messages(HISTORIES[0], PREFERENCE_ASPECTS[2]),
         "schema": Schema.of(preference_schema(2)), "max_tokens": 40}
    )  # fmt: skip
    return calls


def _greedy(call: dict) -> Decoding:
    """The decoding of one of :func:`_calls`' calls at temperature 0, seed 0."""
    return Decoding(schema=call["schema"], max_tokens=call["max_tokens"], temperature=0.0, seed=0)


@pytest.fixture(scope="module")
def pool():
    backend = WorkerPoolBackend(
        LLMSettings(backend="local", workers=2, n_threads=2, n_ctx=1024, cache=False)
    )
    yield backend
    backend.close()


@pytest.mark.slow
def test_workers_reply_like_the_in_process_backend(pool):
    calls = _calls()
    # the in-process reference runs with 2 threads, each worker with 1: llama.cpp's
    # results do not depend on the thread count
    local = LocalBackend(LLMSettings(backend="local", n_threads=2, n_ctx=1024, cache=False))
    try:
        ref = [local.generate(c["messages"], _greedy(c)) for c in calls]
    finally:
        local.close()
    with ThreadPoolExecutor(4) as ex:  # more calls in flight than workers
        par = list(ex.map(lambda c: pool.generate(c["messages"], _greedy(c)), calls))
    for a, b in zip(ref, par, strict=True):
        assert (b.text, b.finish_reason, b.completion_tokens, b.prompt_tokens) == (
            a.text, a.finish_reason, a.completion_tokens, a.prompt_tokens,
        )  # fmt: skip
    assert all(r.text for r in ref) and any(c["schema"] for c in calls)
    # through the client: validation, order and tags as with any backend
    client = LLMClient(LLMSettings(backend="local", workers=2, cache=False), backend=pool)
    reqs = [
        LLMRequest(messages=c["messages"], max_tokens=c["max_tokens"], tag=i)
        for i, c in enumerate(calls[:4])
    ]
    outs = client.complete_many(reqs)
    assert [o.tag for o in outs] == [0, 1, 2, 3]
    assert [o.text for o in outs] == [r.text for r in ref[:4]]
    info = pool.describe()
    assert info["loaded"] and sorted(info["calls_per_worker"]) != [0, len(calls)]  # both used
    assert sum(info["calls_per_worker"]) >= len(calls)
    cpus = info["worker_cpus"]
    if len(os.sched_getaffinity(0)) >= 2:
        assert cpus[0] and cpus[1] and not set(cpus[0]) & set(cpus[1])


@pytest.mark.slow
def test_a_request_error_in_a_worker_reaches_the_caller_and_the_pool_goes_on(pool):
    long = [{"role": "user", "content": "film " * 1500}]
    with pytest.raises(LLMRequestError, match="exceed context window"):
        pool.generate(long, Decoding(max_tokens=8, temperature=0.0, seed=0))
    ok = pool.generate(_calls()[0]["messages"], Decoding(max_tokens=8, temperature=0.0, seed=0))
    assert ok.text and ok.model == pool.model


@pytest.mark.slow
def test_a_dead_worker_fails_its_calls_and_the_others_serve_on():
    backend = WorkerPoolBackend(
        LLMSettings(backend="local", workers=2, n_threads=2, n_ctx=1024, cache=False)
    )
    try:
        backend._start()
        msgs = _calls()[0]["messages"]
        errors: list[BaseException] = []

        def long_call() -> None:
            try:
                backend.generate(msgs, Decoding(max_tokens=400, temperature=0.7, seed=1))
            except BaseException as exc:  # recorded for the assertion
                errors.append(exc)

        t = threading.Thread(target=long_call)
        t.start()
        deadline = time.monotonic() + 30
        while not any(w.pending for w in backend._pool) and time.monotonic() < deadline:
            time.sleep(0.01)
        victim = next(w for w in backend._pool if w.pending)
        victim.proc.send_signal(signal.SIGKILL)
        t.join(timeout=60)
        assert len(errors) == 1 and isinstance(errors[0], LLMRequestError)
        assert f"worker {victim.index} exited with code -9" in str(errors[0])
        for _ in range(3):  # every later call goes to the survivor
            r = backend.generate(msgs, Decoding(max_tokens=6, temperature=0.0, seed=0))
            assert r.text
        survivor = next(w for w in backend._pool if w is not victim)
        assert survivor.served >= 3
    finally:
        backend.close()


@pytest.mark.slow
def test_a_broken_model_file_fails_at_start_naming_it(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    backend = WorkerPoolBackend(
        LLMSettings(backend="local", workers=2, model_path=bad, cache=False)
    )
    try:
        with pytest.raises(LLMConfigError, match="broken.gguf"):
            backend.generate(
                [{"role": "user", "content": "hi"}], Decoding(max_tokens=4, temperature=0.0, seed=0)
            )
    finally:
        backend.close()


@pytest.mark.slow
def test_workers_exit_when_their_parent_is_killed(tmp_path):
    script = textwrap.dedent(
        """
        import json, sys, time
        from whyrec.llm.backends.pool import WorkerPoolBackend
        from whyrec.llm.settings import LLMSettings
        b = WorkerPoolBackend(LLMSettings(backend="local", workers=2, n_ctx=512, cache=False))
        b._start()
        print(json.dumps([w.proc.pid for w in b._pool]), flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pids = json.loads(parent.stdout.readline())
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(p) for p in pids)
    finally:
        if parent.poll() is None:
            parent.kill()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False
