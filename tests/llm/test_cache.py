"""The SQLite reply cache under concurrent writers: threads and separate processes."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

from whyrec.llm.cache import ReplyCache, cache_key


def test_key_is_stable_and_sensitive_to_every_part():
    base = {"backend": "local", "model": "m", "messages": [{"role": "user", "content": "a"}]}
    assert cache_key(base) == cache_key(dict(reversed(list(base.items()))))
    assert cache_key(base) != cache_key({**base, "model": "m2"})
    assert cache_key(base) != cache_key({**base, "messages": [{"role": "user", "content": "b"}]})
    assert cache_key(base) != cache_key({**base, "prompt_version": "2"})


def test_roundtrip_counters_wal_and_clear(tmp_path):
    cache = ReplyCache(tmp_path / "sub" / "c.sqlite")
    assert cache.journal_mode() == "wal"
    assert cache.get("k") is None
    cache.put("k", {"text": "héllo", "json": {"a": [1]}}, backend="local", model="m", stage="s")
    assert cache.get("k") == {"text": "héllo", "json": {"a": [1]}}
    st = cache.stats()
    assert (st.entries, st.hits, st.misses) == (1, 1, 1) and st.size_bytes > 0
    # a second handle on the same file (another client, another run) sees the entry
    other = ReplyCache(tmp_path / "sub" / "c.sqlite")
    assert other.get("k")["text"] == "héllo"
    assert cache.clear() == 1 and other.get("k") is None
    cache.close()
    other.close()


def test_many_threads_write_and_read_concurrently(tmp_path):
    cache = ReplyCache(tmp_path / "c.sqlite")

    def work(t: int) -> int:
        for i in range(60):
            key = f"shared-{i}" if i % 3 == 0 else f"t{t}-{i}"
            cache.put(key, {"t": t, "i": i}, backend="b", model="m", stage="s")
            assert cache.get(key)["i"] == i
        return t

    with ThreadPoolExecutor(max_workers=8) as ex:
        assert sorted(ex.map(work, range(8))) == list(range(8))
    assert len(cache) == 20 + 8 * 40
    cache.close()


WRITER = textwrap.dedent(
    """
    import sys
    from whyrec.llm.cache import ReplyCache
    path, proc = sys.argv[1], int(sys.argv[2])
    cache = ReplyCache(path)
    for i in range(150):
        key = f"shared-{i}" if i % 5 == 0 else f"p{proc}-{i}"
        cache.put(key, {"proc": proc, "i": i}, backend="b", model="m", stage="s")
        got = cache.get(key)
        assert got is not None and got["i"] == i, got
    cache.close()
    print("done", proc)
    """
)


def test_many_processes_write_concurrently(tmp_path):
    path = tmp_path / "shared.sqlite"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(p)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in range(4)
    ]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        outputs.append((proc.returncode, out.strip(), err[-500:]))
    assert [o[:2] for o in outputs] == [(0, f"done {p}") for p in range(4)], outputs
    cache = ReplyCache(path)
    assert len(cache) == 30 + 4 * 120
    assert cache.get("p3-149") == {"proc": 3, "i": 149}
    assert cache.get("shared-145")["i"] == 145
    cache.close()


def test_a_broken_cache_degrades_to_misses_not_failures(tmp_path, caplog, fake_backend):
    from whyrec.llm import LLMClient, LLMSettings

    cache = ReplyCache(tmp_path / "c.sqlite")
    sqlite3.connect(tmp_path / "c.sqlite").execute("DROP TABLE replies")
    client = LLMClient(LLMSettings.load(), backend=fake_backend(["a", "b"]), cache=cache)
    assert client.complete("x").text == "a"
    assert client.complete("x").text == "b"  # nothing could be cached, so asked again
    assert "lookup failed" in caplog.text and "store failed" in caplog.text
    assert cache.misses == 2
