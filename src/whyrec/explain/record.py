"""The records the explanation pipeline's rooms hand each other and show.

:class:`Subject` (who is explained) goes into the evidence room
(:mod:`whyrec.explain.gathering`); :class:`ExplanationPlan` (evidence, requests, template
fallback) comes out of planning and goes into the finishing room
(:mod:`whyrec.explain.finishing`), which makes the :class:`Explanation` every entry point
shows, stores and returns.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from whyrec.explain.evidence import EVIDENCE_VERSION, ItemEvidence


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
