"""Fixtures for the service: tiny real runs (LANE and SASRec trained for 2 epochs on a
small synthetic dataset with genres), apps on a real SQLite file, and a real uvicorn
server on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from whyrec.data import RawData, build_dataset

os.environ.setdefault("WHYREC_THREADS", "1")

ENCODER = {"kind": "hashing", "dim": 48}
GENRES = ["Crime, Drama", "Animation, Children's", "Sci-Fi, Action"]


def tiny_dataset():
    """45 users in three taste groups of 12 items; 9 interactions each."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(45):
        g = u % 3
        for t, k in enumerate(rng.permutation(12)[:9]):
            rows.append((f"u{u}", f"i{g * 12 + k}", t))
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    items = pd.DataFrame(
        {
            "item_id": [f"i{k}" for k in range(36)],
            "title": [f"Film {k} ({1990 + k})" for k in range(36)],
            "genres": [GENRES[k // 12] for k in range(36)],
        }
    )
    return build_dataset(RawData(inter, items), name="tiny-serve")


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real model directories as ``whyrec train`` writes them (LANE and SASRec)."""
    from whyrec.embed import encoder_from_config
    from whyrec.explain.pipeline import extract_preferences, train_lane
    from whyrec.models import create_model

    root = tmp_path_factory.mktemp("serve_runs")
    ds = tiny_dataset()
    ds.save(root / "data")
    pset = extract_preferences(
        ds,
        client=None,
        encoder=encoder_from_config(ENCODER),
        llm_users=0,
        store=root / "prefs.sqlite",
        progress=False,
    )
    train_lane(
        ds, pset, out=root / "lane", progress=False, dim=32, max_len=16, epochs=2,
        encoder=ENCODER, batch_size=32, seed=0,
    )  # fmt: skip
    sas = create_model("sasrec", dim=16, max_len=16, epochs=2, batch_size=32, seed=0)
    sas.fit(ds, progress=False).save(root / "sasrec")
    return {"lane": root / "lane", "sasrec": root / "sasrec", "root": root}


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Any]:
    """ServeSettings on a fresh store file in the test's tmp dir (LLM off by default)."""
    from whyrec.serve import ServeSettings

    def make(run: Path, **kw: Any) -> ServeSettings:
        base = {"run": run, "store": tmp_path / "serve.sqlite", "llm": False}
        return ServeSettings(**{**base, **kw})

    return make


@pytest.fixture
def client_for() -> Iterator[Callable[..., Any]]:
    """A started TestClient (lifespan run) for a settings object; closed at teardown."""
    from fastapi.testclient import TestClient

    from whyrec.serve import create_app

    opened: list[TestClient] = []

    def make(settings: Any, **kw: Any) -> TestClient:
        c = TestClient(create_app(settings, **kw))
        c.__enter__()
        opened.append(c)
        return c

    yield make
    for c in opened:
        c.__exit__(None, None, None)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """uvicorn serving an app on 127.0.0.1 in a background thread."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture
def live_server() -> Iterator[Callable[[Any], LiveServer]]:
    started: list[LiveServer] = []

    def make(app: Any) -> LiveServer:
        srv = LiveServer(app).__enter__()
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.__exit__(None, None, None)


def wait_until(pred: Callable[[], Any], timeout: float = 30.0, every: float = 0.1) -> Any:
    """Poll ``pred`` until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        out = pred()
        if out:
            return out
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(every)


def wait_server_ready(proc: Any, port: int, log: Path, timeout: float = 90.0) -> str:
    """Wait until a ``whyrec serve`` subprocess answers /health; its base URL. Fails at
    once, with the end of its log, if the process exits first."""
    import httpx

    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early: {log.read_text()[-2000:]}")
        try:
            return httpx.get(url + "/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, timeout=timeout, every=0.2)
    return url
