import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from whyrec import __version__
from whyrec.cli import app

runner = CliRunner()


def test_version_and_help():
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and __version__ in res.output
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0 and "data" in res.output and "demo" in res.output


def test_prepare_table_and_describe(tmp_path):
    inter = tmp_path / "events.csv"
    inter.write_text(
        "uid,iid,ts\n"
        + "".join(f"u{u},i{(u + k) % 6},{100 * k + u}\n" for u in range(4) for k in range(5))
    )
    items = tmp_path / "items.csv"
    items.write_text("iid,name,kind\n" + "".join(f"i{k},Item {k},kind{k % 2}\n" for k in range(6)))
    out = tmp_path / "ds"
    res = runner.invoke(
        app,
        ["data", "prepare", str(inter), "--format", "table", "--items", str(items),
         "--user-col", "uid", "--item-col", "iid", "--time-col", "ts", "--title-col", "name",
         "--text-col", "kind", "--out", str(out)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "written" in res.output
    res = runner.invoke(app, ["data", "describe", str(out), "--json"])
    desc = json.loads(res.output)
    assert desc["users"] == 4 and desc["actions"] == 20 and desc["splits"]["test"] == 4


def test_cli_errors_are_one_clean_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "whyrec.cli.__main__", "data", "describe", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: ")
    assert "neither an existing dataset directory" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_demo_writes_the_split(tmp_path, monkeypatch):
    # the whole pipeline at its smallest: 1 LLM user, 1 epoch per model, 1 explanation
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--llm-users", "1", "--epochs", "1", "-k", "1"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "943" in res.output and "100,000" in res.output
    assert (out / "data" / "movielens-100k" / "manifest.json").is_file()
    assert (out / "report.html").is_file() and (out / "weights_users.png").is_file()
    summary = (out / "demo_summary.json").read_text()
    assert "sampled-100" in summary and "full" in summary
