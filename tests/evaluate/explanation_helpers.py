"""Shared pieces of the explanation-quality tests: a small catalogue, hand-made cases, a
scripted LLM backend (for parsing and reconciliation logic only) and a tiny LANE model."""

from __future__ import annotations

import json
import threading

import numpy as np
import pandas as pd

from whyrec.evaluate.explanations import Catalogue, ExplanationCase
from whyrec.llm import LLMClient
from whyrec.llm.backends.base import RawReply
from whyrec.llm.settings import LLMSettings

TITLES = [
    "Toy Story (1995)",  # 0
    "Lion King, The (1994)",  # 1
    "Fargo (1996)",  # 2
    "Aladdin (1992)",  # 3
    "Star Wars (1977)",  # 4
    "Heat (1995)",  # 5
    "Shawshank Redemption, The (1994)",  # 6
    "Hamlet (1990)",  # 7
    "Hamlet (1996)",  # 8
    "Pulp Fiction (1994)",  # 9
]
TAGS = [
    "Animation|Children's|Comedy",
    "Animation|Children's|Musical",
    "Crime|Drama|Thriller",
    "Animation|Children's|Comedy|Musical",
    "Action|Adventure|Romance|Sci-Fi|War",
    "Action|Crime|Thriller",
    "Drama",
    "Drama",
    "Drama",
    "Crime|Drama",
]

PREFS = [
    "Enjoys tense crime dramas",
    "Likes animated family musicals",
    "Loves classic black and white romance",
    "Prefers big science fiction spectacles",
    "Seeks out dark comedies with odd characters",
]
WEIGHTS = [0.05, 0.5, 0.15, 0.1, 0.2]  # the animated-family preference drove the score
DROPS = [0.01, 0.9, 0.2, 0.05, 0.3]


def catalogue() -> Catalogue:
    return Catalogue(TITLES, TAGS)


def case(text: str | None, system: str = "s", **kw) -> ExplanationCase:
    """Target Aladdin (3) for a user who watched Toy Story, Lion King, Fargo and Heat;
    removing The Lion King lowers the score most, Heat raises it (negative drop)."""
    base = dict(
        system=system,
        user="u1",
        item=3,
        title=TITLES[3],
        text=text,
        source="llm",
        writer="hand-made",
        position="top",
        rank=1,
        preferences=list(PREFS),
        weights=list(WEIGHTS),
        preference_drops=list(DROPS),
        history=[0, 1, 2, 5],
        history_drops=[
            {"item": 1, "score_drop": 0.8},
            {"item": 0, "score_drop": 0.4},
            {"item": 2, "score_drop": 0.1},
            {"item": 5, "score_drop": -0.3},
        ],
        recent_titles=[TITLES[i] for i in (0, 1, 2, 5)],
    )
    base.update(kw)
    return ExplanationCase(**base)


# leans on the top-weighted preference and the two most influential history items
FAITHFUL = (
    "You love animated family musicals, and Aladdin is one: like The Lion King and "
    "Toy Story (1995), which you watched, it is bright, funny and made for the family."
)
# leans on the lowest-weighted preference and on the history item that lowers the score
UNFAITHFUL = (
    "You enjoy tense crime dramas, and Aladdin has its share of tension and crime. "
    "Heat showed you like that kind of story."
)
# names a catalogue title the user never watched and a title that does not exist
HALLUCINATING = (
    "You love animated family musicals, like Star Wars (1977) and the classic "
    "“The Midnight Garden”; Aladdin brings the same war adventure magic."
)


class ScriptedBackend:
    """Replies from a list (strings or callables of the messages); records every call."""

    name = "fake"
    # a stand-in for an API endpoint: remote, priced (an unknown model has no price)
    is_local = False
    costs_money = True
    max_concurrency = None

    def __init__(self, replies=(), default=None, model="scripted-judge-1"):
        self.model = model
        self.replies = list(replies)
        self.default = default
        self.calls = []
        self.lock = threading.Lock()

    def generate(self, messages, decoding):
        with self.lock:
            self.calls.append(messages)
            item = self.replies.pop(0) if self.replies else self.default
        text = item(messages) if callable(item) else item
        if text is None:
            text = "{}"
        return RawReply(text, 10, 10, "stop", self.model)

    def identity(self):
        return {"fake": True}

    def describe(self):
        return {"backend": "fake"}

    def close(self):
        pass


def scripted_client(replies=(), default=None, model="scripted-judge-1", max_reasks=1):
    backend = ScriptedBackend(replies, default, model)
    client = LLMClient(
        LLMSettings(backend="local", max_reasks=max_reasks), backend=backend, cache=False
    )
    return client, backend


def pair(a: str, b: str | None = None, c: str | None = None) -> str:
    return json.dumps({"informativeness": a, "persuasiveness": b or a, "helpfulness": c or a})


def tiny_dataset():
    """Three taste groups of ten titled items with genres; users watch within a group."""
    from whyrec.data import RawData, build_dataset

    rng = np.random.default_rng(0)
    genres = ["Crime|Drama", "Animation|Children's", "Sci-Fi|Action"]
    rows = []
    for u in range(24):
        g = u % 3
        for t, k in enumerate(rng.permutation(10)[:8]):
            rows.append((f"u{u}", f"i{g * 10 + k}", t))
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    items = pd.DataFrame(
        {
            "item_id": [f"i{k}" for k in range(30)],
            "title": [f"Film {k} ({1990 + k})" for k in range(30)],
            "genres": [genres[k // 10] for k in range(30)],
        }
    )
    return build_dataset(RawData(inter, items), name="tiny-expl")


def tiny_lane(ds, pref_dim: int = 12):
    from whyrec.models.lane import Lane

    rng = np.random.default_rng(0)
    prefs = rng.normal(size=(ds.n_users, 5, pref_dim)).astype(np.float32)
    m = Lane(dim=16, max_len=10, epochs=2, item_table="id", seed=0)
    m.set_preferences(prefs, [PREFS] * ds.n_users, ["llm"] * ds.n_users)
    return m.fit(ds, progress=False)


_ENCODER = []


def minilm():
    """The packaged MiniLM, loaded once per test session (loading costs seconds)."""
    if not _ENCODER:
        from whyrec.embed import get_encoder

        _ENCODER.append(get_encoder(cache=False))
    return _ENCODER[0]
