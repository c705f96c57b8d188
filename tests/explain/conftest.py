"""A scripted fake LLM backend for unit tests of prompting, parsing and fallback logic.

The real embedded model is exercised in the slow tests (test_real_model.py)."""

from __future__ import annotations

import json
import threading

import numpy as np
import pandas as pd
import pytest

from whyrec.data import RawData, build_dataset
from whyrec.llm import LLMClient
from whyrec.llm.backends.base import RawReply
from whyrec.llm.settings import LLMSettings


class ScriptedBackend:
    name = "fake"
    # a stand-in for an API endpoint: remote, priced (an unknown model has no price)
    is_local = False
    costs_money = True
    max_concurrency = None

    def __init__(self, replies):
        self.model = "scripted-1"
        self.replies = list(replies)
        self.calls = []
        self.lock = threading.Lock()

    def generate(self, messages, decoding):
        with self.lock:
            self.calls.append(messages)
            item = self.replies.pop(0) if self.replies else "{}"
        text = item(messages) if callable(item) else item
        return RawReply(text, 10, 10, "stop", self.model)

    def identity(self):
        return {"fake": True}

    def describe(self):
        return {"backend": "fake"}

    def close(self):
        pass


@pytest.fixture
def make_client():
    def make(replies, **settings):
        backend = ScriptedBackend(replies)
        client = LLMClient(
            LLMSettings(backend="local", max_reasks=settings.pop("max_reasks", 1), **settings),
            backend=backend,
            cache=False,
        )
        return client, backend

    return make


def prefs_json(*sentences):
    return json.dumps({"preferences": list(sentences)})


GOOD = [
    "Enjoys tense crime dramas",
    "Likes animated family adventures",
    "Loves classic black and white romance",
    "Prefers big science fiction spectacles",
    "Seeks out dark comedies with odd characters",
]


@pytest.fixture
def tiny_dataset():
    """Three taste groups of ten items; users watch within their group."""
    rng = np.random.default_rng(0)
    genres = ["Crime, Drama", "Animation, Children's", "Sci-Fi, Action"]
    rows = []
    for u in range(30):
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
    return build_dataset(RawData(inter, items), name="tiny")
