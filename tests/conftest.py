"""Shared fixtures. Tests that touch real models or the real dataset are marked slow."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist every worker computes with one thread: two workers on two
    cores then keep both busy without oversubscribing them (llama.cpp's threads wait on
    each other and slow down many times over on a busy core)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ.setdefault("WHYREC_THREADS", "1")
        os.environ.setdefault("WHYREC_LLM_N_THREADS", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Test files that hold slow tests run first (in their own order): the workers start
    on the longest files and fill the end with short ones instead of one worker finishing
    a long file alone."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Give each test its own WHYREC_HOME unless it asks for the shared cache."""
    monkeypatch.setenv("WHYREC_HOME", str(tmp_path_factory.mktemp("whyrec_home")))
    yield


@pytest.fixture(scope="session")
def shared_home() -> Path:
    """The developer's real cache (for slow tests that reuse downloads and models)."""
    return Path(os.environ.get("WHYREC_TEST_SHARED_HOME", Path.home() / ".cache" / "whyrec"))


# ------------------------------------------------------------------ float32 comparisons
# Scores computed in different batch shapes (one row vs a batch of rows) go through
# different float32 kernels and differ in the last bits, by an amount that depends on the
# CPU (seen: 7e-7 on a score of 0.008 on one machine, 0 on another). Compare them with a
# tolerance scaled to the scores' magnitude, and compare rankings up to near-ties.
SCORE_RTOL = 1e-4
SCORE_ATOL = 1e-5


def scores_tolerance(scores) -> float:
    import numpy as np

    s = np.asarray(scores, dtype=np.float64)
    finite = s[np.isfinite(s)]
    scale = float(np.abs(finite).max()) if finite.size else 1.0
    return SCORE_ATOL * max(1.0, scale)


def assert_scores_close(got, want) -> None:
    """Scores from different batch shapes agree to float32 batch-arithmetic precision."""
    import numpy as np

    np.testing.assert_allclose(
        np.asarray(got, dtype=np.float64),
        np.asarray(want, dtype=np.float64),
        rtol=SCORE_RTOL,
        atol=scores_tolerance(want),
    )


def assert_same_ranking(got_items, got_scores, want_items, want_scores) -> None:
    """Two top-k lists agree: the same scores in order, and the same items except that
    items whose scores are within float tolerance of each other may swap places (and,
    at the cut-off, one near-tied item may stand in for another)."""
    import numpy as np

    got_items, want_items = list(map(int, got_items)), list(map(int, want_items))
    got_s, want_s = np.asarray(got_scores, float), np.asarray(want_scores, float)
    assert len(got_items) == len(want_items), (got_items, want_items)
    assert_scores_close(got_s, want_s)
    tol = 2 * (scores_tolerance(want_s) + SCORE_RTOL * np.abs(want_s).max(initial=0.0))
    i = 0
    while i < len(want_items):
        j = i + 1
        while j < len(want_items) and abs(want_s[j - 1] - want_s[j]) <= tol:
            j += 1
        a, b = set(got_items[i:j]), set(want_items[i:j])
        if j < len(want_items):
            assert a == b, f"ranks {i}..{j - 1}: got {sorted(a)}, want {sorted(b)}"
        else:  # the last group may be cut at k: differing items must be near-tied with it
            for pos in range(i, j):
                if got_items[pos] not in b:
                    assert abs(got_s[pos] - want_s[j - 1]) <= tol, (got_items, want_items)
        i = j


@pytest.fixture
def float32_checks():
    """``float32_checks.scores(got, want)`` and ``float32_checks.ranking(...)``."""
    import types

    return types.SimpleNamespace(scores=assert_scores_close, ranking=assert_same_ranking)


# ------------------------------------------------------------- an outside team model
TEAM_MODEL = '''
"""A team's own recommender, trained outside whyrec: item-to-item co-occurrence counts
from the training sequences; a history votes for the items that followed its items."""
import numpy as np


def build(dataset):
    from whyrec.models.adapters.plain import CallableScorer

    n = dataset.n_items
    follow = np.zeros((n, n), np.float32)
    for seq in dataset.user_sequences(("train",)):
        for a, b in zip(seq[:-1], seq[1:]):
            follow[a, b] += 1.0
    weights = np.log1p(follow)

    def scores(histories):
        out = np.zeros((len(histories), n), np.float32)
        for r, h in enumerate(histories):
            recency = 1.0 + np.arange(len(h), dtype=np.float32) / max(1, len(h))
            out[r] = recency @ weights[np.asarray(h)]
        return out

    return CallableScorer(scores)
'''


@pytest.fixture
def team_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The import path of an outside model (a module written for the test, importable)."""
    (tmp_path / "whyrec_team_model.py").write_text(TEAM_MODEL, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "whyrec_team_model:build"
