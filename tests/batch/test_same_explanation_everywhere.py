"""One (run, user, item, LLM settings) gives one explanation, whichever entry point asks:
``whyrec explain``, the HTTP service, ``whyrec batch explanations`` and the
explanation-quality harness all run the same pipeline on the same item facts.

The LLM is the deterministic OpenAI-compatible stub endpoint (a real HTTP server), so
the reply to a prompt is the same for everyone and any difference in the prompt, the
evidence, the verification or the fallback shows up as a difference here."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from whyrec.batch import BatchOptions, ExplanationJob, run_batch
from whyrec.batch.jobs import read_explanations
from whyrec.data import build_dataset, load_dataset
from whyrec.llm import LLMClient
from whyrec.llm.settings import LLMSettings

from .conftest import tiny_raw

COMPARED = (
    "item_id", "title", "rank", "reason", "reason_source", "cited", "item_facts",
    "preferences", "preference_source", "removed_sentences", "prompt_version",
)  # fmt: skip


@pytest.fixture
def run_dir(tmp_path):
    """A LANE run whose dataset is a directory on disk (so item facts resolve from it)."""
    from whyrec.explain.fallback import fallback_preferences
    from whyrec.models.lane import Lane

    build_dataset(tiny_raw(), name="tiny").save(tmp_path / "data")
    ds = load_dataset(tmp_path / "data")
    seqs = ds.user_sequences(("train",))
    texts = [
        fallback_preferences(
            [ds.titles[i] for i in seqs[u]], [str(ds.items["genres"].iloc[i]) for i in seqs[u]],
            3, None,
        )
        for u in range(ds.n_users)
    ]  # fmt: skip
    vectors = np.random.default_rng(0).normal(size=(ds.n_users, 3, 8)).astype(np.float32)
    model = Lane(dim=16, max_len=10, epochs=2, item_table="id", seed=0)
    model.set_preferences(vectors, texts, ["fallback"] * ds.n_users)
    model.fit(ds, progress=False).save(tmp_path / "run")
    return tmp_path / "run"


def _client(endpoint) -> LLMClient:
    return LLMClient(
        LLMSettings.load(
            backend="openai",
            model="stub-1",
            base_url=endpoint.base_url,
            max_retries=0,
            cache=False,
            concurrency=1,
        )  # fmt: skip
    )


def _view(d: dict) -> dict:
    out = {k: d[k] for k in COMPARED}
    out["preference_effects"] = [
        (p["index"], round(p["score_drop"], 5), p["rank_without"]) for p in d["preference_effects"]
    ]
    out["history_effects"] = [
        (h["item"], round(h["score_drop"], 5), h["rank_without"]) for h in d["history_effects"]
    ]
    return out


def test_cli_serve_batch_and_harness_give_the_same_explanation(
    endpoint, run_dir, tmp_path, monkeypatch
):
    from fastapi.testclient import TestClient

    from whyrec.cli import app
    from whyrec.evaluate.explanations import evaluate_explanations
    from whyrec.models import load_model
    from whyrec.serve import ServeSettings, create_app

    model = load_model(run_dir)
    user = "u4"
    u = model.user_index(user)
    item = int(model.recommend(u, k=1).items[0])

    # 1. whyrec explain --format json
    monkeypatch.setenv("WHYREC_HOME", str(tmp_path / "home"))
    for k, v in endpoint.env().items():
        monkeypatch.setenv(k, v)
    res = CliRunner().invoke(
        app, ["explain", str(run_dir), "--user", user, "--item", str(model.item_ids[item]),
              "--format", "json"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    [cli] = json.loads(res.stdout)

    # 2. the HTTP service (waits for the LLM job within its budget)
    settings = ServeSettings(
        run=run_dir, store=tmp_path / "serve.sqlite", llm=True, explain_budget_s=60,
        precompute=False,
    )  # fmt: skip
    with TestClient(create_app(settings, llm_client=_client(endpoint))) as http:
        r = http.get(f"/v1/users/{user}/recommendations", params={"k": 1, "explain": "true"})
        assert r.status_code == 200, r.text
        served = r.json()["items"][0]["explanation"]
    assert served["llm_status"] == "done", served
    served["model"] = served.pop("llm_model")

    # 3. a batch job
    out = tmp_path / "batch"
    client = _client(endpoint)
    report = run_batch(
        ExplanationJob(run_dir, client=client, k=1), out, client=client,
        options=BatchOptions(progress=False),
    )  # fmt: skip
    assert report.status == "complete"
    [batch] = [e.to_dict() for e in read_explanations(out) if e.user == user]

    # 4. the evaluation harness (LANE system, the user's top item)
    rep = evaluate_explanations(
        model, client=_client(endpoint), dataset=load_dataset(tmp_path / "data"),
        user_indices=[u], systems=["lane"], positions=["top"], rubric=False, pairwise=False,
    )  # fmt: skip
    [case] = rep.cases

    assert cli["reason_source"] in ("llm", "llm+template") and cli["item_facts"], cli
    assert _view(served) == _view(cli)
    assert _view(batch) == _view(cli)
    assert (case.text, case.source) == (cli["reason"], cli["reason_source"])
    assert case.details["cited"] == cli["cited"]
