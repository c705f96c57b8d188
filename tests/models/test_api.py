"""Every model: fit / recommend / score / save / load round trip, and bad input."""

import json

import numpy as np
import pytest

from whyrec.errors import ConfigError, ModelError
from whyrec.evaluate import evaluate
from whyrec.models import MODELS, create_model, load_model, model_class
from whyrec.models.base import dataset_fingerprint

ALL = ["bpr-mf", "gru4rec", "popularity", "sasrec", "sasrec-text"]  # LANE has its own tests


@pytest.mark.parametrize("name", ALL)
def test_recommend_for_user_and_history(fitted, seq_ds, name):
    model = fitted[name]
    user = seq_ds.user_index("u3")
    recs = model.recommend(user, k=5)
    assert len(recs) == 5 and recs.user == user
    assert np.all(np.diff(recs.scores) <= 0)  # best first
    seen = set(seq_ds.user_sequences()[user].tolist())
    assert not seen & set(recs.items.tolist())  # exclude_seen by default
    assert recs.titles[0] == seq_ds.titles[recs.items[0]]
    assert recs.item_ids[0] == seq_ds.items["item_id"][recs.items[0]]
    rec = recs.to_records()[0]
    assert rec["rank"] == 1 and set(rec) == {"rank", "item_idx", "item_id", "title", "score"}

    hist = seq_ds.user_sequences()[user][:5]
    by_hist = model.recommend(history=hist, k=3, exclude=[int(recs.items[0])])
    assert not set(hist.tolist()) & set(by_hist.items.tolist())
    assert int(recs.items[0]) not in by_hist.items
    with_seen = model.recommend(history=hist, k=model.n_items, exclude_seen=False)
    assert len(with_seen) == model.n_items


@pytest.mark.parametrize("name", ALL)
def test_score_agrees_with_recommend(fitted, seq_ds, name):
    model = fitted[name]
    hist = seq_ds.user_sequences()[7]
    all_scores = model.score(hist)
    assert all_scores.shape == (seq_ds.n_items,) and all_scores.dtype == np.float32
    recs = model.recommend(history=hist, k=4)
    np.testing.assert_allclose(model.score(hist, recs.items), recs.scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.score(hist, [2, 0]), all_scores[[2, 0]], rtol=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_save_load_round_trip(fitted, seq_ds, name, tmp_path):
    model = fitted[name]
    path = model.save(tmp_path / name)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["model"] == model.name
    assert manifest["dataset"]["fingerprint"] == dataset_fingerprint(seq_ds) != ""
    assert manifest["whyrec_version"]
    loaded = load_model(path, seq_ds)
    assert type(loaded) is type(model) and loaded.config == model.config
    hists = seq_ds.user_sequences()[:6]
    users = np.arange(6)
    np.testing.assert_allclose(
        loaded.score_batch(hists, users), model.score_batch(hists, users), rtol=1e-5, atol=1e-6
    )
    u4 = model.user_index("u4")
    a, b = model.recommend(u4, k=5), loaded.recommend(u4, k=5)
    assert a.items.tolist() == b.items.tolist()
    assert loaded.user_index("u4") == model.user_index("u4")
    # the saved model alone answers by source ids, no dataset needed
    assert loaded.recommend(loaded.user_index("u4"), k=5).items.tolist() == a.items.tolist()


@pytest.mark.parametrize("name", ALL)
def test_bad_input_is_a_clear_error(fitted, seq_ds, name):
    model = fitted[name]
    n = seq_ds.n_users
    with pytest.raises(ModelError, match=rf"unknown user index {n}.*0..{n - 1}"):
        model.recommend(n)
    with pytest.raises(ModelError, match="unknown user index -1"):
        model.recommend(-1)
    with pytest.raises(ModelError, match="internal user index"):
        model.recommend("u1")
    with pytest.raises(ModelError, match="internal user index"):
        model.recommend(True)
    with pytest.raises(ModelError, match=r"unknown item indices in history: \[30\]"):
        model.recommend(history=[1, 30])
    with pytest.raises(ModelError, match="unknown item indices in items"):
        model.score([1, 2], [-1])
    with pytest.raises(ModelError, match="item indices"):
        model.recommend(history=[1.5, 2.0])
    with pytest.raises(ModelError, match="empty history"):
        model.recommend(history=[])
    with pytest.raises(ModelError, match="give a user"):
        model.recommend()
    with pytest.raises(ModelError, match="k must be"):
        model.recommend(0, k=0)
    with pytest.raises(ModelError, match="unknown user id"):
        model.user_index("nobody")
    with pytest.raises(ModelError, match="unknown item id"):
        model.item_index("m999")


def test_unfitted_and_unknown_options():
    with pytest.raises(ModelError, match="not fitted"):
        create_model("sasrec").recommend(0)
    with pytest.raises(ConfigError, match="unknown option"):
        create_model("sasrec", dimension=3)
    with pytest.raises(ConfigError, match="unknown model"):
        model_class("bert9rec")
    with pytest.raises(ConfigError, match="unknown loss"):
        create_model("sasrec", loss="hinge")
    assert model_class("sasrec-id").name == "sasrec"


def test_load_refuses_other_dataset_version_and_junk(fitted, seq_ds, other_ds, tmp_path):
    model = fitted["sasrec"]
    path = model.save(tmp_path / "m")
    with pytest.raises(ModelError, match="trained on dataset 'tiny-seq'.*'tiny-other'"):
        load_model(path, other_ds)
    with pytest.raises(ModelError, match="trained on dataset"):
        evaluate(load_model(path), other_ds)
    with pytest.raises(ModelError, match="not 'gru4rec'"):
        MODELS["gru4rec"].load(path)

    manifest = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps({**manifest, "whyrec_version": "9.3.0"}))
    with pytest.raises(ModelError, match="written by whyrec 9.3.0"):
        load_model(path)
    (path / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(ModelError, match="model format 99"):
        load_model(path)
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_model(path)
    with pytest.raises(ModelError, match="does not exist"):
        load_model(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="manifest.json missing"):
        load_model(tmp_path / "empty")


def test_load_detects_state_mismatch(fitted, tmp_path):
    model = fitted["sasrec"]
    path = model.save(tmp_path / "m")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["config"]["dim"] = 8
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="state does not match"):
        load_model(path)


def test_sequence_models_learn_what_popularity_cannot(fitted, seq_ds):
    full = {
        name: evaluate(m, seq_ds, protocols="full")["full"]["HR@5"] for name, m in fitted.items()
    }
    # flat popularity: the test item is essentially a random pick among ~20 unseen items
    assert full["popularity"] < 0.5
    for name in ("sasrec", "sasrec-text", "gru4rec"):
        assert full[name] > 0.8, (name, full)
