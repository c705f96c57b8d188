"""Several processes opening one fresh SQLite file at the same instant must all succeed.

Turning WAL on needs exclusive access, and SQLite answers "database is locked" to the
loser of that race without waiting for the busy timeout (CI saw this once in the
embedding-cache writer test). The processes below spin until a shared start time so the
race is actually run; a plain ``sqlite3.connect`` + ``PRAGMA journal_mode=WAL`` lost it
in 18 of 120 openings on this machine.
"""

import subprocess
import sys
import textwrap
import time

import pytest

OPENERS = {
    "connect_wal": (
        "from whyrec.sqlite import connect_wal\n"
        "def open_(p): connect_wal(p, schema=['CREATE TABLE IF NOT EXISTS t (a)'])"
    ),
    "embedding_cache": (
        "from whyrec.embed import EmbeddingCache\ndef open_(p): EmbeddingCache(p).count()"
    ),
    "reply_cache": (
        "from whyrec.llm.cache import ReplyCache\ndef open_(p): ReplyCache(p).journal_mode()"
    ),
    "preference_store": (
        "from whyrec.explain.preferences import PreferenceStore\n"
        "def open_(p): PreferenceStore(p).get('u1')"
    ),
    "serve_store": (
        "from whyrec.serve.store import ServeStore\n"
        "def open_(p): assert ServeStore(p).journal_mode == 'wal'"
    ),
}

RUNNER = textwrap.dedent(
    """
    import sys, time
    {opener}
    start = float(sys.argv[2])
    while time.time() < start:
        pass
    open_(sys.argv[1])
    """
)


def _race(code: str, path, n: int = 4) -> list[str]:
    start = time.time() + 1.5  # after every interpreter has imported whyrec
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(path), str(start)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    errors = []
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        if proc.returncode != 0:
            errors.append(
                err.strip().splitlines()[-1] if err.strip() else f"exit {proc.returncode}"
            )
    return errors


@pytest.mark.parametrize("store", sorted(OPENERS))
def test_simultaneous_first_open(tmp_path, store):
    code = RUNNER.format(opener=OPENERS[store])
    rounds = 6 if store == "connect_wal" else 2
    for r in range(rounds):
        errors = _race(code, tmp_path / f"round{r}.sqlite")
        assert errors == [], f"{store}, round {r}: {errors}"
