"""One id rule for ``whyrec data prepare`` and the HTTP API, and ids with "/" reachable.

Every id below is given to the JSON-lines loader and to ``POST /v1/interactions`` (and
to a ``/v1/users/{user}/...`` route): both must accept it or both must refuse it. Then a
run whose training users have "/" in their ids is served over a real uvicorn server and
each of them is reached through every user route, with the "/" sent as ``%2F`` and as
it is."""

from __future__ import annotations

import json
from urllib.parse import quote

import httpx
import pytest

from whyrec.data import RawData, build_dataset
from whyrec.data.ids import check_id
from whyrec.data.loaders.generic import load_table
from whyrec.errors import DataError

IDS = [
    ("u-new", True),
    ("team/alice", True),
    ("a/b/c/", True),
    ("50% off ?#&=", True),
    ("ünïcødé 名前", True),
    ("x" * 128, True),
    ("  padded  ", True),  # stripped, as at load
    ("x" * 129, False),
    (" ", False),
    ("NaN", False),
    ("nan", False),
    ("NULL", False),
    ("<NA>", False),
    ("3\x00", False),
    ("tab\there", False),
    ("esc\x1b[31m", False),
    ("c1\x85c1", False),
    ("abc\u202egpj.exe", False),
    ("iso\u2067late", False),
    ("lrm\u200e", False),
    ("line\u2028sep", False),
    (".", False),
    ("..", False),
]


def _loads(tmp_path, user: str) -> bool:
    path = tmp_path / "log.jsonl"
    rows = [{"user_id": user, "item_id": "i1", "timestamp": 1_600_000_000, "title": "A"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    try:
        load_table(path)
    except DataError:
        return False
    return True


@pytest.fixture
def lane_client(runs, make_settings, client_for):
    return client_for(make_settings(runs["lane"]))


@pytest.mark.parametrize(("user", "valid"), IDS, ids=[repr(u)[:24] for u, _ in IDS])
def test_the_loader_and_the_api_apply_one_id_rule(tmp_path, lane_client, user, valid):
    assert _loads(tmp_path, user) is valid
    r = lane_client.post("/v1/interactions", json={"user": user, "item_ids": ["i1", "i2"]})
    assert r.status_code == (200 if valid else 422), r.text
    if not valid:
        assert r.json()["detail"][0]["loc"] == ["body", "user"]
        with pytest.raises(ValueError):
            check_id(user)
        return
    stored = r.json()["user"]
    assert stored == user.strip() == check_id(user)
    path = quote(stored, safe="")
    history = lane_client.get(f"/v1/users/{path}/history")
    assert history.status_code == 200 and history.json()["user"] == stored
    assert history.json()["history_length"] == 2


def test_path_ids_follow_the_same_rule(lane_client):
    for user, status in (("NaN", 422), ("%00x", 422), ("a%E2%80%AEb", 422), ("x" * 129, 422)):
        r = lane_client.get(f"/v1/users/{user}/recommendations")
        assert r.status_code == status, (user, r.text)
        assert r.json()["detail"][0]["loc"] == ["path", "user"]
    assert lane_client.get("/v1/users/nobody/recommendations").status_code == 404


@pytest.fixture(scope="module")
def slash_run(tmp_path_factory):
    """A real SASRec run whose training users are "team/u0", "team/u1", ..."""
    import numpy as np
    import pandas as pd

    from whyrec.models import create_model

    rng = np.random.default_rng(1)
    rows = [
        (f"team/u{u}", f"i{(u % 3) * 8 + k}", t)
        for u in range(12)
        for t, k in enumerate(rng.permutation(8)[:6])
    ]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    items = pd.DataFrame({"item_id": [f"i{k}" for k in range(24)],
                          "title": [f"Film {k}" for k in range(24)]})  # fmt: skip
    ds = build_dataset(RawData(inter, items), name="slash-users")
    root = tmp_path_factory.mktemp("slash")
    ds.save(root / "data")
    model = create_model("sasrec", dim=16, max_len=8, epochs=1, batch_size=16, seed=0)
    return model.fit(ds, progress=False).save(root / "run")


def test_dataset_users_with_slashes_are_reachable_over_http(slash_run, make_settings, live_server):
    from whyrec.serve import create_app

    srv = live_server(create_app(make_settings(slash_run)))
    with httpx.Client(base_url=srv.url, timeout=30) as http:
        listed = [row["user"] for row in http.get("/v1/users?limit=100").json()["users"]]
        assert "team/u3" in listed and len(listed) == 12
        for user in listed:
            for path in (quote(user, safe=""), user):  # "%2F", and "/" as it is
                recs = http.get(f"/v1/users/{path}/recommendations", params={"k": 2})
                assert recs.status_code == 200 and recs.json()["user"] == user, recs.text
                hist = http.get(f"/v1/users/{path}/history")
                assert hist.status_code == 200 and hist.json()["history_length"] >= 3
                prefs = http.get(f"/v1/users/{path}/preferences")
                assert prefs.status_code == 200 and prefs.json()["user"] == user
        # a new user with "/" in its id, posted, then read back by path
        posted = http.post("/v1/interactions", json={"user": "team/new", "item_ids": ["i1"]})
        assert posted.status_code == 200, posted.text
        back = http.get("/v1/users/team%2Fnew/recommendations", params={"k": 2})
        assert back.status_code == 200 and back.json()["new_interactions"] == 1
