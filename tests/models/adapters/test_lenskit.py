"""The LensKit adapter against the real LensKit, on MovieLens-100k's train split.

Every expected score below is LensKit's own: ``pipeline.run("scorer", query=..., items=...)``
with the same history, compared to what the adapter gives whyrec.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest

lenskit = pytest.importorskip(
    "lenskit", reason="LensKit is not installed (pip install 'whyrec[lenskit]')"
)

from lenskit import topn_pipeline  # noqa: E402
from lenskit.als import ImplicitMFScorer  # noqa: E402
from lenskit.data import ItemList, RecQuery, from_interactions_df  # noqa: E402
from lenskit.knn import ItemKNNScorer  # noqa: E402
from lenskit.pipeline import PipelineBuilder  # noqa: E402

from whyrec.data import load_dataset  # noqa: E402
from whyrec.errors import ModelError  # noqa: E402
from whyrec.models import load_model  # noqa: E402
from whyrec.models.adapters.lenskit import MODEL_FILE, SETTINGS_FILE, LensKitScorer  # noqa: E402
from whyrec.models.outside import OutsideModel  # noqa: E402

USER = "196"


@pytest.fixture(scope="module")
def ml100k():
    return load_dataset("movielens-100k")


@pytest.fixture(scope="module")
def lk_data(ml100k):
    """ML-100k's train split as a LensKit dataset, built with LensKit's own API."""
    train = ml100k.interactions[ml100k.interactions["split"] == "train"]
    df = pd.DataFrame(
        {
            "user_id": ml100k.users["user_id"].to_numpy()[train["user_idx"]],
            "item_id": ml100k.items["item_id"].to_numpy()[train["item_idx"]],
        }
    )
    return from_interactions_df(df)


@pytest.fixture(scope="module")
def knn_pipe(lk_data):
    pipe = topn_pipeline(ItemKNNScorer(max_nbrs=20, feedback="implicit"))
    pipe.train(lk_data)
    return pipe


@pytest.fixture(scope="module")
def als_pipe(lk_data):
    pipe = topn_pipeline(ImplicitMFScorer(embedding_size=16, epochs=4))
    pipe.train(lk_data)
    return pipe


@pytest.fixture(scope="module")
def knn(knn_pipe, ml100k):
    return OutsideModel.wrap(LensKitScorer(knn_pipe), ml100k)


@pytest.fixture(scope="module")
def als(als_pipe, ml100k):
    return OutsideModel.wrap(LensKitScorer(als_pipe), ml100k)


def lenskit_scores(pipe, model, history, user_id=USER):
    """LensKit's own scores for a history of whyrec item indices, as a whyrec row."""
    ids = model.item_ids[np.asarray(history)]
    vocab = pipe.component("scorer").items
    ids = [i for i in dict.fromkeys(ids[::-1]) if vocab.number(i, missing=None) is not None]
    query = RecQuery(user_id=user_id, history_items=ItemList(item_ids=ids[::-1]))
    out = pipe.run("scorer", query=query, items=ItemList(item_ids=vocab.ids()))
    row = np.full(model.n_items, -np.inf, dtype=np.float32)
    for item_id, s in zip(out.ids(), out.scores(), strict=True):
        row[model.item_index(item_id)] = -np.inf if np.isnan(s) else s
    return row


@pytest.mark.parametrize("which", ["knn", "als"])
def test_scores_are_lenskits_own(which, request, ml100k):
    model = request.getfixturevalue(which)
    pipe = request.getfixturevalue(f"{which}_pipe")
    u = model.user_index(USER)
    hist = model.histories[u]
    ours = model.score(user=u)
    np.testing.assert_allclose(ours, lenskit_scores(pipe, model, hist), rtol=1e-6)
    assert np.isfinite(ours).sum() > 1000  # most of the catalogue is scored
    # an anonymous history (no user) is scored from the history alone
    np.testing.assert_allclose(
        model.score(history=hist[:10]),
        lenskit_scores(pipe, model, hist[:10], user_id=None),
        rtol=1e-6,
    )


def test_knn_removal_is_lenskits_shorter_history(knn, knn_pipe):
    u = knn.user_index(USER)
    hist = knn.histories[u]
    item = int(knn.recommend(u, k=1).items[0])
    att = knn.attribution(item, u, top_history=3)
    assert att.history, "item-kNN attribution found no history item that matters"
    for effect in att.history:
        shorter = np.delete(hist, effect["position"])
        want = lenskit_scores(knn_pipe, knn, shorter)[item]
        assert effect["item"] == hist[effect["position"]]
        assert effect["score_drop"] == pytest.approx(att.score - want, rel=1e-5, abs=1e-6)
        assert effect["score_drop"] > 0


def test_als_folds_the_user_in_from_the_history(als, als_pipe):
    """ImplicitMF re-solves the user's embedding from the query items: a removal changes
    the scores, exactly as LensKit computes them for the shorter history."""
    u = als.user_index(USER)
    hist = als.histories[u]
    full = als.score(user=u)
    shorter = als.score(user=u, history=hist[1:])
    assert not np.allclose(full, shorter)
    np.testing.assert_allclose(shorter, lenskit_scores(als_pipe, als, hist[1:]), rtol=1e-5)
    assert als.has_attribution


def test_als_prefer_mode_ignores_history(lk_data, ml100k):
    pipe = topn_pipeline(ImplicitMFScorer(embedding_size=8, epochs=2, user_embeddings="prefer"))
    pipe.train(lk_data)
    model = OutsideModel.wrap(LensKitScorer(pipe), ml100k)
    u = model.user_index(USER)
    assert model.scorer.uses_history is False and not model.has_attribution
    np.testing.assert_array_equal(
        model.score(user=u), model.score(user=u, history=model.histories[u][:3])
    )


def test_component_and_custom_wiring_give_the_pipelines_scores(knn_pipe, knn, ml100k):
    """A bare scorer component, and a pipeline wired differently (run through
    ``pipeline.run``), score as the standard pipeline does."""
    comp = OutsideModel.wrap(LensKitScorer(knn_pipe.component("scorer")), ml100k)
    builder = PipelineBuilder()
    query = builder.create_input("query", RecQuery)
    items = builder.create_input("items", ItemList)
    builder.add_component("score-it", knn_pipe.component("scorer"), query=query, items=items)
    custom = LensKitScorer(builder.build(), node="score-it")
    assert knn.scorer._direct and not custom._direct
    custom_model = OutsideModel.wrap(custom, ml100k)
    u = knn.user_index(USER)
    np.testing.assert_array_equal(comp.score(user=u), knn.score(user=u))
    np.testing.assert_array_equal(custom_model.score(user=u), knn.score(user=u))


def test_unknown_items_are_minus_inf_and_left_out_of_queries(knn, knn_pipe):
    vocab = knn_pipe.component("scorer").items
    unknown = [i for i in range(knn.n_items) if vocab.number(knn.item_ids[i], missing=None) is None]
    assert unknown, "ML-100k has items only in valid/test, unknown to a train-split model"
    u = knn.user_index(USER)
    scores = knn.score(user=u)
    assert np.all(scores[unknown] == -np.inf)
    hist = knn.histories[u][:15]
    np.testing.assert_array_equal(
        knn.score(history=np.concatenate([hist, unknown])), knn.score(history=hist)
    )
    # duplicates count once, as in LensKit's de-duplicated histories
    np.testing.assert_array_equal(
        knn.score(history=np.concatenate([hist, hist[:3]])),
        knn.score(history=np.concatenate([hist[3:], hist[:3]])),
    )


def test_save_and_load_round_trip(knn, tmp_path):
    path = knn.save(tmp_path / "knn")
    settings = json.loads((path / "adapter" / SETTINGS_FILE).read_text())
    assert settings["kind"] == "pipeline" and settings["node"] == "scorer"
    assert len(settings["item_ids"]) == 1678 and settings["item_ids"][0] == "1"
    loaded = load_model(path)
    assert isinstance(loaded, OutsideModel) and loaded.adapter == "lenskit"
    u = knn.user_index(USER)
    np.testing.assert_array_equal(loaded.score(user=u), knn.score(user=u))
    assert loaded.recommend(u, k=5).items.tolist() == knn.recommend(u, k=5).items.tolist()

    # a pickle changed after saving is refused before it is unpickled
    pkl = path / "adapter" / MODEL_FILE
    pkl.write_bytes(pkl.read_bytes()[:-10])
    with pytest.raises(ModelError, match="sha256 .* does not match"):
        load_model(path)
    (path / "adapter" / SETTINGS_FILE).write_text("{not json")
    with pytest.raises(ModelError, match=r"settings.json:1: not valid JSON"):
        load_model(path)


def test_clear_errors(lk_data, ml100k, knn_pipe, monkeypatch):
    with pytest.raises(ModelError, match="feedback='implicit'"):
        LensKitScorer(topn_pipeline(ItemKNNScorer(feedback="explicit")))
    with pytest.raises(ModelError, match="use_ratings=False"):
        LensKitScorer(ImplicitMFScorer(use_ratings=True))
    with pytest.raises(ModelError, match="not trained"):
        LensKitScorer(topn_pipeline(ItemKNNScorer(feedback="implicit")))
    with pytest.raises(ModelError, match="no node 'ranker2'"):
        LensKitScorer(knn_pipe, node="ranker2")
    with pytest.raises(ModelError, match="expected a trained LensKit Pipeline"):
        LensKitScorer("pipeline.pkl")
    with pytest.raises(ModelError, match="no item id of the outside model is in the dataset"):
        OutsideModel.wrap(LensKitScorer(knn_pipe, item_ids=["x1", "x2"]), ml100k)
    with pytest.raises(ModelError, match="not bound"):
        LensKitScorer(knn_pipe).score([np.array([0, 1])], None)
    monkeypatch.setitem(sys.modules, "lenskit", None)
    with pytest.raises(ModelError, match=r"pip install 'whyrec\[lenskit\]'"):
        LensKitScorer(knn_pipe)


def test_explanation_cites_a_history_item(knn):
    from whyrec.explain.explainer import ExplanationPipeline

    u = knn.user_index(USER)
    item = int(knn.recommend(u, k=1).items[0])
    exp = ExplanationPipeline.from_run(knn, None).explain(item, u, use_llm=False)
    assert exp.reason_source == "template"
    cited = exp.cited["history"]
    assert cited and set(cited) <= set(knn.histories[u].tolist())
    assert any(str(knn.item_titles[i]) in exp.reason for i in cited), exp.reason


def _doc_blocks():
    """The LensKit section's Python block and console command in docs/outside-models.md."""
    import re
    from pathlib import Path

    doc = Path(__file__).resolve().parents[3] / "docs" / "outside-models.md"
    text = doc.read_text(encoding="utf-8")
    section = text.split("\n## LensKit\n", 1)[1].split("\n## ", 1)[0]
    python = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    console = re.search(r"```console\n\$ (.*?)\n```", section, re.S).group(1)
    quoted = re.search(r'The first reason reads\s+"(.*?)"', section, re.S).group(1)
    return python, console, " ".join(quoted.split())


def test_worked_example_in_the_docs_runs(tmp_path, monkeypatch, capsys):
    """The documented lines, run as written: train, wrap, save, explain top-3; then the
    documented ``whyrec explain`` command on the saved directory."""
    from typer.testing import CliRunner

    from whyrec.cli import app

    python, console, quoted = _doc_blocks()
    monkeypatch.chdir(tmp_path)
    exec(compile(python, "docs/outside-models.md#lenskit", "exec"), {})
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 3 and all(" - We suggest " in line for line in printed), printed
    assert printed[0] == f"Back to the Future (1985) - {quoted}", printed[0]

    argv = console.split()
    assert argv[:2] == ["whyrec", "explain"]
    res = CliRunner().invoke(app, argv[1:])
    assert res.exit_code == 0, res.output
    assert res.output.count("reason (template)") == 3
    assert "Back to the Future (1985)" in res.output
