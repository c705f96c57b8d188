"""One explanation pipeline for every entry point: evidence → request → outcome → explanation.

:class:`ExplanationPipeline` (``LaneExplainer`` is the same class) explains one item for
one user or history in two steps that any caller can separate:

1. :meth:`~ExplanationPipeline.plan` computes the item-specific evidence (the model's
   counterfactual attribution, :mod:`whyrec.explain.evidence`), the LLM request that
   asks for a reason from that evidence, and the grounded template explanation;
2. :meth:`~ExplanationPipeline.finish` — pure — turns the LLM's outcome (a validated
   reply, a failure, or none) into the :class:`Explanation`: the reply's sentences are
   verified claim by claim (:mod:`whyrec.explain.verify`), unsupported ones removed and
   recorded; a reason that then names none of its evidence gives the template, flagged.

The pipeline composes three rooms with one job each and keeps their settings:

* evidence — :class:`~whyrec.explain.gathering.EvidenceGatherer`: the subject, and the
  evidence chosen for one item from the model's counterfactuals;
* prompting — :mod:`whyrec.explain.asking`: the LLM requests built from that evidence;
* finishing — :class:`~whyrec.explain.finishing.Finisher`: verify, complete or fall back
  into the :class:`Explanation` shown.

:meth:`~ExplanationPipeline.explain` does both steps with the pipeline's own client. The
CLI, the demo, the service, batch jobs and the evaluation harness all call these, so the
same (run, user, item, LLM settings) gives the same explanation wherever it is asked.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from whyrec.data.facts import ItemFacts
from whyrec.explain.asking import SENTENCE_TOKENS, ask, baseline_request, explanation_requests
from whyrec.explain.evidence import ItemEvidence
from whyrec.explain.finishing import Finisher, make_verifier
from whyrec.explain.gathering import EvidenceGatherer, fact_label_of, resolve_item_texts
from whyrec.explain.preferences import PreferenceExtractor, UserPreferences
from whyrec.explain.record import Explanation, ExplanationPlan, Subject, written_by_llm
from whyrec.explain.schemas import trim_to_sentence
from whyrec.explain.verify import BoilerplateDetector, ClaimVerifier
from whyrec.llm.client import CompletionClient, LLMRequest
from whyrec.llm.errors import problems_of
from whyrec.models.protocols import ExplainableModel

# the names callers import from here; each lives in the room that owns it
__all__ = [
    "SENTENCE_TOKENS",
    "Explanation",
    "ExplanationPipeline",
    "ExplanationPlan",
    "LaneExplainer",
    "Subject",
    "ask",
    "fact_label_of",
    "resolve_item_texts",
    "written_by_llm",
]


class ExplanationPipeline:
    """Recommend and explain with a fitted recommender (LANE or any other).

    ``item_texts`` (one string per item: genres, categories) are the item facts the
    evidence, the prompt and the verifier use; :meth:`from_run` reads them from the run's
    dataset. ``extractor`` and ``encoder`` serve LANE histories the model has not seen.
    """

    def __init__(
        self,
        model: ExplainableModel,
        client: CompletionClient | None = None,
        *,
        extractor: PreferenceExtractor | None = None,
        encoder: Any = None,
        item_texts: Sequence[str] | None = None,
        fact_label: str = "genre",
        history_window: int = 15,
        max_tokens: int = 600,
        temperature: float = 0.0,
        boilerplate: BoilerplateDetector | None = None,
        mode: str = "auto",
        complete_reasons: bool = True,
    ) -> None:
        if mode not in ("auto", "cot", "sentences"):
            raise ValueError(f"mode must be 'auto', 'cot' or 'sentences', got {mode!r}")
        #: the evidence room: subjects and item evidence from the model
        self.gathering = EvidenceGatherer(
            model, item_texts=item_texts, extractor=extractor, encoder=encoder
        )
        self.client = client
        self.fact_label = fact_label
        self.history_window = history_window
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.boilerplate = boilerplate
        self.requested_mode = mode
        #: add the cited evidence a verified LLM reason leaves out, in the template's words
        self.complete_reasons = complete_reasons

    @property
    def model(self) -> ExplainableModel:
        return self.gathering.model

    @property
    def extractor(self) -> PreferenceExtractor | None:
        return self.gathering.extractor

    @property
    def encoder(self) -> Any:
        return self.gathering.encoder

    @property
    def item_texts(self) -> list[str] | None:
        return self.gathering.item_texts

    @property
    def mode(self) -> str:
        """``cot`` (LANE's four steps in one JSON reply) or ``sentences`` (one short
        sentence per cited piece of evidence). ``auto`` is ``cot``: with the packaged
        SmolLM2-135M, sentences mode raised the share of LLM-written reasons from 0.33 to
        0.63 but lowered the necessity win rate (0.91 → 0.84) and the drop-vs-mention
        correlation (0.59 → 0.36) of the reasons shown (docs/benchmarks.md), so it stays
        an option."""
        return "cot" if self.requested_mode == "auto" else self.requested_mode

    @classmethod
    def from_run(
        cls, run: str | Path | Any, client: Any = None, *, dataset: Any = None, **kw: Any
    ) -> ExplanationPipeline:
        """The pipeline for a run directory (or a loaded model), item texts resolved once."""
        if isinstance(run, str | Path):
            from whyrec.models import load_model

            model = load_model(run)
        else:
            model = run
        name, texts, _ = resolve_item_texts(model, dataset)
        kw.setdefault("fact_label", fact_label_of(name))
        return cls(model, client, item_texts=texts, **kw)

    @functools.cached_property
    def verifier(self) -> ClaimVerifier:
        return make_verifier(self.model.item_titles, self.item_texts, self.boilerplate)

    @property
    def finishing(self) -> Finisher:
        """The finishing room, with the pipeline's current settings."""
        return Finisher(
            self.verifier, fact_label=self.fact_label, complete_reasons=self.complete_reasons
        )

    @property
    def is_lane(self) -> bool:
        return self.gathering.is_lane

    @property
    def item_facts(self) -> ItemFacts:
        """The facts of every item (tags of the item texts, decades from the titles): what
        a taste is checked against before it is cited."""
        return self.gathering.item_facts

    # ---------------------------------------------------------------- subject
    def subject(self, user: int | None = None, **given: Any) -> Subject:
        """A known user (internal index), or a history — with explicit preference texts
        and vectors, or (LANE) preferences extracted for it now; ``given`` as
        :meth:`EvidenceGatherer.subject <whyrec.explain.gathering.EvidenceGatherer.subject>`
        takes it (``history``, ``preferences``, ``vectors``, ``preference_source``,
        ``user_id``)."""
        return self.gathering.subject(user, **given)

    def preferences_for_history(self, history: Sequence[int]) -> UserPreferences:
        """Extract preferences for an explicit history (cached by its hash)."""
        return self.gathering.preferences_for_history(history)

    # ------------------------------------------------------------------- plan
    def evidence(self, subject: Subject, item: int) -> ItemEvidence:
        """The item-specific evidence (counterfactual attribution) for one item."""
        return self.gathering.evidence(subject, item)

    def plan(self, subject: Subject, item: int, *, use_llm: bool = True) -> ExplanationPlan:
        """Evidence, the LLM request (None without a client or with ``use_llm=False``)
        and the template explanation."""
        ev = self.evidence(subject, int(item))
        fallback = self.finishing.fallback(subject, ev)
        if not use_llm or self.client is None:
            return ExplanationPlan(subject, ev, fallback)
        requests, m = explanation_requests(
            ev,
            self.gathering.history_titles(subject, self.history_window),
            mode=self.mode,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
        )
        return ExplanationPlan(subject, ev, fallback, requests, self.mode, m)

    # ----------------------------------------------------------------- finish
    def finish(self, plan: ExplanationPlan, outcomes: Any) -> Explanation:
        """The explanation from the LLM's outcomes — one per planned request, each an
        ``LLMResult``, an ``LLMFailure``, an exception or None (a single outcome may be
        passed bare). Pure: no model or LLM call."""
        model = str(getattr(self.client, "model", "") or "")
        return self.finishing.finish(plan, outcomes, model=model)

    def finish_text(self, plan: ExplanationPlan, text: str, **options: Any) -> Explanation:
        """A free-text reason (from any LLM, e.g. a tuned surrogate) verified against the
        plan's evidence; ``options`` (``model``, ``prompt_version``, ``steps``, ``source``,
        ``complete``) as :meth:`Finisher.finish_text
        <whyrec.explain.finishing.Finisher.finish_text>` takes them, ``complete``
        defaulting to the pipeline's ``complete_reasons``."""
        return self.finishing.finish_text(plan, text, **options)

    # ------------------------------------------------------------ convenience
    def explain_subject(self, subject: Subject, item: int, *, use_llm: bool = True) -> Explanation:
        """Plan, ask the pipeline's client, finish."""
        plan = self.plan(subject, int(item), use_llm=use_llm)
        return self.finish(plan, [ask(self.client, r) for r in plan.requests])

    def explain(
        self,
        item: int,
        user: int | None = None,
        *,
        history: Sequence[int] | None = None,
        use_llm: bool = True,
    ) -> Explanation:
        """Explain any item for a user or history — also one another system chose."""
        return self.explain_subject(self.subject(user, history=history), item, use_llm=use_llm)

    def recommend_and_explain(
        self,
        user: int | None = None,
        *,
        history: Sequence[int] | None = None,
        k: int = 3,
        use_llm: bool = True,
    ) -> list[Explanation]:
        """Top-``k`` recommendations, each with its explanation."""
        subject = self.subject(user, history=history)
        return [
            self.explain_subject(subject, int(i), use_llm=use_llm)
            for i in self.top_items(subject, k)
        ]

    def top_items(self, subject: Subject, k: int) -> np.ndarray:
        """The model's top-``k`` unseen items for the subject."""
        return self.gathering.top_items(subject, k)

    # -------------------------------------------------------------- baseline
    def baseline_request(self, subject: Subject, item: int) -> LLMRequest:
        """The no-alignment baseline's request: the same LLM with only history and item."""
        return baseline_request(
            self.gathering.history_titles(subject, self.history_window),
            str(self.model.item_titles[item]),
            self.item_texts[item] if self.item_texts is not None else "",
            temperature=self.temperature,
        )

    def baseline(
        self, item: int, user: int | None = None, *, history: Sequence[int] | None = None
    ) -> str | None:
        """The same LLM's reason with no evidence (None on failure)."""
        return self.baseline_with_problems(item, user, history=history)[0]

    def baseline_with_problems(
        self, item: int, user: int | None = None, *, history: Sequence[int] | None = None
    ) -> tuple[str | None, list[str]]:
        """:meth:`baseline` plus, when it failed, why: ``(reason, [])`` or ``(None, problems)``."""
        if user is not None and history is None:
            hist = np.asarray(self.model.histories[user])
        else:
            hist = np.asarray(history)
        r = self.baseline_request(Subject(user, None, hist, [], "none"), int(item))
        try:
            res = r.send(self.client)
        except Exception as exc:
            return None, problems_of(exc)
        return trim_to_sentence(res.parsed.explanation), []


#: The historical name: LANE was the first model explained this way.
LaneExplainer = ExplanationPipeline
