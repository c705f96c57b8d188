"""The implicit adapters (ALS, BPR) against the real implicit package on MovieLens-100k."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from whyrec.data import load_dataset
from whyrec.errors import ModelError
from whyrec.models import load_model
from whyrec.models.attribution import Removal
from whyrec.models.outside import OutsideModel

implicit_als = pytest.importorskip("implicit.cpu.als")
implicit_bpr = pytest.importorskip("implicit.cpu.bpr")
from whyrec.models.adapters.implicit import (  # noqa: E402
    ImplicitScorer,
    bpr_optimum,
    interaction_matrix,
)

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def ml():
    return load_dataset("movielens-100k")


@pytest.fixture(scope="module")
def matrix(ml):
    return interaction_matrix(ml)  # (csr, user_ids, item_ids), train split, ones


def _als(x, **kw):
    kw = {"factors": 16, "iterations": 4, "regularization": 0.05, "random_state": 0, **kw}
    model = implicit_als.AlternatingLeastSquares(num_threads=1, **kw)
    model.fit(x, show_progress=False)
    return model


def _bpr(x):
    model = implicit_bpr.BayesianPersonalizedRanking(
        factors=16, iterations=20, random_state=0, num_threads=1
    )
    model.fit(x, show_progress=False)
    return model


@pytest.fixture(scope="module")
def als_model(ml, matrix):
    x, users, items = matrix
    als = _als(x, alpha=10.0)
    return als, OutsideModel.wrap(ImplicitScorer(als, x, user_ids=users, item_ids=items), ml)


@pytest.fixture(scope="module")
def bpr_model(ml, matrix):
    x, users, items = matrix
    bpr = _bpr(x)
    return bpr, OutsideModel.wrap(ImplicitScorer(bpr, x, user_ids=users, item_ids=items), ml)


def _row(cols, vals, n):
    cols = np.asarray(cols, dtype=np.int32)
    return sp.csr_matrix(
        (np.asarray(vals, dtype=np.float32), (np.zeros(len(cols), dtype=np.int32), cols)),
        shape=(1, n),
    )


# ------------------------------------------------------------------------ ALS
def test_als_recommendations_equal_implicits_recalculated_user(als_model, matrix):
    als, model = als_model
    x = matrix[0]
    assert model.adapter == "implicit-als"
    for u in (0, 195, 404, 942):
        train = x[u].indices  # the dataset's order = the matrix's order
        ours = model.recommend(u, history=train, k=10)
        ids, scores = als.recommend(u, x[u], N=10, recalculate_user=True)
        assert ours.items.tolist() == ids.tolist()
        np.testing.assert_allclose(ours.scores, scores, rtol=1e-4, atol=1e-5)


def test_als_counterfactual_equals_recalculating_by_hand(ml, matrix):
    # rating values and alpha != 1: the confidences come from the user's training row
    x, users, items = interaction_matrix(ml, values="rating")
    als = _als(x, alpha=4.0)
    model = OutsideModel.wrap(ImplicitScorer(als, x, user_ids=users, item_ids=items), ml)
    u = 195
    hist = model.histories[u]  # train + valid + test: the last two are not in the row
    item = int(model.recommend(u, k=1).items[0])
    row = {int(c): float(v) for c, v in zip(x[u].indices, x[u].data, strict=True)}
    conf = np.array([row.get(int(i), 1.0) for i in hist])  # 1.0: not in the training row
    assert (conf == 1.0).sum() >= 2 and set(conf) - {1.0}
    removals = [(0,), (len(hist) - 1,), (3, 7, 11)]
    got = model.counterfactual(item, u, removals=[Removal(history=r) for r in removals])
    for (score, _), removed in zip(got, [(), *removals], strict=True):
        keep = np.setdiff1d(np.arange(len(hist)), removed)
        vector = als.recalculate_user(0, _row(hist[keep], conf[keep], ml.n_items))
        assert score == pytest.approx(float(vector @ als.item_factors[item]), rel=1e-4, abs=1e-5)
    # the batched solve and re-scoring each shorter history agree on every item
    hists = [np.delete(hist, r) for r in removals]
    rescored = model.score_batch(hists, np.full(len(hists), u))
    own = model.scorer.counterfactual_scores(hist, u, removals)[1:]
    np.testing.assert_allclose(own, rescored, rtol=1e-4, atol=1e-4)


def test_als_attribution_tries_the_whole_history(als_model):
    _, model = als_model
    u = 12  # a long history: more than the default window of 50
    assert len(model.histories[u]) > 50
    item = int(model.recommend(u, k=1).items[0])
    att = model.attribution(item, u, top_history=1000)
    assert len(att.history) == len(model.histories[u])
    drops = [h["score_drop"] for h in att.history]
    assert drops == sorted(drops, reverse=True)
    assert att.history[0]["score_drop"] > 0


# ------------------------------------------------------------------------ BPR
def test_bpr_known_user_scores_with_its_learned_vector(bpr_model, matrix):
    bpr, model = bpr_model
    x = matrix[0]
    assert model.adapter == "implicit-bpr"
    for u in (0, 300, 942):
        ours = model.recommend(u, history=x[u].indices, k=10)
        ids, scores = bpr.recommend(u, x[u], N=10)
        assert ours.items.tolist() == ids.tolist()
        np.testing.assert_allclose(ours.scores, scores, rtol=1e-4, atol=1e-5)


def test_bpr_optimum_maximises_the_users_bpr_loss(bpr_model):
    bpr, _ = bpr_model
    factors = bpr.item_factors.astype(np.float64)
    positives = np.array([3, 10, 50, 172, 180])
    reg = float(bpr.regularization)

    def objective(u):  # every (positive, negative) pair written out
        x = factors[:, :-1] @ u + factors[:, -1]
        negatives = np.setdiff1d(np.arange(len(factors)), positives)
        diff = x[positives][:, None] - x[negatives][None, :]
        return np.mean(-np.logaddexp(0.0, -diff)) - reg / 2 * u @ u

    u = bpr_optimum(factors, positives, reg)
    best = objective(u)
    rng = np.random.default_rng(0)
    for _ in range(20):
        assert objective(u + 1e-2 * rng.standard_normal(len(u))) < best
    assert not bpr_optimum(factors, np.array([], dtype=np.int64), reg).any()


def test_bpr_removal_step_tracks_reoptimising(bpr_model):
    _, model = bpr_model
    u = 300
    hist = model.histories[u]
    item = int(model.recommend(u, k=1).items[0])
    removals = [(p,) for p in range(len(hist))] + [(0, 1, 2)]
    own = model.scorer.counterfactual_scores(hist, u, removals)
    # re-scoring each shorter history re-optimises the loss fully (no one-step estimate)
    exact = model.score_batch(
        [hist, *(np.delete(hist, r) for r in removals)], np.full(len(removals) + 1, u)
    )
    np.testing.assert_allclose(own[0], exact[0], rtol=1e-5, atol=1e-5)
    one_step, full = own[0, item] - own[1:, item], exact[0, item] - exact[1:, item]
    assert np.corrcoef(one_step, full)[0, 1] > 0.99
    assert np.abs(one_step - full).max() < 0.1 * np.abs(full).max()


def test_bpr_unknown_user_gets_the_optimum_of_its_history(ml, matrix):
    x, users, items = matrix
    bpr = _bpr(x[1:])
    model = OutsideModel.wrap(ImplicitScorer(bpr, x[1:], user_ids=users[1:], item_ids=items), ml)
    factors = bpr.item_factors.astype(np.float64)
    hist = model.histories[0]  # user "1" is not in the model
    u = bpr_optimum(factors, np.unique(hist), float(bpr.regularization))
    np.testing.assert_allclose(model.score(user=0), np.r_[u, 1.0] @ factors.T, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ save/load
@pytest.mark.parametrize("which", ["als_model", "bpr_model"])
def test_save_and_load_model_round_trip(which, request, tmp_path):
    _, model = request.getfixturevalue(which)
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert isinstance(loaded, OutsideModel) and loaded.adapter == model.adapter
    users = np.array([0, 5, 900])
    hists = [model.histories[u] for u in users]
    np.testing.assert_array_equal(loaded.score_batch(hists, users), model.score_batch(hists, users))
    item = int(model.recommend(5, k=1).items[0])
    assert loaded.attribution(item, 5).history == model.attribution(item, 5).history


def test_load_reports_missing_files(als_model, tmp_path):
    _, model = als_model
    model.save(tmp_path / "m")
    (tmp_path / "m" / "adapter" / "user_items.npz").unlink()
    with pytest.raises(ModelError, match="user_items.npz is missing"):
        load_model(tmp_path / "m")


# ---------------------------------------------------------- unknown ids
def test_items_and_users_the_model_does_not_know(ml, matrix):
    x, users, items = matrix
    drop_items = np.array([0, 49, 99])  # Toy Story and two others: not in the model
    keep_cols = np.setdiff1d(np.arange(x.shape[1]), drop_items)
    keep_rows = np.arange(1, x.shape[0])  # user "1" (index 0) is unknown to the model
    sub = x[keep_rows][:, keep_cols]
    als = _als(sub)
    scorer = ImplicitScorer(
        als,
        sub,
        user_ids=[users[r] for r in keep_rows],
        item_ids=[items[c] for c in keep_cols],
    )
    model = OutsideModel.wrap(scorer, ml)
    scores = model.score(user=3)
    assert np.isneginf(scores[drop_items]).all()
    assert np.isfinite(np.delete(scores, drop_items)).all()
    recs = model.recommend(3, k=ml.n_items)  # every scorable item
    assert not set(drop_items) & set(recs.items.tolist())
    assert len(recs) == ml.n_items - 3 - len(set(model.histories[3]) - set(drop_items))
    # user 0 is scored from its history alone: confidence 1.0 for each known item
    hist = model.histories[0]
    cols = scorer.item_map.to_columns(hist)
    vector = als.recalculate_user(0, _row(cols, np.ones(len(cols)), len(keep_cols)))
    want = vector @ als.item_factors.T
    np.testing.assert_allclose(model.score(user=0)[keep_cols], want, rtol=1e-4, atol=1e-5)
    # a row user: its row index maps through user_ids (user 3 is row 2 of the sub-matrix)
    vector = als.recalculate_user(0, sub[2])
    np.testing.assert_allclose(
        model.score(user=3, history=x[3].indices)[keep_cols],
        vector @ als.item_factors.T,
        rtol=1e-4,
        atol=1e-5,
    )


# ------------------------------------------------------------------ bad input
def test_wrong_inputs_give_clear_errors(ml, matrix, als_model):
    x, users, items = matrix
    als, _ = als_model
    with pytest.raises(ModelError, match="expected implicit.cpu.als.AlternatingLeastSquares"):
        ImplicitScorer(object(), x)
    untrained = implicit_als.AlternatingLeastSquares(factors=4, num_threads=1)
    with pytest.raises(ModelError, match="not trained"):
        ImplicitScorer(untrained, x)
    with pytest.raises(ModelError, match="scipy.sparse CSR matrix"):
        ImplicitScorer(als, x.toarray())
    with pytest.raises(ModelError, match=r"shape \(943, 1600\).*943 users and 1682 items"):
        ImplicitScorer(als, x[:, :1600])
    with pytest.raises(ModelError, match="3 item_ids for a user_items matrix with 1682 columns"):
        ImplicitScorer(als, x, item_ids=["1", "2", "3"])
    with pytest.raises(ModelError, match="user_ids repeats '1'"):
        ImplicitScorer(als, x, user_ids=["1"] * x.shape[0])
    with pytest.raises(ModelError, match="no item id of the outside model is in the dataset"):
        OutsideModel.wrap(ImplicitScorer(als, x, item_ids=[f"x{i}" for i in items]), ml)
    with pytest.raises(ModelError, match="not bound to a dataset"):
        ImplicitScorer(als, x).score([np.array([1, 2])], None)
    sub = _als(x[:, :1000])
    with pytest.raises(ModelError, match="has 1000 items but the dataset has 1682; give item_ids"):
        OutsideModel.wrap(ImplicitScorer(sub, x[:, :1000]), ml)


def test_missing_package_names_the_extra(monkeypatch, matrix):
    monkeypatch.setitem(sys.modules, "implicit.cpu.als", None)  # as if not installed
    with pytest.raises(ModelError, match=re.escape("pip install 'whyrec[implicit]'")):
        ImplicitScorer(object(), matrix[0])


# ------------------------------------------------------------------ explaining
def test_pipeline_explains_with_a_history_item(als_model):
    from whyrec.explain.explainer import ExplanationPipeline

    _, model = als_model
    user = model.user_index("196")
    item = int(model.recommend(user, k=1).items[0])
    explanation = ExplanationPipeline.from_run(model, None).explain(item, user, use_llm=False)
    cited = explanation.cited["history"]
    assert cited and set(cited) <= set(model.histories[user].tolist())
    assert str(model.item_titles[cited[0]]) in explanation.reason


def _docs_example() -> str:
    text = (ROOT / "docs" / "outside-models.md").read_text(encoding="utf-8")
    section = text.split("## implicit (ALS and BPR)", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "docs/outside-models.md: the implicit section has no python example"
    return blocks[0]


def test_docs_example_runs(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from whyrec.cli import app

    monkeypatch.chdir(tmp_path)
    code = _docs_example()
    namespace: dict = {}
    exec(compile(code, "docs/outside-models.md", "exec"), namespace)
    explanations = namespace["explanations"]
    assert len(explanations) == 3 and all(e.cited["history"] for e in explanations)
    saved = re.search(r'model\.save\("([^"]+)"\)', code).group(1)
    result = CliRunner().invoke(app, ["explain", saved, "--user", "196", "-k", "3", "--no-llm"])
    assert result.exit_code == 0, result.output
    assert explanations[0].title in result.output


def test_threads_follow_whyrec_setting(monkeypatch, matrix):
    x = matrix[0]
    als = _als(x[:50, :200], factors=4, iterations=1)
    monkeypatch.setenv("WHYREC_THREADS", "2")
    assert ImplicitScorer(als, x[:50, :200]).model.num_threads == 2
    monkeypatch.setenv("WHYREC_THREADS", "1")
    assert ImplicitScorer(als, x[:50, :200]).model.num_threads == 1
