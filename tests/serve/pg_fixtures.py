"""A throwaway PostgreSQL server for the shared-store tests, started by
``scripts/ensure_postgres.sh`` (Debian's package) once per session and stopped at the end;
each test gets a database of its own.

``$WHYREC_TEST_PG_URL`` names an existing server instead (its user must be allowed to
create databases). Without PostgreSQL the tests are skipped with a warning, except under
CI (``$CI`` set), where that is a failure.
"""

from __future__ import annotations

import os
import subprocess
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "ensure_postgres.sh"


def _unavailable(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL is required under CI: {why}")
    warnings.warn(f"PostgreSQL store tests skipped: {why}", stacklevel=2)
    pytest.skip(f"no PostgreSQL: {why}")


def _start_cluster() -> dict[str, str]:
    """A throwaway cluster from scripts/ensure_postgres.sh: its ``url`` and ``dir``."""
    try:
        proc = subprocess.run(
            ["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=300
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        _unavailable(f"{SCRIPT.name} start: {exc}")
    if proc.returncode != 0:
        _unavailable(f"{SCRIPT.name} start failed: {proc.stderr.strip()[-1500:]}")
    return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """The URL of a PostgreSQL server whose user may create databases."""
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed (pip install 'whyrec[postgres]')")
    given = os.environ.get("WHYREC_TEST_PG_URL")
    if given:
        yield given
        return
    out = _start_cluster()
    try:
        yield out["url"]
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", out["dir"]], timeout=120, check=False)
        assert not Path(out["dir"]).exists(), "the test cluster's directory was left behind"


def with_dbname(url: str, dbname: str) -> str:
    head, _, tail = url.rpartition("/")
    query = tail.partition("?")[2]
    return f"{head}/{dbname}" + (f"?{query}" if query else "")


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty database on the session's server (dropped afterwards)."""
    import psycopg

    name = "whyrec_t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(pg_server, autocommit=True) as con:
        con.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_dbname(pg_server, name)
    finally:
        with psycopg.connect(pg_server, autocommit=True) as con:
            con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Cluster:
    """A throwaway PostgreSQL cluster of one test, whose server can be stopped and
    started again on the same port (``ensure_postgres.sh halt`` / ``resume``)."""

    def __init__(self, url: str, directory: str) -> None:
        self.url = url
        self.dir = directory

    def _script(self, cmd: str) -> None:
        proc = subprocess.run(
            ["bash", str(SCRIPT), cmd, self.dir], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, f"ensure_postgres.sh {cmd}: {proc.stderr[-1500:]}"

    def halt(self) -> None:
        """Stop the server (``pg_ctl -m fast stop``: sessions are ended, nothing listens)."""
        self._script("halt")

    def resume(self) -> None:
        """Start it again (returns once it accepts connections)."""
        self._script("resume")


@pytest.fixture
def pg_cluster() -> Iterator[Cluster]:
    """A cluster of this test's own (its server is stopped and started by the test)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed (pip install 'whyrec[postgres]')")
    out = _start_cluster()
    try:
        yield Cluster(out["url"], out["dir"])
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", out["dir"]], timeout=120, check=False)
