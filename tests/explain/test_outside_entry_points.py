"""``whyrec explain`` and ``whyrec evaluate-explanations`` on an outside model named by
its import path, with the dataset it was trained on (--data)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from whyrec.cli import app


@pytest.fixture
def data_dir(tmp_path, tiny_dataset):
    return tiny_dataset.save(tmp_path / "data")


def test_explain_takes_an_import_path_and_cites_the_history(team_model, data_dir):
    res = CliRunner().invoke(
        app,
        ["explain", team_model, "--data", str(data_dir), "--user", "u4", "-k", "2",
         "--no-llm", "--format", "json"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    rows = out if isinstance(out, list) else out["explanations"]
    assert len(rows) == 2
    for row in rows:
        assert row["reason_source"] == "template"
        titles = {h["item"]: h["title"] for h in row["history_effects"]}
        cited = row["cited"]["history"]
        assert cited and titles[cited[0]] in row["reason"]
        # the cited item is the one whose removal lowers the score most
        assert cited[0] == row["history_effects"][0]["item"]


def test_an_import_path_without_data_is_a_clear_error(team_model):
    res = CliRunner().invoke(app, ["explain", team_model, "--user", "u4", "--no-llm"])
    assert res.exit_code != 0
    assert "--data" in str(res.exception) + res.output


def test_evaluate_explanations_scores_an_outside_model(team_model, data_dir, tmp_path):
    out = tmp_path / "report.json"
    res = CliRunner().invoke(
        app,
        ["evaluate-explanations", team_model, "--data", str(data_dir), "-n", "4",
         "--systems", "template", "--positions", "top", "--no-judge", "--out", str(out),
         "--format", "json"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    metrics = {r["metric"]: r for r in report["summary"] if r["system"] == "template"}
    assert metrics["necessity_win"]["n"] == 4 and metrics["necessity_win"]["mean"] >= 0.75
    assert metrics["invented_titles"]["mean"] == 0 and metrics["unsupported_genres"]["mean"] == 0
