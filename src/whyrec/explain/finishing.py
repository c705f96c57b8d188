"""The finishing room: the LLM's outcome → the :class:`Explanation` that is shown.

Pure: no model or LLM call. A reply's sentences are verified claim by claim
(:mod:`whyrec.explain.verify`), unsupported ones removed and recorded; the cited evidence
a verified reason leaves out is added in the template's words (``llm+template``); a
reason that then names none of its evidence, a failed call or no call at all gives the
grounded template explanation, flagged with why.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from whyrec.explain.evidence import ItemEvidence
from whyrec.explain.grounding import Catalogue
from whyrec.explain.prompts import EXPLANATION_VERSION
from whyrec.explain.record import Explanation, ExplanationPlan, Subject
from whyrec.explain.schemas import (
    _validate_reason,
    first_sentence,
    strip_leading_label,
    trim_to_sentence,
)
from whyrec.explain.templates import completion_sentences, template_reason
from whyrec.explain.verify import BoilerplateDetector, ClaimVerifier


def make_verifier(
    titles: Sequence[Any], item_texts: Sequence[str] | None, boilerplate: BoilerplateDetector | None
) -> ClaimVerifier:
    """The claim verifier for a catalogue of item titles and facts."""
    return ClaimVerifier(Catalogue([str(t) for t in titles], item_texts), boilerplate=boilerplate)


def shown_fields(subject: Subject, ev: ItemEvidence) -> dict[str, Any]:
    """The fields every explanation of this (subject, item) shows, whoever wrote it."""
    return {
        "item": ev.item,
        "item_id": ev.item_id,
        "title": ev.title,
        "rank": ev.rank,
        "score": ev.score,
        "preferences": ev.preferences if subject.preferences else [],
        "preference_source": ev.preference_source,
        "weights": ev.lane_weights,
        "preference_effects": ev.preference_effects,
        "history_effects": ev.history_effects,
        "user": subject.user_id,
        "item_facts": ev.facts,
        "cited": {
            "preferences": list(ev.cited_preferences),
            "history": [int(h["item"]) for h in ev.cited_history_effects()],
            "facts": list(ev.shared_facts),
        },
    }


class Finisher:
    """Verifies, completes or falls back: one (subject, item)'s explanation from its plan.

    ``fact_label`` names the item facts in template sentences ("genre"); with
    ``complete_reasons`` the cited evidence a verified LLM reason leaves out is added.
    """

    def __init__(
        self, verifier: ClaimVerifier, *, fact_label: str = "genre", complete_reasons: bool = True
    ) -> None:
        self.verifier = verifier
        self.fact_label = fact_label
        self.complete_reasons = complete_reasons

    def fallback(self, subject: Subject, ev: ItemEvidence) -> Explanation:
        """The grounded template explanation (shown when the LLM is not asked or fails)."""
        return Explanation(
            **shown_fields(subject, ev),
            reason=template_reason(ev, fact_label=self.fact_label),
            reason_source="template",
        )

    def finish(self, plan: ExplanationPlan, outcomes: Any, *, model: str) -> Explanation:
        """The explanation from the LLM's outcomes — one per planned request, each an
        ``LLMResult``, an ``LLMFailure``, an exception or None (a single outcome may be
        passed bare). ``model`` names the LLM when no outcome does."""
        fb = plan.fallback
        if not isinstance(outcomes, list | tuple):
            outcomes = [outcomes]
        if not plan.requests or not outcomes or all(o is None for o in outcomes):
            return fb
        version = plan.requests[0].prompt_version
        texts: list[str] = []
        problems: list[str] = []
        for outcome in outcomes:
            error = outcome if isinstance(outcome, BaseException) else None
            if outcome is not None and error is None and not getattr(outcome, "ok", True):
                error = outcome.error
            if outcome is None or error is not None:
                found = [str(p) for p in (getattr(error, "problems", None) or [])]
                problems += found or [f"{type(error).__name__}: {error}"]
                continue
            model = outcome.model or model
            if plan.kind == "cot":
                steps = outcome.parsed.model_dump()
                steps["fitness"] = [v / 10 for v in steps["fitness"]]  # 0–10 → 0–1
                reply = steps.pop("explanation")
                return self.finish_text(plan, reply, model=model, steps=steps)
            sentence = first_sentence(strip_leading_label(outcome.text))
            try:  # the same prose rules as a JSON reply's explanation
                texts.append(_validate_reason(None, sentence))
            except ValueError as exc:
                problems.append(f"{sentence[:60]!r}: {exc}")
        outage = all(_is_outage(o) for o in outcomes)
        return self._finish_sentences(plan, texts, problems, model, version, outage)

    def _finish_sentences(
        self, plan: ExplanationPlan, texts: list[str], problems: list[str], model: str,
        version: str, outage: bool = False,
    ) -> Explanation:  # fmt: skip
        fb = plan.fallback
        if not texts:
            return Explanation(
                **{**fb.to_dict(), "problems": problems or ["no reply"],
                   "prompt_version": version, "model": model,
                   "llm_outage": outage},
            )  # fmt: skip
        out = self.finish_text(plan, " ".join(texts), model=model, prompt_version=version)
        out.problems = problems + out.problems
        return out

    def finish_text(
        self,
        plan: ExplanationPlan,
        text: str,
        *,
        model: str,
        prompt_version: str = EXPLANATION_VERSION,
        steps: dict[str, Any] | None = None,
        source: str = "llm",
        complete: bool | None = None,
    ) -> Explanation:
        """A free-text reason (from any LLM, e.g. a tuned surrogate) verified against the
        plan's evidence: unsupported sentences removed and recorded; the template,
        flagged, when no verified sentence names the evidence. With ``complete``
        (``complete_reasons`` by default) the cited evidence the verified text leaves out
        is added in the template's words, so every reason shown names all of the item's
        cited evidence; ``reason_source`` then reads ``llm+template``."""
        if complete is None:
            complete = self.complete_reasons
        fb = plan.fallback
        reply = trim_to_sentence(text)
        check = self.verifier.verify(
            reply, plan.evidence, plan.subject.history, plan.subject.user_id
        )
        removed = [c.to_dict() for c in check.removed]
        if not check.names_evidence:
            problems = [*check.problems(), "no verified sentence names this item's evidence"]
            return Explanation(
                **{**fb.to_dict(), "problems": problems, "prompt_version": prompt_version,
                   "model": model, "removed_sentences": removed, "steps": steps},
            )  # fmt: skip
        completed: list[str] = []
        if complete:
            history_named = check.named_titles - {plan.evidence.item}
            completed = completion_sentences(
                plan.evidence, check.named_preferences, history_named, fact_label=self.fact_label
            )
        return Explanation(
            **shown_fields(plan.subject, plan.evidence),
            reason=" ".join([check.text, *completed]),
            reason_source=f"{source}+template" if completed else source,
            steps=steps,
            model=model,
            prompt_version=prompt_version,
            problems=check.problems(),
            removed_sentences=removed,
            completed_sentences=completed,
        )


def _is_outage(outcome: Any) -> bool:
    """An outcome that never reached a usable model (not an invalid reply)."""
    from whyrec.llm.errors import is_outage

    error = outcome if isinstance(outcome, BaseException) else getattr(outcome, "error", None)
    if outcome is None or (error is None and getattr(outcome, "ok", True)):
        return False
    return error is not None and is_outage(error)
