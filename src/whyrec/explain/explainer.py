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

:meth:`~ExplanationPipeline.explain` does both with the pipeline's own client. The CLI,
the demo, the service, batch jobs and the evaluation harness all call these, so the same
(run, user, item, LLM settings) gives the same explanation wherever it is asked.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from whyrec.data.facts import ItemFacts
from whyrec.explain.evidence import (
    EVIDENCE_VERSION,
    ItemEvidence,
    evidence_pieces,
    select_evidence,
)
from whyrec.explain.preferences import PreferenceExtractor, UserPreferences
from whyrec.explain.prompts import (
    BASELINE_VERSION,
    EVIDENCE_SENTENCE_VERSION,
    EXPLANATION_VERSION,
    baseline_messages,
    evidence_sentence_messages,
    explanation_messages,
)
from whyrec.explain.schemas import (
    BaselineExplanation,
    _validate_reason,
    explanation_schema,
    first_sentence,
    strip_leading_label,
    trim_to_sentence,
)
from whyrec.explain.templates import completion_sentences, strength, template_reason
from whyrec.explain.verify import BoilerplateDetector, ClaimVerifier
from whyrec.llm.client import CompletionClient, LLMRequest
from whyrec.llm.errors import problems_of
from whyrec.models.protocols import ExplainableModel

#: Token budget of one evidence sentence (sentences mode).
SENTENCE_TOKENS = 60


@dataclass
class Explanation:
    """One explained recommendation with the evidence it must be true to.

    This is whyrec's one record layout for an explanation: ``to_dict()`` is what
    ``whyrec explain --format json`` prints, what the service stores and returns and what
    a batch job writes (nested parts as JSON columns).
    """

    item: int
    item_id: str
    title: str
    rank: int
    score: float
    preferences: list[str]
    preference_source: str
    weights: list[float]  # LANE's user-level weights: the same for every item of the user
    preference_effects: list[dict[str, Any]]
    history_effects: list[dict[str, Any]]
    reason: str
    reason_source: str  # "llm" | "llm+template" | "template" | "baseline-llm"
    steps: dict[str, Any] | None = None
    model: str = ""
    prompt_version: str = ""
    problems: list[str] = field(default_factory=list)
    user: str | None = None
    item_facts: list[str] = field(default_factory=list)
    cited: dict[str, Any] = field(default_factory=dict)  # preferences, history, facts
    removed_sentences: list[dict[str, Any]] = field(default_factory=list)
    evidence_version: str = EVIDENCE_VERSION
    #: every LLM call for this reason failed to reach a usable model (endpoint down, key
    #: refused, timeouts): the template is shown and the reason is worth asking again
    llm_outage: bool = False
    #: template sentences appended to a verified LLM reason for cited evidence it left
    #: out (``reason_source == "llm+template"``); the LLM wrote the rest of ``reason``
    completed_sentences: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Explanation:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def written_by_llm(source: str) -> bool:
    """The reason's words come (at least in part) from an LLM: ``llm``, ``llm+template``
    (verified LLM sentences completed by template ones), ``surrogate``, ``baseline-llm``."""
    return source.split("+", 1)[0] in ("llm", "surrogate", "baseline-llm")


def _jsonable(value: Any) -> Any:
    """numpy scalars inside evidence dicts → plain JSON values."""
    return json.loads(
        json.dumps(value, default=lambda o: o.item() if hasattr(o, "item") else o.tolist())
    )


@dataclass
class Subject:
    """Who is explained: a known user (``index``) or an explicit history with its
    preferences (``vectors`` None for a known user, who keeps the trained ones)."""

    index: int | None
    user_id: str | None
    history: np.ndarray
    preferences: list[str]
    preference_source: str
    vectors: np.ndarray | None = None


@dataclass
class ExplanationPlan:
    """Everything decided before the LLM is asked: evidence, requests, template fallback.

    ``kind`` is ``"cot"`` (one request: LANE's four steps as JSON) or ``"sentences"`` (one
    short free-text request per cited piece of evidence, for small local models)."""

    subject: Subject
    evidence: ItemEvidence
    fallback: Explanation
    requests: list[Any] = field(default_factory=list)  # whyrec.llm.LLMRequest
    kind: str = "cot"
    schema_m: int = 0

    @property
    def request(self) -> Any:
        """The single request of a ``cot`` plan (None when nothing is asked)."""
        return self.requests[0] if self.requests else None

    def requests_json(self) -> list[dict[str, Any]]:
        """The requests as plain JSON (batch jobs ship them to other processes)."""
        out = []
        for r in self.requests:
            schema = {"name": "explanation", "m": self.schema_m} if r.schema is not None else None
            out.append(
                {
                    "messages": list(r.messages),
                    "schema": schema,
                    "max_tokens": r.max_tokens,
                    "temperature": r.temperature,
                    "seed": r.seed,
                    "stage": r.stage,
                    "prompt_version": r.prompt_version,
                }
            )
        return out


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
        self.model = model
        self.client = client
        self.extractor = extractor
        self.encoder = encoder
        self.item_texts = list(item_texts) if item_texts is not None else None
        self.fact_label = fact_label
        self.history_window = history_window
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.boilerplate = boilerplate
        self.requested_mode = mode
        #: add the cited evidence a verified LLM reason leaves out, in the template's words
        self.complete_reasons = complete_reasons

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
        from whyrec.explain.grounding import Catalogue

        titles = [str(t) for t in self.model.item_titles]
        return ClaimVerifier(Catalogue(titles, self.item_texts), boilerplate=self.boilerplate)

    @property
    def is_lane(self) -> bool:
        return self.model.has_preferences

    @functools.cached_property
    def item_facts(self) -> ItemFacts:
        """The facts of every item (tags of the item texts, decades from the titles): what
        a taste is checked against before it is cited."""
        titles = [str(t) for t in self.model.item_titles]
        return ItemFacts.from_texts(titles, self.item_texts)

    # ---------------------------------------------------------------- subject
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
            hist = np.asarray(model.histories[user])
            texts: list[str] = []
            source = "none"
            if self.is_lane:
                texts = list(model.preference_texts[user]) if model.preference_texts else []
                source = model.preference_sources[user] if model.preference_sources else "unknown"
            return Subject(int(user), str(model.user_ids[user]), hist, texts, source)
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

    def preferences_for_history(self, history: Sequence[int]) -> UserPreferences:
        """Extract preferences for an explicit history (cached by its hash)."""
        assert self.extractor is not None
        titles = [str(self.model.item_titles[i]) for i in history]
        texts = [self.item_texts[i] for i in history] if self.item_texts is not None else None
        key = "history:" + "-".join(str(int(i)) for i in history[-50:])
        return self.extractor.extract_history(titles, texts, user=key)

    # ------------------------------------------------------------------- plan
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

    def _base(self, subject: Subject, ev: ItemEvidence) -> dict[str, Any]:
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

    def plan(self, subject: Subject, item: int, *, use_llm: bool = True) -> ExplanationPlan:
        """Evidence, the LLM request (None without a client or with ``use_llm=False``)
        and the template explanation."""
        ev = self.evidence(subject, int(item))
        fallback = Explanation(
            **self._base(subject, ev),
            reason=template_reason(ev, fact_label=self.fact_label),
            reason_source="template",
        )
        if not use_llm or self.client is None:
            return ExplanationPlan(subject, ev, fallback)
        from whyrec.llm import LLMRequest

        titles = self.model.item_titles
        history = [str(titles[i]) for i in subject.history[-self.history_window :]]
        cited_p = ev.cited_preference_effects()
        if self.mode == "sentences":
            requests = [
                LLMRequest(
                    messages=evidence_sentence_messages(
                        history=history,
                        item_title=ev.title,
                        item_facts=ev.facts,
                        piece=piece,
                    ),
                    schema=None,
                    max_tokens=SENTENCE_TOKENS,
                    temperature=self.temperature,
                    seed=0,
                    stage="explanations",
                    prompt_version=EVIDENCE_SENTENCE_VERSION,
                )  # fmt: skip
                for piece in evidence_pieces(ev)
            ]
            return ExplanationPlan(subject, ev, fallback, requests, "sentences")
        messages = explanation_messages(
            history=history,
            item_title=ev.title,
            item_facts=ev.facts,
            preferences=[str(p["preference"]) for p in cited_p],
            preference_effects=[
                f"matters {strength(ev.share(p))}; without it, rank {ev.rank} becomes "
                f"{p['rank_without']}"
                for p in cited_p
            ],
            # titles alone: a weight after a title gets copied into the reason with it
            influential=[str(h["title"]) for h in ev.cited_history_effects()],
            shared_facts=ev.shared_facts,
        )
        m = len(cited_p)
        request = LLMRequest(
            messages=messages,
            schema=explanation_schema(m),
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            seed=0,
            stage="explanations",
            prompt_version=EXPLANATION_VERSION,
        )
        return ExplanationPlan(subject, ev, fallback, [request], "cot", m)

    # ----------------------------------------------------------------- finish
    def finish(self, plan: ExplanationPlan, outcomes: Any) -> Explanation:
        """The explanation from the LLM's outcomes — one per planned request, each an
        ``LLMResult``, an ``LLMFailure``, an exception or None (a single outcome may be
        passed bare). Pure: no model or LLM call."""
        fb = plan.fallback
        if not isinstance(outcomes, list | tuple):
            outcomes = [outcomes]
        if not plan.requests or not outcomes or all(o is None for o in outcomes):
            return fb
        version = plan.requests[0].prompt_version
        model = str(getattr(self.client, "model", "") or "")
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
        flagged, when no verified sentence names the evidence. With ``complete`` (the
        pipeline's ``complete_reasons`` by default) the cited evidence the verified text
        leaves out is added in the template's words, so every reason shown names all of
        the item's cited evidence; ``reason_source`` then reads ``llm+template``."""
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
            **self._base(plan.subject, plan.evidence),
            reason=" ".join([check.text, *completed]),
            reason_source=f"{source}+template" if completed else source,
            steps=steps,
            model=model,
            prompt_version=prompt_version,
            problems=check.problems(),
            removed_sentences=removed,
            completed_sentences=completed,
        )

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
        if subject.index is not None and subject.vectors is None:
            return self.model.recommend(subject.index, k=k).items
        if self.is_lane:
            return self.model.recommend(
                history=subject.history, preferences=subject.vectors, k=k
            ).items
        return self.model.recommend(history=subject.history, k=k).items

    # -------------------------------------------------------------- baseline
    def baseline_request(self, subject: Subject, item: int) -> Any:
        """The no-alignment baseline's request: the same LLM with only history and item."""
        from whyrec.llm import LLMRequest

        titles = self.model.item_titles
        return LLMRequest(
            messages=baseline_messages(
                history=[str(titles[i]) for i in subject.history[-self.history_window :]],
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


def _is_outage(outcome: Any) -> bool:
    """An outcome that never reached a usable model (not an invalid reply)."""
    from whyrec.llm.errors import is_outage

    error = outcome if isinstance(outcome, BaseException) else getattr(outcome, "error", None)
    if outcome is None or (error is None and getattr(outcome, "ok", True)):
        return False
    return error is not None and is_outage(error)


def ask(client: CompletionClient, request: LLMRequest) -> Any:
    """One planned request answered by ``client``: its result, or the exception it raised
    (typed LLM errors and anything else become part of the outcome, never a crash)."""
    try:
        return request.send(client)
    except Exception as exc:
        return exc


#: The historical name: LANE was the first model explained this way.
LaneExplainer = ExplanationPipeline
