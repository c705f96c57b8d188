"""``whyrec batch explanations`` on an outside model named by its import path."""

from __future__ import annotations

from typer.testing import CliRunner

from whyrec.batch import read_output
from whyrec.cli import app


def test_batch_explanations_of_an_outside_model(
    endpoint, team_model, tiny_data_dir, tmp_path, monkeypatch
):
    for k, v in endpoint.env().items():
        monkeypatch.setenv(k, v)
    users = tmp_path / "users.txt"
    users.write_text("u2\nu7\n")
    out = tmp_path / "out"
    args = ["batch", "explanations", team_model, "--data", str(tiny_data_dir)]
    res = CliRunner().invoke(
        app, [*args, "--users", str(users), "--out", str(out), "-k", "2", "--no-progress"]
    )
    assert res.exit_code == 0, res.output
    df = read_output(out)
    assert sorted(df["key"]) == ["u2#1", "u2#2", "u7#1", "u7#2"]
    assert set(df["preference_source"]) == {"none"}
    assert df["reason"].str.len().min() >= 20
    # same model, same data: the job resumes; the import path without --data is refused
    res = CliRunner().invoke(app, [*args, "--users", str(users), "--out", str(out), "-k", "2"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["batch", "explanations", team_model, "--out", str(out)])
    assert res.exit_code != 0 and "--data" in str(res.exception)
