"""Explain LANE recommendations: evidence from the model, words from the LLM.

For a (user or history, item) the :class:`LaneExplainer` gathers the faithful evidence
(LANE's preference weights and the item-specific attribution), then leads the LLM
through LANE's four steps. A reply that never validates falls back to the grounded
template reason, flagged ``reason_source="template"``. :meth:`LaneExplainer.baseline`
asks the same LLM without any of the evidence, for comparison.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from whyrec.explain.preferences import PreferenceExtractor, UserPreferences
from whyrec.explain.prompts import (
    BASELINE_VERSION,
    EXPLANATION_VERSION,
    baseline_messages,
    explanation_messages,
)
from whyrec.explain.schemas import (
    BaselineExplanation,
    explanation_schema,
    trim_to_sentence,
    unrelated_reason_problem,
)
from whyrec.explain.templates import template_reason


@dataclass
class Explanation:
    """One explained recommendation, with the evidence it must be faithful to."""

    item: int
    item_id: str
    title: str
    rank: int
    score: float
    preferences: list[str]
    preference_source: str
    weights: list[float]
    preference_effects: list[dict[str, Any]]
    history_effects: list[dict[str, Any]]
    reason: str
    reason_source: str  # "llm" | "template" | "baseline-llm"
    steps: dict[str, Any] | None = None
    model: str = ""
    prompt_version: str = ""
    problems: list[str] = field(default_factory=list)
    user: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class LaneExplainer:
    """Recommend and explain with a fitted :class:`whyrec.models.lane.Lane` model.

    ``extractor`` (with its LLM client and store) supplies preferences for histories
    the model has not seen; ``encoder`` embeds them like the training preferences.
    """

    def __init__(
        self,
        model: Any,
        client: Any,
        *,
        extractor: PreferenceExtractor | None = None,
        encoder: Any = None,
        item_texts: Sequence[str] | None = None,
        history_window: int = 15,
        max_tokens: int = 600,
        temperature: float = 0.0,
    ) -> None:
        self.model = model
        self.client = client
        self.extractor = extractor
        self.encoder = encoder
        self.item_texts = list(item_texts) if item_texts is not None else None
        self.history_window = history_window
        self.max_tokens = max_tokens
        self.temperature = temperature

    # -------------------------------------------------------------- evidence
    def _user_context(
        self, user: int | None, history: Sequence[int] | None
    ) -> tuple[np.ndarray, list[str], str, np.ndarray | None, str | None]:
        """(history, preference texts, their source, explicit vectors or None, user id)."""
        model = self.model
        if user is not None:
            hist = np.asarray(model.histories[user])
            texts = model.preference_texts[user] if model.preference_texts else []
            source = model.preference_sources[user] if model.preference_sources else "unknown"
            return hist, list(texts), source, None, str(model.user_ids[user])
        if history is None or len(history) == 0:
            raise ValueError("give a known user or a non-empty history")
        if self.extractor is None or self.encoder is None:
            raise ValueError("explaining a new history needs an extractor and an encoder")
        hist = np.asarray(history, dtype=np.int64)
        prefs = self.preferences_for_history(hist)
        vectors = self.encoder.encode(prefs.preferences)
        return hist, prefs.preferences, prefs.source, vectors, None

    def preferences_for_history(self, history: Sequence[int]) -> UserPreferences:
        """Extract preferences for an explicit history (cached by its hash)."""
        assert self.extractor is not None
        titles = [str(self.model.item_titles[i]) for i in history]
        fields = [self.item_texts[i] for i in history] if self.item_texts is not None else None
        key = "history:" + "-".join(str(int(i)) for i in history[-50:])
        return self.extractor.extract_history(titles, fields, user=key)

    # --------------------------------------------------------------- explain
    def recommend_and_explain(
        self,
        user: int | None = None,
        *,
        history: Sequence[int] | None = None,
        k: int = 3,
        use_llm: bool = True,
    ) -> list[Explanation]:
        """Top-``k`` recommendations, each with its explanation."""
        hist, texts, source, vectors, uid = self._user_context(user, history)
        if vectors is None:
            recs = self.model.recommend(user, k=k)
        else:
            recs = self.model.recommend(history=hist, preferences=vectors, k=k)
        return [
            self._explain(int(i), user, hist, texts, source, vectors, uid, use_llm)
            for i in recs.items
        ]

    def explain(
        self,
        item: int,
        user: int | None = None,
        *,
        history: Sequence[int] | None = None,
        use_llm: bool = True,
    ) -> Explanation:
        """Explain any item for a user or history — also one another system chose."""
        hist, texts, source, vectors, uid = self._user_context(user, history)
        return self._explain(int(item), user, hist, texts, source, vectors, uid, use_llm)

    def _explain(
        self,
        item: int,
        user: int | None,
        hist: np.ndarray,
        texts: list[str],
        source: str,
        vectors: np.ndarray | None,
        uid: str | None,
        use_llm: bool,
    ) -> Explanation:
        model = self.model
        if vectors is None:
            att = model.attribution(item, user)
        else:
            att = model.attribution(item, history=hist, preferences=vectors)
        titles = model.item_titles
        if not texts:
            texts = [f"preference {j + 1}" for j in range(len(att.weights))]
        influential = [str(titles[h["item"]]) for h in att.history if h["score_drop"] > 0][:3]
        history_effects = [{**h, "title": str(titles[h["item"]])} for h in att.history]
        base = {
            "item": item,
            "item_id": str(model.item_ids[item]),
            "title": str(titles[item]),
            "rank": att.rank,
            "score": att.score,
            "preferences": texts,
            "preference_source": source,
            "weights": att.weights,
            "preference_effects": [{**p, "preference": texts[p["index"]]} for p in att.preferences],
            "history_effects": history_effects,
            "user": uid,
        }
        fallback = template_reason(str(titles[item]), texts, att.weights, influential)
        if not use_llm or self.client is None:
            return Explanation(**base, reason=fallback, reason_source="template")
        shown = [str(titles[i]) for i in hist[-self.history_window :]]
        messages = explanation_messages(
            history=shown,
            preferences=texts,
            weights=att.weights,
            item_title=str(titles[item]),
            item_text=self.item_texts[item] if self.item_texts is not None else "",
            influential=influential,
        )
        try:
            res = self.client.complete(
                messages,
                schema=explanation_schema(len(texts)),
                max_tokens=self.max_tokens,
                temperature=self.temperature,
                seed=0,
                stage="explanations",
                prompt_version=EXPLANATION_VERSION,
            )
        except Exception as exc:
            problems = list(getattr(exc, "problems", []) or [f"{type(exc).__name__}: {exc}"])
            return Explanation(
                **base, reason=fallback, reason_source="template",
                model=str(getattr(self.client, "model", "")),
                prompt_version=EXPLANATION_VERSION, problems=problems,
            )  # fmt: skip
        steps = res.parsed.model_dump()
        steps["fitness"] = [v / 10 for v in steps["fitness"]]  # the 0–10 scale → 0–1
        reason = trim_to_sentence(steps.pop("explanation"))
        evidence = [str(titles[item]), *texts, *shown]
        if self.item_texts is not None:
            evidence.append(str(self.item_texts[item]))
        unrelated = unrelated_reason_problem(reason, evidence)
        if unrelated:
            return Explanation(
                **base, reason=fallback, reason_source="template", model=res.model,
                prompt_version=EXPLANATION_VERSION, problems=[unrelated],
            )  # fmt: skip
        return Explanation(
            **base,
            reason=reason,
            reason_source="llm",
            steps=steps,
            model=res.model,
            prompt_version=EXPLANATION_VERSION,
        )

    def baseline(
        self, item: int, user: int | None = None, *, history: Sequence[int] | None = None
    ) -> str | None:
        """The same LLM's reason with no preferences, weights or attribution (None on failure)."""
        return self.baseline_with_problems(item, user, history=history)[0]

    def baseline_with_problems(
        self, item: int, user: int | None = None, *, history: Sequence[int] | None = None
    ) -> tuple[str | None, list[str]]:
        """:meth:`baseline` plus, when it failed, why (the last validation problems or the
        error): ``(reason, [])`` or ``(None, problems)``."""
        hist = np.asarray(self.model.histories[user]) if user is not None else np.asarray(history)
        titles = self.model.item_titles
        try:
            res = self.client.complete(
                baseline_messages(
                    history=[str(titles[i]) for i in hist[-self.history_window :]],
                    item_title=str(titles[item]),
                    item_text=self.item_texts[item] if self.item_texts is not None else "",
                ),
                schema=BaselineExplanation,
                max_tokens=300,
                temperature=self.temperature,
                seed=0,
                stage="baseline",
                prompt_version=BASELINE_VERSION,
            )
        except Exception as exc:
            return None, list(getattr(exc, "problems", []) or [f"{type(exc).__name__}: {exc}"])
        return trim_to_sentence(res.parsed.explanation), []
