"""whyrec train / evaluate / recommend on a tiny dataset directory."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from whyrec.cli import app

# the fixtures module is loaded by path: "conftest" alone is ambiguous across test dirs
_spec = importlib.util.spec_from_file_location(
    "models_fixtures", Path(__file__).parent / "conftest.py"
)
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)
pattern_dataset = _fixtures.pattern_dataset

runner = CliRunner()
SMALL = ["--set", "dim=16", "--set", "max_len=12", "--set", "batch_size=16", "--epochs", "3"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    data = pattern_dataset().save(root / "data")
    out = root / "run"
    res = runner.invoke(
        app,
        [
            "train",
            "--model",
            "sasrec",
            "--data",
            str(data),
            "--out",
            str(out),
            "--no-progress",
            "--loss",
            "bce",
            *SMALL,
        ],
    )
    assert res.exit_code == 0, res.output
    return data, out, res.output


def test_train_writes_model_and_evaluation(run_dir):
    data, out, output = run_dir
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"] == "sasrec" and manifest["config"]["loss"] == "bce"
    assert manifest["config"]["dim"] == 16 and manifest["config"]["epochs"] == 3
    assert not (out / "checkpoints").exists()  # the finished model replaces the run dir
    ev = json.loads((out / "evaluation.json").read_text())
    # 30 items: too few for 100 sampled negatives, so only the full protocol is run
    assert [r["protocol"] for r in ev["results"]] == ["full"]
    assert "sampled protocol skipped" in output and "full ranking" in output


def test_evaluate_json(run_dir, tmp_path):
    data, out, _ = run_dir
    res = runner.invoke(
        app,
        [
            "evaluate",
            str(out),
            "--protocol",
            "sampled",
            "--negatives",
            "10",
            "--format",
            "json",
            "--no-save",
        ],
    )
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output)
    assert rep["results"][0]["protocol"] == "sampled-10"
    assert "10 negatives" in rep["results"][0]["label"]
    assert set(rep["results"][0]["metrics"]) >= {"HR@5", "NDCG@10", "MRR", "HR@20"}


def test_recommend_by_source_user_and_history(run_dir):
    _, out, _ = run_dir
    res = runner.invoke(app, ["recommend", str(out), "--user", "u7", "-k", "4", "--format", "json"])
    assert res.exit_code == 0, res.output
    payload = json.loads(res.output)
    assert len(payload["items"]) == 4 and payload["items"][0]["title"].startswith("Film number")
    res = runner.invoke(app, ["recommend", str(out), "--history", "m1,m2,m3", "-k", "3"])
    assert res.exit_code == 0 and "Film number" in res.output


def test_cli_errors_are_clear(run_dir, tmp_path):
    data, out, _ = run_dir
    res = runner.invoke(app, ["recommend", str(out), "--user", "nobody"])
    assert res.exit_code != 0 and "unknown user id 'nobody'" in str(res.exception)
    res = runner.invoke(app, ["recommend", str(out), "--history", "m1,zzz"])
    assert "unknown item id 'zzz'" in str(res.exception)
    res = runner.invoke(
        app, ["train", "--model", "sasrec", "--data", str(data), "--out", str(out), *SMALL]
    )
    assert "already holds a trained model" in str(res.exception)
    other = pattern_dataset(name="other", seed=5).save(tmp_path / "other")
    res = runner.invoke(app, ["evaluate", str(out), "--data", str(other)])
    assert "trained on dataset" in str(res.exception)
    res = runner.invoke(
        app, ["train", "--model", "nope", "--data", str(data), "--out", str(tmp_path / "x")]
    )
    assert "unknown model" in str(res.exception)


def test_main_turns_errors_into_one_line(run_dir, capsys, monkeypatch):
    from whyrec.cli import main

    _, out, _ = run_dir
    monkeypatch.setattr(sys, "argv", ["whyrec", "recommend", str(out), "--user", "nobody"])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2
    assert "error: unknown user id 'nobody'" in capsys.readouterr().err
