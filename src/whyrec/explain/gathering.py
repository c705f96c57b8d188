"""The evidence room: who is explained, and what the model's counterfactuals say for one item.

:class:`EvidenceGatherer` turns a known user or an explicit history (with preferences
given, or — LANE — extracted now) into a :class:`~whyrec.explain.record.Subject`, and asks
the recommender's attribution how much one item's score falls without each preference and
each recent history item; :func:`whyrec.explain.evidence.select_evidence` then chooses
what a reason for that item may cite. :func:`resolve_item_texts` reads the item facts
(genres, categories) from the run's dataset once, so every entry point sees the same.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from whyrec.data.facts import ItemFacts
from whyrec.explain.evidence import ItemEvidence, select_evidence
from whyrec.explain.preferences import PreferenceExtractor, UserPreferences
from whyrec.explain.record import Subject
from whyrec.models.protocols import ExplainableModel


def resolve_item_texts(model: Any, dataset: Any = None) -> tuple[str | None, list[str] | None, str]:
    """``(field, per-item texts, note)``: genres (or another text field) from the dataset
    the model was trained on — read once, so every entry point sees the same facts."""
    from whyrec.data import load_dataset

    info = getattr(model, "dataset_info", None) or {}
    try:
        ds = dataset
        if ds is None:
            path = info.get("path")
            spec: Any = path if path and Path(path).is_dir() else info.get("name")
            if not spec:
                return None, None, "no dataset recorded in the run"
            ds = load_dataset(Path(spec) if Path(str(spec)).is_dir() else spec)
        model.check_dataset(ds)
    except Exception as exc:  # titles alone still give a reason; say why
        return None, None, f"dataset not loaded ({type(exc).__name__}: {exc}); titles only"
    text_fields = [c for c in getattr(ds, "text_fields", []) if c != "item_idx"]
    name = "genres" if "genres" in text_fields else (text_fields[0] if text_fields else None)
    if name is None:
        return None, None, f"dataset {ds.name}: no text field besides titles"
    values = ds.items[name].fillna("").astype(str).tolist()
    return name, values, f"dataset {ds.name}: item field '{name}'"


def fact_label_of(field_name: str | None) -> str:
    """ "genres" → "genre", "categories" → "category"."""
    name = (field_name or "genre").replace("_", " ")
    if name.endswith("ies"):
        return name[:-3] + "y"
    return name[:-1] if name.endswith("s") else name


class EvidenceGatherer:
    """Subjects and item evidence from a fitted recommender (LANE or any other).

    ``item_texts`` (one string per item) are the item facts the evidence cites;
    ``extractor`` and ``encoder`` serve LANE histories the model has not seen.
    """

    def __init__(
        self,
        model: ExplainableModel,
        *,
        item_texts: Sequence[str] | None = None,
        extractor: PreferenceExtractor | None = None,
        encoder: Any = None,
    ) -> None:
        self.model = model
        self.item_texts = list(item_texts) if item_texts is not None else None
        self.extractor = extractor
        self.encoder = encoder

    @property
    def is_lane(self) -> bool:
        return self.model.has_preferences

    @functools.cached_property
    def item_facts(self) -> ItemFacts:
        """The facts of every item (tags of the item texts, decades from the titles): what
        a taste is checked against before it is cited."""
        titles = [str(t) for t in self.model.item_titles]
        return ItemFacts.from_texts(titles, self.item_texts)

    def history_titles(self, subject: Subject, window: int) -> list[str]:
        """The titles of the subject's last ``window`` history items (what a prompt shows)."""
        titles = self.model.item_titles
        return [str(titles[i]) for i in subject.history[-window:]]

    def subject(
        self,
        user: int | None = None,
        *,
        history: Sequence[int] | None = None,
        preferences: Sequence[str] | None = None,
        vectors: np.ndarray | None = None,
        preference_source: str | None = None,
        user_id: str | None = None,
    ) -> Subject:
        """A known user (internal index), or a history — with explicit preference texts
        and vectors, or (LANE) preferences extracted for it now."""
        model = self.model
        if user is not None and history is None:
            return self._known_user(int(user))
        if history is None or len(history) == 0:
            raise ValueError("give a known user or a non-empty history")
        hist = np.asarray(history, dtype=np.int64)
        uid = (
            user_id
            if user_id is not None
            else (str(model.user_ids[user]) if user is not None else None)
        )
        if not self.is_lane:
            return Subject(None, uid, hist, [], "none")
        if vectors is None:
            if self.extractor is None or self.encoder is None:
                raise ValueError("explaining a new history needs an extractor and an encoder")
            prefs = self.preferences_for_history(hist)
            preferences, preference_source = prefs.preferences, prefs.source
            vectors = self.encoder.encode(prefs.preferences)
        inputs = getattr(model, "preference_inputs", None)
        if inputs is not None:  # the additive taste channel also reads the tastes' facts
            vectors = inputs(list(preferences or []), vectors)
        return Subject(
            None, uid, hist, list(preferences or []), preference_source or "unknown",
            np.asarray(vectors, dtype=np.float32),
        )  # fmt: skip

    def _known_user(self, user: int) -> Subject:
        """A user the model was trained on, with the preferences it keeps for them."""
        model = self.model
        hist = np.asarray(model.histories[user])
        texts: list[str] = []
        source = "none"
        if self.is_lane:
            texts = list(model.preference_texts[user]) if model.preference_texts else []
            source = model.preference_sources[user] if model.preference_sources else "unknown"
        return Subject(user, str(model.user_ids[user]), hist, texts, source)

    def preferences_for_history(self, history: Sequence[int]) -> UserPreferences:
        """Extract preferences for an explicit history (cached by its hash)."""
        if self.extractor is None:
            raise ValueError("extracting preferences for a history needs an extractor")
        titles = [str(self.model.item_titles[i]) for i in history]
        texts = [self.item_texts[i] for i in history] if self.item_texts is not None else None
        key = "history:" + "-".join(str(int(i)) for i in history[-50:])
        return self.extractor.extract_history(titles, texts, user=key)

    def evidence(self, subject: Subject, item: int) -> ItemEvidence:
        """The item-specific evidence (counterfactual attribution) for one item."""
        model = self.model
        kw: dict[str, Any] = {}
        if subject.vectors is not None:
            kw["preferences"] = subject.vectors
        if subject.index is not None and subject.vectors is None:
            att = model.attribution(int(item), subject.index, **kw)
        else:
            att = model.attribution(int(item), history=subject.history, **kw)
        texts = subject.preferences or [f"preference {j + 1}" for j in range(len(att.weights))]
        facts = self.item_facts
        return select_evidence(
            att,
            item_id=str(model.item_ids[item]),
            title=str(model.item_titles[item]),
            titles=model.item_titles,
            item_texts=self.item_texts,
            preferences=texts,
            preference_source=subject.preference_source,
            taste_facts=[facts.parse(t) for t in texts],
            fact_keys=facts.of_item(int(item)),
        )

    def top_items(self, subject: Subject, k: int) -> np.ndarray:
        """The model's top-``k`` unseen items for the subject."""
        if subject.index is not None and subject.vectors is None:
            return self.model.recommend(subject.index, k=k).items
        if self.is_lane:
            return self.model.recommend(
                history=subject.history, preferences=subject.vectors, k=k
            ).items
        return self.model.recommend(history=subject.history, k=k).items
