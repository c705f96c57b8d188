"""``whyrec explain`` from the command line: the item evidence and record layout, and a
clear non-zero exit when the LLM cannot be reached at all (templates still printed)."""

from __future__ import annotations

import json
import socket

import numpy as np
from typer.testing import CliRunner

from whyrec.cli import app
from whyrec.models.lane import Lane

from .conftest import GOOD


def _run(ds, tmp_path):
    ds.save(tmp_path / "data")
    from whyrec.data import load_dataset

    ds = load_dataset(tmp_path / "data")
    prefs = np.random.default_rng(0).normal(size=(ds.n_users, 5, 12)).astype(np.float32)
    m = Lane(dim=16, max_len=10, epochs=2, item_table="id", seed=0)
    m.set_preferences(prefs, [GOOD] * ds.n_users, ["llm"] * ds.n_users)
    return m.fit(ds, progress=False).save(tmp_path / "run")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_explain_without_llm_prints_item_evidence_records(tiny_dataset, tmp_path):
    run = _run(tiny_dataset, tmp_path)
    res = CliRunner().invoke(app, ["explain", str(run), "-u", "u0", "-k", "2", "--no-llm",
                                   "--format", "json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    recs = json.loads(res.stdout)
    assert len(recs) == 2
    for r in recs:
        assert r["reason_source"] == "template" and r["item_facts"]  # genres resolved
        drops = {p["index"]: p["score_drop"] for p in r["preference_effects"]}
        assert all(drops[j] > 0 for j in r["cited"]["preferences"])


def test_explain_exits_non_zero_when_the_llm_is_unreachable(tiny_dataset, tmp_path, monkeypatch):
    run = _run(tiny_dataset, tmp_path)
    monkeypatch.setenv("WHYREC_HOME", str(tmp_path / "home"))
    for k, v in {
        "WHYREC_LLM_BACKEND": "openai", "WHYREC_LLM_MODEL": "down-1",
        "WHYREC_LLM_BASE_URL": f"http://127.0.0.1:{_free_port()}/v1",
        "WHYREC_LLM_MAX_RETRIES": "0", "WHYREC_LLM_CACHE": "false",
    }.items():  # fmt: skip
        monkeypatch.setenv(k, v)
    res = CliRunner().invoke(app, ["explain", str(run), "-u", "u0", "-k", "1", "--format", "json"])
    assert res.exit_code == 1
    [rec] = json.loads(res.stdout)
    assert rec["reason_source"] == "template" and rec["llm_outage"] is True
    assert "could not be reached" in res.stderr
