"""Explanations written by a surrogate LLM (RecExplainer's end use).

The surrogate sees the user in the form it was aligned in (titles, the ``<user>`` vector,
or both) and the recommended item, and is asked why the recommender suggests it. The
result is a :class:`whyrec.explain.record.Explanation`, so the explanation-quality
harness scores it like any other explainer. The reply is untrusted: an empty or
degenerate reply is replaced by a short factual sentence and flagged
(``reason_source="template"``, ``problems`` says why).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from whyrec.align.builders import AlignmentBuilder, AlignmentConfig, UserState, recommender_view
from whyrec.align.decoding import generate
from whyrec.align.samples import Sample, SampleSet
from whyrec.align.text import EXPLAIN, PROMPT_VERSION, SYSTEM_ALIGN, clean_text
from whyrec.align.tuning import Surrogate
from whyrec.errors import ConfigError
from whyrec.explain.record import Explanation

MIN_REASON_CHARS = 20


def surrogate_form(sur: Surrogate) -> str:
    """The alignment form a surrogate was trained on (``behaviour`` when untuned)."""
    forms = [f for f in sur.manifest.get("forms", []) if f in ("behaviour", "intention", "hybrid")]
    if not forms:
        return "behaviour"
    if len(forms) > 1:
        return "hybrid" if "hybrid" in forms else forms[0]
    return forms[0]


class SurrogateExplainer:
    """Explain recommender ``model``'s suggestions with surrogate ``sur``."""

    def __init__(
        self,
        sur: Surrogate,
        model: Any,
        *,
        form: str | None = None,
        max_history: int = 10,
        max_new_tokens: int = 96,
        pipeline: Any = None,
    ) -> None:
        self.sur, self.model = sur, model
        self.form = form or surrogate_form(sur)
        if self.form != "behaviour" and sur.connectors is None:
            raise ConfigError(
                f"the {self.form} form needs a surrogate trained with connectors "
                "(intention or hybrid samples)"
            )
        self.max_history = max_history
        self.max_new_tokens = max_new_tokens
        # with the run's item facts: the one explanation pipeline verifies the surrogate's
        # reply (unsupported sentences removed) and supplies the grounded template
        self.pipeline = pipeline

    def _prompt(
        self, user: int, history: np.ndarray, items: Sequence[int]
    ) -> tuple[SampleSet, Any]:
        view = recommender_view(self.model, [UserState(int(user), history)])
        builder = AlignmentBuilder(
            view, AlignmentConfig(form=self.form, max_history=self.max_history)
        )
        samples = []
        for item in items:
            user_text, uvecs = builder.user_ref(0)
            item_text, ivecs = builder.item_ref(int(item))
            prompt = EXPLAIN.format(user=user_text, item=item_text)
            samples.append(
                Sample("explain", self.form, SYSTEM_ALIGN, prompt, "", uvecs + ivecs, {})
            )
        sset = SampleSet(
            samples,
            view.user_vectors if view.user_vectors is not None else np.zeros((1, 0), np.float32),
            view.item_vectors
            if view.item_vectors is not None
            else np.zeros((len(view.titles), 0), np.float32),
        )
        return sset, view

    def explain_many(self, user: int, items: Sequence[int]) -> list[Explanation]:
        """Explain several items for one known user (internal index)."""
        u = self.model._check_user(user)
        hist = np.asarray(self.model.histories[u])
        sset, view = self._prompt(u, hist, items)
        texts = generate(self.sur, sset, max_new_tokens=self.max_new_tokens)
        ranking = view.ranking(0)
        rank_of = {int(i): r for r, i in enumerate(ranking)}
        out = []
        name = f"surrogate:{self.sur.name} ({self.form})"
        for item, text in zip(items, texts, strict=True):
            if self.pipeline is not None:
                # the one pipeline's evidence, template and claim verification
                plan = self.pipeline.plan(self.pipeline.subject(u), int(item), use_llm=False)
                reason = text.strip()
                if len(reason) < MIN_REASON_CHARS or len(set(reason.split())) < 4:
                    ex = plan.fallback
                    ex.model, ex.prompt_version = name, PROMPT_VERSION
                    ex.problems = [f"surrogate reply unusable: {reason[:60]!r}"]
                    out.append(ex)
                else:
                    out.append(
                        self.pipeline.finish_text(
                            plan,
                            reason,
                            model=name,
                            prompt_version=PROMPT_VERSION,
                            source="surrogate",
                        )  # fmt: skip
                    )
                continue
            title = clean_text(self.model.item_titles[int(item)])
            reason, source, problems = text.strip(), "surrogate", []
            if len(reason) < MIN_REASON_CHARS or len(set(reason.split())) < 4:
                problems.append(f"surrogate reply unusable: {reason[:60]!r}")
                reason = (
                    f"The recommender ranks {title} at position "
                    f"{rank_of.get(int(item), -1) + 1} for this user's history."
                )
                source = "template"
            out.append(
                Explanation(
                    item=int(item),
                    item_id=str(self.model.item_ids[int(item)]),
                    title=title,
                    rank=rank_of.get(int(item), -1) + 1,
                    score=float(view.scores[0, int(item)]),
                    preferences=[],
                    preference_source="none",
                    weights=[],
                    preference_effects=[],
                    history_effects=[],
                    reason=reason,
                    reason_source=source,
                    model=f"surrogate:{self.sur.name} ({self.form})",
                    prompt_version=PROMPT_VERSION,
                    problems=problems,
                    user=str(self.model.user_ids[u]),
                )
            )
        return out

    def explain(self, item: int, user: int) -> Explanation:
        return self.explain_many(user, [item])[0]

    def recommend_and_explain(self, user: int, *, k: int = 3) -> list[Explanation]:
        recs = self.model.recommend(user, k=k)
        return self.explain_many(user, [int(i) for i in recs.items])


def explanation_cases(
    explainer: SurrogateExplainer,
    users: Sequence[int],
    *,
    positions: Sequence[str] = ("top", "low"),
    low_rank: int = 500,
    system: str | None = None,
) -> list[Any]:
    """Surrogate explanations as ``whyrec.evaluate.explanations.ExplanationCase`` objects.

    For each user, the recommender's top item and the item at ``low_rank`` (as the
    explanation-quality harness does), so ``ExplanationScorer.score_all`` and
    ``summarize_systems`` score them beside LANE, the baseline and the template. A
    non-LANE recommender has no preference weights; the cases then carry none.
    """
    from whyrec.evaluate.explanations import ExplanationCase
    from whyrec.evaluate.explanations.harness import item_for_position

    model = explainer.model
    name = system or f"surrogate-{explainer.form}"
    cases = []
    for u in users:
        history = [int(i) for i in model.histories[int(u)]]
        items = [item_for_position(model, int(u), p, low_rank) for p in positions]
        for position, e in zip(positions, explainer.explain_many(int(u), items), strict=True):
            cases.append(
                ExplanationCase(
                    system=name,
                    user=str(e.user),
                    item=e.item,
                    title=e.title,
                    text=e.reason,
                    source=e.reason_source.replace("surrogate", "llm", 1),
                    writer=e.model,
                    item_id=e.item_id,
                    position=position,
                    rank=e.rank,
                    history=history,
                    recent_titles=[
                        str(model.item_titles[i]) for i in history[-explainer.max_history :]
                    ],
                    problems=list(e.problems),
                )
            )
    return cases
