"""The service on an outside model: by import path (with its dataset) and as a saved
model directory whose manifest names its adapter; explanations cite its history."""

from __future__ import annotations

import numpy as np

from whyrec.models import load_model


def test_serve_an_import_path_with_its_dataset(team_model, runs, make_settings, client_for):
    data = runs["root"] / "data"
    client = client_for(make_settings(team_model, dataset=str(data)))
    model = load_model(team_model, _dataset(data))
    got = client.get("/v1/users/u4/recommendations", params={"k": 4, "explain": "true"})
    assert got.status_code == 200, got.text
    items = got.json()["items"]
    want = model.recommend(model.user_index("u4"), k=4)
    assert [r["item_id"] for r in items] == want.item_ids
    ex = items[0]["explanation"]
    assert ex["reason_source"] == "template" and ex["preferences"] == []
    top = ex["history_effects"][0]["title"]
    assert top in ex["reason"]  # the history item whose removal lowers it most
    health = client.get("/health").json()
    assert health["status"] in ("ok", "degraded")


def test_serve_a_saved_outside_model_directory(
    team_model, runs, make_settings, client_for, tmp_path
):
    ds = _dataset(runs["root"] / "data")
    model = load_model(team_model, ds)
    model.save(tmp_path / "team-run")
    client = client_for(make_settings(tmp_path / "team-run"))
    got = client.get("/v1/users/u9/recommendations", params={"k": 3}).json()
    want = model.recommend(model.user_index("u9"), k=3)
    assert [r["item_id"] for r in got["items"]] == want.item_ids
    np.testing.assert_allclose([r["score"] for r in got["items"]], want.scores, rtol=1e-5)
    # a history the service has never seen: scored by the outside model too
    hist = {"item_ids": ["i0", "i1", "i2"]}
    r = client.post("/v1/recommendations", json={**hist, "k": 3})
    assert r.status_code == 200, r.text
    want = model.recommend(history=[model.item_index(i) for i in hist["item_ids"]], k=3)
    assert [x["item_id"] for x in r.json()["items"]] == want.item_ids


def test_an_import_path_without_a_dataset_is_refused(team_model, make_settings):
    import pytest

    from whyrec.errors import ConfigError
    from whyrec.serve.app import create_app

    with pytest.raises(ConfigError, match="dataset"):
        create_app(make_settings(team_model))


def _dataset(path):
    from whyrec.data import load_dataset

    return load_dataset(path)
