"""The HTTP API against the real app, real tiny models and a real SQLite file."""

from __future__ import annotations

import numpy as np
import pytest

from whyrec.models import load_model

from .conftest import wait_until


@pytest.fixture
def lane_client(runs, make_settings, client_for):
    return client_for(make_settings(runs["lane"]))


def test_health_and_openapi(lane_client, runs):
    h = lane_client.get("/health").json()
    assert h["status"] == "ok" and h["model"]["name"] == "lane"
    assert h["model"]["users"] == 45 and h["model"]["items"] == 36
    assert h["store"]["journal_mode"] == "wal"
    assert h["llm"]["state"] == "disabled" and h["auth"] is False
    spec = lane_client.get("/openapi.json").json()
    for path in (
        "/v1/users/{user}/recommendations",
        "/v1/recommendations",
        "/v1/users/{user}/preferences",
        "/v1/explanations",
        "/v1/interactions",
    ):
        assert path in spec["paths"]
    assert lane_client.get("/docs").status_code == 200


@pytest.mark.parametrize("kind", ["lane", "sasrec"])
def test_recommendations_are_the_models_top_k(
    kind, runs, make_settings, client_for, float32_checks
):
    model = load_model(runs[kind])
    client = client_for(make_settings(runs[kind]))
    app_service = client.app.state.service
    for user in ("u0", "u7", "u44"):
        got = client.get(f"/v1/users/{user}/recommendations", params={"k": 7}).json()
        want = model.recommend(model.user_index(user), k=7)
        # the service scores users in batches (precompute): float32 near-ties may swap
        float32_checks.ranking(
            [model.item_index(r["item_id"]) for r in got["items"]],
            [r["score"] for r in got["items"]],
            want.items,
            want.scores,
        )
        assert got["history_length"] == len(model.histories[model.user_index(user)])
    # the background precompute gives the same lists as the on-demand path
    wait_until(lambda: app_service.tops.precomputed == 45)
    again = client.get("/v1/users/u7/recommendations", params={"k": 7}).json()
    want = model.recommend(model.user_index("u7"), k=7)
    float32_checks.ranking(
        [model.item_index(r["item_id"]) for r in again["items"]],
        [r["score"] for r in again["items"]],
        want.items,
        want.scores,
    )


def test_lane_explanations_carry_reason_weights_and_attribution(lane_client):
    r = lane_client.get("/v1/users/u3/recommendations", params={"k": 3, "explain": "true"})
    assert r.status_code == 200
    items = r.json()["items"]
    assert len(items) == 3
    for it in items:
        ex = it["explanation"]
        assert ex["item_id"] == it["item_id"] and ex["title"] in ex["reason"]
        assert ex["reason_source"] == "template" and ex["llm_status"] == "disabled"
        assert "template" in ex["reason_note"] and ex["pending"] is False
        assert len(ex["weights"]) == 5 and abs(sum(ex["weights"]) - 1) < 1e-4
        assert [p["index"] for p in ex["preference_effects"]] == list(range(5))
        assert ex["history_effects"] and ex["rank"] == it["rank"]
        # the template cites the preference whose removal lowers this item's score most
        # (item-specific), not LANE's user-level top weight
        drops = [p["score_drop"] for p in ex["preference_effects"]]
        if max(drops) > 0:
            assert ex["preferences"][int(np.argmax(drops))].rstrip(".")[:60] in ex["reason"]
        assert ex["cache"] == "miss"
    again = lane_client.get("/v1/users/u3/recommendations", params={"k": 3, "explain": "true"})
    assert [it["explanation"]["cache"] for it in again.json()["items"]] == ["memory"] * 3
    assert [it["explanation"]["reason"] for it in again.json()["items"]] == [
        it["explanation"]["reason"] for it in items
    ]


def test_non_lane_run_explains_without_weights(runs, make_settings, client_for):
    client = client_for(make_settings(runs["sasrec"]))
    r = client.get("/v1/users/u1/recommendations", params={"k": 2, "explain": "true"}).json()
    ex = r["items"][0]["explanation"]
    assert ex["weights"] == [] and ex["preference_effects"] == []
    assert ex["history_effects"], "leave-one-out history attribution expected"
    drops = [h["score_drop"] for h in ex["history_effects"]]
    assert drops == sorted(drops, reverse=True)
    assert ex["reason_source"] == "template" and ex["title"] in ex["reason"]
    prefs = client.get("/v1/users/u1/preferences").json()
    assert prefs["model_has_preferences"] is False and prefs["preferences"] == []


def test_preferences_endpoint(lane_client, runs):
    model = load_model(runs["lane"])
    p = lane_client.get("/v1/users/u5/preferences").json()
    u = model.user_index("u5")
    assert [x["text"] for x in p["preferences"]] == model.preference_texts[u]
    w = model.preference_weights(u)
    assert np.allclose([x["weight"] for x in p["preferences"]], w, atol=1e-5)
    assert p["order"][0] == int(np.argmax(w))


def test_history_recommendations_by_ids_and_titles(lane_client):
    by_ids = lane_client.post("/v1/recommendations", json={"item_ids": ["i13", "i14"], "k": 4})
    by_titles = lane_client.post(
        "/v1/recommendations", json={"titles": ["film 13 (2003)", "Film 14"], "k": 4}
    )
    assert by_ids.status_code == by_titles.status_code == 200
    assert by_ids.json()["items"] == by_titles.json()["items"]
    got = {it["item_id"] for it in by_ids.json()["items"]}
    assert got.isdisjoint({"i13", "i14"}) and len(got) == 4
    assert by_ids.json()["user"] is None
    explained = lane_client.post(
        "/v1/recommendations", json={"item_ids": ["i13", "i14"], "k": 2, "explain": True}
    ).json()
    ex = explained["items"][0]["explanation"]
    assert ex["preference_source"] == "fallback" and len(ex["weights"]) == 5


def test_black_box_explanation_of_any_item(lane_client):
    # an item an external recommender chose (ranked low by our model) gets the same evidence
    r = lane_client.post("/v1/explanations", json={"user": "u0", "item_id": "i30"})
    assert r.status_code == 200
    ex = r.json()
    assert ex["item_id"] == "i30" and ex["rank"] >= 1 and ex["user"] == "u0"
    assert len(ex["preference_effects"]) == 5
    by_title = lane_client.post(
        "/v1/explanations", json={"titles": ["Film 1", "Film 2"], "item_title": "Film 30 (2020)"}
    ).json()
    assert by_title["item_id"] == "i30" and by_title["user"] is None


def test_validation_errors(lane_client, runs, make_settings, client_for):
    c = lane_client
    for k in (0, -1, 101):
        r = c.get("/v1/users/u0/recommendations", params={"k": k})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "k"]
    assert c.get("/v1/users/u0/recommendations", params={"k": "ten"}).status_code == 422
    r = c.get("/v1/users/nobody/recommendations")
    assert r.status_code == 404 and "unknown user 'nobody'" in r.json()["detail"]
    assert c.get("/v1/users/nobody/preferences").status_code == 404
    assert c.post("/v1/explanations", json={"user": "nobody", "item_id": "i1"}).status_code == 404
    # malformed bodies
    bad = c.post(
        "/v1/recommendations", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert bad.status_code == 422
    assert c.post("/v1/recommendations", json={"k": 3}).status_code == 422  # no history
    both = {"item_ids": ["i1"], "titles": ["Film 1"]}
    assert c.post("/v1/recommendations", json=both).status_code == 422
    assert c.post("/v1/recommendations", json={"item_ids": "i1"}).status_code == 422
    assert c.post("/v1/recommendations", json={"item_ids": ["i1"], "extra": 1}).status_code == 422
    r = c.post("/v1/recommendations", json={"item_ids": ["i1"], "k": 500})
    assert r.status_code == 422 and "between 1 and 100" in r.json()["detail"][0]["msg"]
    r = c.post("/v1/recommendations", json={"titles": ["Film 1", "No Such Film"]})
    assert r.status_code == 422
    d = r.json()["detail"][0]
    assert d["loc"] == ["body", "titles", 1] and "No Such Film" in d["msg"]
    r = c.post("/v1/interactions", json={"user": "u0", "item_ids": ["i1", "zz9"]})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "item_ids", 1]
    assert c.post("/v1/interactions", json={"user": "", "item_ids": ["i1"]}).status_code == 422
    r = c.post("/v1/explanations", json={"user": "u0", "item_id": "nope"})
    assert r.status_code == 422 and "nope" in r.json()["detail"][0]["msg"]
    # a smaller configured limit on posted histories
    small = client_for(make_settings(runs["lane"], max_history=3, store=runs["root"] / "x.db"))
    r = small.post("/v1/recommendations", json={"item_ids": ["i1", "i2", "i3", "i4"]})
    assert r.status_code == 422 and "at most 3" in r.json()["detail"][0]["msg"]


def test_interactions_are_used_for_the_next_recommendation(lane_client):
    before = lane_client.get("/v1/users/u2/recommendations", params={"k": 3}).json()
    top = [it["item_id"] for it in before["items"]]
    r = lane_client.post("/v1/interactions", json={"user": "u2", "item_ids": top[:2]})
    assert r.status_code == 200
    assert r.json()["added"] == 2 and r.json()["new_interactions"] == 2
    after = lane_client.get("/v1/users/u2/recommendations", params={"k": 3}).json()
    assert (
        after["new_interactions"] == 2 and after["history_length"] == before["history_length"] + 2
    )
    assert not set(top[:2]) & {it["item_id"] for it in after["items"]}
    hist = lane_client.get("/v1/users/u2/history", params={"limit": 3}).json()
    assert [h["item_id"] for h in hist["items"][:2]] == [top[1], top[0]]
    assert [h["source"] for h in hist["items"]] == ["api", "api", "training"]
    # a new user is created by its first interactions
    assert lane_client.get("/v1/users/newbie/recommendations").status_code == 404
    lane_client.post("/v1/interactions", json={"user": "newbie", "titles": ["Film 25"]})
    r = lane_client.get("/v1/users/newbie/recommendations", params={"k": 2, "explain": True})
    assert r.status_code == 200 and r.json()["history_length"] == 1
    users = lane_client.get("/v1/users", params={"offset": 45}).json()
    assert users["total"] == 46 and users["users"][0]["user"] == "newbie"


def test_restart_keeps_interactions_and_explanations(runs, make_settings, client_for):
    settings = make_settings(runs["lane"])
    first = client_for(settings)
    first.post("/v1/interactions", json={"user": "u9", "item_ids": ["i20", "i21"]})
    first.post("/v1/interactions", json={"user": "fresh", "item_ids": ["i4"]})
    ex1 = first.post("/v1/explanations", json={"user": "u9", "item_id": "i33"}).json()
    assert ex1["cache"] == "miss"
    first.__exit__(None, None, None)  # stop the app: store closed

    second = client_for(settings)
    hist = second.get("/v1/users/u9/history", params={"limit": 2}).json()
    assert [h["item_id"] for h in hist["items"]] == ["i21", "i20"]
    assert second.get("/v1/users/fresh/history").json()["history_length"] == 1
    ex2 = second.post("/v1/explanations", json={"user": "u9", "item_id": "i33"}).json()
    assert ex2["cache"] == "store" and ex2["reason"] == ex1["reason"]
    assert ex2["history_effects"] == ex1["history_effects"]


def test_cached_explain_responses_do_not_change_across_calls(lane_client):
    params = {"k": 4, "explain": "true"}
    first = lane_client.get("/v1/users/u11/recommendations", params=params).json()
    second = lane_client.get("/v1/users/u11/recommendations", params=params).content
    third = lane_client.get("/v1/users/u11/recommendations", params=params).content
    assert second == third  # served from the response cache, byte for byte
    assert [i["explanation"]["reason"] for i in first["items"]] == [
        i["explanation"]["reason"]
        for i in lane_client.get("/v1/users/u11/recommendations", params=params).json()["items"]
    ]
