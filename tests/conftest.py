"""Shared fixtures. Tests that touch real models or the real dataset are marked slow."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Give each test its own WHYREC_HOME unless it asks for the shared cache."""
    monkeypatch.setenv("WHYREC_HOME", str(tmp_path_factory.mktemp("whyrec_home")))
    yield


@pytest.fixture(scope="session")
def shared_home() -> Path:
    """The developer's real cache (for slow tests that reuse downloads and models)."""
    return Path(os.environ.get("WHYREC_TEST_SHARED_HOME", Path.home() / ".cache" / "whyrec"))
