"""The unit of evaluation: one system's explanation of one (user, item), with the evidence.

Every system explaining the same (user, item) shares the same evidence — LANE's
preference weights, the attribution's score drops and the history — so each text is
judged against what the recommender actually computed, whether or not the system saw it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

LIKELIHOOD_LEVELS = {"low": 1, "medium": 2, "high": 3}


@dataclass
class ExplanationCase:
    """One explanation and the recommender's evidence for the same (user, item)."""

    system: str  # e.g. "lane", "baseline", "template"
    user: str  # source user id
    item: int  # internal item index
    title: str
    text: str | None  # None: the system produced no explanation (failure)
    source: str = ""  # "llm" | "template" | "baseline-llm" | "failed" ...
    writer: str = ""  # model that wrote the text ("template" for the template)
    item_id: str = ""
    position: str = ""  # "top" | "low" (which end of the ranking the item came from)
    rank: int = 0  # the recommender's rank of the item among unseen items (1 = top)
    preferences: list[str] = field(default_factory=list)
    preference_source: str = ""
    weights: list[float] = field(default_factory=list)  # LANE's per-preference weights
    preference_drops: list[float] = field(default_factory=list)  # score drop without each
    history: list[int] = field(default_factory=list)  # the user's items, oldest first
    history_drops: list[dict[str, Any]] = field(default_factory=list)  # item, score_drop
    recent_titles: list[str] = field(default_factory=list)  # for judges and humans
    likelihood: str | None = None  # stated Low/Medium/High, when the system states one
    references: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def task(self) -> str:
        """Cases with the same task explain the same (user, item) — comparable texts."""
        return f"{self.user}::{self.item}"

    @property
    def ok(self) -> bool:
        return bool(self.text and self.text.strip())

    @property
    def likelihood_level(self) -> int | None:
        if self.likelihood is None:
            return None
        return LIKELIHOOD_LEVELS.get(str(self.likelihood).strip().lower())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExplanationCase:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})
