"""The outside-model core with the two adapters that need no extra package: a Python
function and a TorchScript file, on the tiny ring dataset (tests/models/conftest.py)."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch

from whyrec.errors import ConfigError, ModelError
from whyrec.explain.explainer import ExplanationPipeline
from whyrec.models import OutsideModel, load_model
from whyrec.models.adapters.plain import CallableScorer, TorchScriptScorer
from whyrec.models.outside import ItemMap, adapter_names, model_from_import

N = 30  # items of the ring dataset


def next_item_scores(histories):
    """A sequence model by hand: each history item votes for the item after it, recent
    items more (weight = position + 1)."""
    out = np.zeros((len(histories), N), np.float32)
    for r, h in enumerate(histories):
        for j, it in enumerate(h):
            out[r, (int(it) + 1) % N] += 1 + j
    return out


class MeanEmbedding(torch.nn.Module):
    """Mean of the history's item vectors, dotted with every item's vector."""

    def __init__(self, n: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.emb = torch.nn.Parameter(torch.randn(n, 8, generator=g))

    def forward(self, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = (items >= 0).to(torch.float32).unsqueeze(-1)
        e = self.emb[items.clamp(min=0)] * mask
        user = e.sum(1) / lengths.clamp(min=1).unsqueeze(-1).to(torch.float32)
        return user @ self.emb.T


def by_hand(emb: np.ndarray, history) -> np.ndarray:
    return emb[np.asarray(history)].mean(0) @ emb.T


def test_a_wrapped_function_recommends_and_explains_with_its_own_scores(seq_ds):
    model = OutsideModel.wrap(CallableScorer(next_item_scores), seq_ds)
    assert (model.adapter, model.has_preferences, model.has_attribution) == (
        "callable",
        False,
        True,
    )
    hist = model.histories[0]
    recs = model.recommend(0, k=3)
    want = next_item_scores([hist])[0].astype(np.float64)
    want[hist] = -np.inf
    assert int(recs.items[0]) == int(np.argmax(want))
    # evidence: removing the last history item removes exactly its vote
    item = (int(hist[-1]) + 1) % N
    (full, _), (without, _) = model.counterfactual(
        item, 0, removals=[_removal(len(hist) - 1)]
    )  # fmt: skip
    assert full - without == pytest.approx(len(hist))


def test_reasons_for_an_outside_model_cite_the_history_item_that_drives_it(seq_ds):
    model = OutsideModel.wrap(CallableScorer(next_item_scores), seq_ds)
    pipeline = ExplanationPipeline.from_run(model, None, dataset=seq_ds)
    item = int(model.recommend(0, k=1).items[0])
    ex = pipeline.explain(item, 0, use_llm=False)
    driver = str(model.item_titles[(item - 1) % N])  # the item whose vote it is
    assert driver in ex.reason
    assert ex.reason_source == "template"


def test_save_and_load_by_import_path(seq_ds, tmp_path, monkeypatch):
    (tmp_path / "team_model.py").write_text(
        textwrap.dedent(
            """
            import numpy as np

            def scores(histories):
                out = np.zeros((len(histories), 30), np.float32)
                for r, h in enumerate(histories):
                    for j, it in enumerate(h):
                        out[r, (int(it) + 1) % 30] += 1 + j
                return out

            def build(dataset):
                from whyrec.models.adapters.plain import CallableScorer
                return CallableScorer(scores)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    model = model_from_import("team_model:build", seq_ds)
    want = model.recommend(3, k=5)
    model.save(tmp_path / "run")
    again = load_model(tmp_path / "run", seq_ds)
    assert isinstance(again, OutsideModel) and again.adapter == "callable"
    np.testing.assert_array_equal(again.recommend(3, k=5).items, want.items)
    # load_model takes the import path too, with the dataset
    direct = load_model("team_model:build", seq_ds)
    np.testing.assert_array_equal(direct.recommend(3, k=5).items, want.items)
    with pytest.raises(ConfigError, match="--data"):
        load_model("team_model:build")
    with pytest.raises(ConfigError, match="no attribute"):
        load_model("team_model:nothing", seq_ds)


def test_a_closure_cannot_be_saved_and_says_why(seq_ds, tmp_path):
    model = OutsideModel.wrap(CallableScorer(lambda hs: next_item_scores(hs)), seq_ds)
    with pytest.raises(ModelError, match="module-level function"):
        model.save(tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (lambda hs: np.zeros((len(hs), N - 1)), r"shape \(1, 29\); expected \(1, 30\)"),
        (lambda hs: np.full((len(hs), N), np.nan), "NaN .*use -inf"),
        (lambda hs: [["x"] * N for _ in hs], "not numbers"),
    ],
)
def test_foreign_scores_are_checked(seq_ds, bad, match):
    model = OutsideModel.wrap(CallableScorer(bad), seq_ds)
    with pytest.raises(ModelError, match=match):
        model.recommend(0, k=3)


def test_item_ids_map_the_model_columns_and_unknown_items_are_never_recommended(seq_ds):
    # the team's model knows 20 of the 30 items, in its own (reversed) order
    known = [f"m{i}" for i in reversed(range(20))]
    seen = []

    def fn(histories):
        seen.extend(np.concatenate(histories).tolist())
        return np.tile(np.arange(20, dtype=np.float32), (len(histories), 1))

    model = OutsideModel.wrap(CallableScorer(fn, item_ids=known), seq_ds)
    scores = model.score(user=0)
    assert np.isneginf(scores[20:]).all()
    assert scores[0] == 19 and scores[19] == 0  # column 19 of the model is item m0
    assert max(seen) < 20  # the function saw its own columns, not whyrec's indices
    assert all(int(i) < 20 for i in model.recommend(0, k=25).items)
    with pytest.raises(ModelError, match="no item id of the outside model"):
        ItemMap.from_ids(list(model.item_ids), ["x1", "x2"])


def test_a_torchscript_file_scores_like_the_module_and_survives_save_load(seq_ds, tmp_path):
    module = torch.jit.script(MeanEmbedding(N))
    module.save(str(tmp_path / "team.pt"))
    emb = module.emb.detach().numpy()
    model = OutsideModel.wrap(TorchScriptScorer(tmp_path / "team.pt", batch_size=3), seq_ds)
    hists = [model.histories[u] for u in range(7)]  # 7 histories, batches of 3, padded
    got = model.score_batch(hists)
    want = np.stack([by_hand(emb, h) for h in hists])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    model.save(tmp_path / "run")
    again = load_model(tmp_path / "run", seq_ds)
    np.testing.assert_allclose(again.score_batch(hists), got, rtol=1e-6, atol=1e-6)
    assert again.attribution(int(again.recommend(0, k=1).items[0]), 0).history


def test_torchscript_inputs_are_checked(seq_ds, tmp_path):
    with pytest.raises(ModelError, match="TorchScript module"):
        TorchScriptScorer(MeanEmbedding(N))  # a plain nn.Module, not scripted
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="junk.pt is not a TorchScript file"):
        TorchScriptScorer(tmp_path / "junk.pt")


def test_adapters_are_listed_and_unknown_ones_named(seq_ds, tmp_path):
    assert {"callable", "torchscript", "implicit-als", "lenskit"} <= set(adapter_names())
    model = OutsideModel.wrap(CallableScorer(next_item_scores), seq_ds)
    model.config.adapter = "no-such-adapter"
    model.scorer.save = lambda d: (d / "settings.json").write_text("{}")
    model.save(tmp_path / "run")
    with pytest.raises(ModelError, match="unknown adapter 'no-such-adapter'"):
        load_model(tmp_path / "run")


def test_an_outside_model_is_not_trained_by_whyrec(seq_ds):
    model = OutsideModel.wrap(CallableScorer(next_item_scores), seq_ds)
    with pytest.raises(ModelError, match="trained with its own library"):
        model.fit(seq_ds)


def _removal(position: int):
    from whyrec.models.attribution import Removal

    return Removal(history=(position,))
