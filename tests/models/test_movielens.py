"""End to end on the real MovieLens-100k with the packaged MiniLM encoder (slow)."""

import json

import pytest
from typer.testing import CliRunner

from whyrec.cli import app

pytestmark = pytest.mark.slow
runner = CliRunner()


@pytest.fixture()
def ml100k(shared_home, monkeypatch):
    """The real dataset from the developer's cache (fetched once, embeddings reused)."""
    monkeypatch.setenv("WHYREC_HOME", str(shared_home))
    from whyrec.data import load_dataset

    return load_dataset("movielens-100k")


def test_sasrec_beats_popularity_after_a_few_epochs(ml100k):
    from whyrec.evaluate import evaluate
    from whyrec.models import create_model

    pop = evaluate(create_model("popularity").fit(ml100k), ml100k, protocols="full")
    sas = create_model("sasrec", epochs=4).fit(ml100k, progress=False)
    rep = evaluate(sas, ml100k)
    assert rep["full"].n_users == 943 and rep["sampled"].n_candidates == 101
    assert rep["full"]["NDCG@10"] > pop["full"]["NDCG@10"] * 1.2
    assert rep["sampled"]["NDCG@10"] > rep["full"]["NDCG@10"]  # sampled is the easier protocol


def test_cli_sasrec_text_train_evaluate_recommend(ml100k, tmp_path):
    out = tmp_path / "run"
    res = runner.invoke(
        app,
        [
            "train",
            "--model",
            "sasrec-text",
            "--data",
            "movielens-100k",
            "--out",
            str(out),
            "--epochs",
            "2",
            "--no-progress",
            "--no-evaluate",
        ],
    )
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dataset"]["name"] == "movielens-100k"
    assert manifest["training"]["encoder"].startswith("sentence-transformers:all-MiniLM-L6-v2")
    assert manifest["config"]["dropout"] == 0.2  # the dense-data default

    res = runner.invoke(app, ["evaluate", str(out), "--format", "json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output)
    assert [r["protocol"] for r in rep["results"]] == ["full", "sampled-100"]
    assert all(r["n_users"] == 943 for r in rep["results"])

    res = runner.invoke(
        app, ["recommend", str(out), "--user", "42", "-k", "10", "--format", "json"]
    )
    assert res.exit_code == 0, res.output
    items = json.loads(res.output)["items"]
    assert len(items) == 10 and all(i["title"] for i in items)
    seen = set(ml100k.user_sequences()[ml100k.user_index("42")].tolist())
    assert not seen & {i["item_idx"] for i in items}
