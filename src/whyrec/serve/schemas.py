"""Request and response models of the HTTP API (they are also the OpenAPI documentation)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from whyrec.data.ids import ID_PATTERN, MAX_ID_LENGTH, check_id

#: Hard cap on list lengths in a body; the configured ``max_history`` is usually lower.
HARD_MAX_ITEMS = 10_000

Ref = Annotated[str, StringConstraints(min_length=1, max_length=500)]
#: A user id, by the same rule as ``whyrec data prepare`` (:mod:`whyrec.data.ids`):
#: stripped, not blank nor a missing-value spelling such as "NaN", at most 128 characters,
#: no control or bidirectional-control characters; "/" is allowed.
UserId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_ID_LENGTH),
    AfterValidator(check_id),  # says which character, where
    Field(json_schema_extra={"pattern": ID_PATTERN}),
]

#: ``stale`` of the replies read from the store: set when they come from this replica's own
#: last view because its shared store cannot be reached.
StaleReply = Annotated[
    bool,
    Field(
        description="Answered from what this replica last saw: its shared store (PostgreSQL) "
        "cannot be reached, so writes other replicas acknowledged may be missing."
    ),
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HistoryBody(_Body):
    """A history given explicitly, oldest first: item ids *or* titles."""

    item_ids: list[Ref] | None = Field(
        None, max_length=HARD_MAX_ITEMS, description="Source item ids, oldest first."
    )
    titles: list[Ref] | None = Field(
        None,
        max_length=HARD_MAX_ITEMS,
        description="Item titles, oldest first (case-insensitive; '(year)' optional).",
    )

    @model_validator(mode="after")
    def _one_of(self) -> HistoryBody:
        if (self.item_ids is None) == (self.titles is None):
            raise ValueError("give exactly one of 'item_ids' or 'titles'")
        return self


class RecommendBody(HistoryBody):
    """Recommendations for a history the model has not seen."""

    k: int | None = Field(None, description="How many items (1..k_max; default k_default).")
    explain: bool = Field(False, description="Attach a reason and the evidence to each item.")
    wait_s: float | None = Field(
        None, ge=0, description="How long to wait for LLM reasons (default: the budget)."
    )


class InteractionsBody(HistoryBody):
    """New interactions of one user, oldest first; persisted before the reply."""

    user: UserId = Field(..., description="Source user id (a new id creates a new user).")


class ExplainBody(_Body):
    """Explain one item for a user or a history — also an item another system chose."""

    user: UserId | None = Field(None, description="Source user id (or give a history).")
    item_ids: list[Ref] | None = Field(None, max_length=HARD_MAX_ITEMS)
    titles: list[Ref] | None = Field(None, max_length=HARD_MAX_ITEMS)
    item_id: Ref | None = Field(None, description="The item to explain (or item_title).")
    item_title: Ref | None = Field(None, description="The item to explain, by title.")
    wait_s: float | None = Field(
        None, ge=0, description="How long to wait for the LLM's reason (default: the budget)."
    )

    @model_validator(mode="after")
    def _check(self) -> ExplainBody:
        has_history = self.item_ids is not None or self.titles is not None
        if (self.user is None) == (not has_history):
            raise ValueError("give exactly one of 'user' or a history ('item_ids' or 'titles')")
        if self.item_ids is not None and self.titles is not None:
            raise ValueError("give the history as 'item_ids' or as 'titles', not both")
        if (self.item_id is None) == (self.item_title is None):
            raise ValueError("give exactly one of 'item_id' or 'item_title'")
        return self


class PreferenceEffect(BaseModel):
    index: int
    preference: str
    weight: float = Field(description="LANE's user-level weight (the same for every item).")
    score_drop: float = Field(description="Score drop of the item without this preference.")
    rank_without: int


class HistoryEffect(BaseModel):
    item: int = Field(description="The model's internal item index.")
    item_id: str
    title: str
    position: int
    score_drop: float = Field(description="Score drop of the item without this history item.")
    rank_without: int
    facts: list[str] = Field(default_factory=list, description="The history item's facts.")


class Cited(BaseModel):
    preferences: list[int] = Field(description="Indices of the preferences the reason cites.")
    history: list[int] = Field(description="Internal indices of the history items it cites.")
    facts: list[str] = Field(description="Item facts the cited evidence shares with the item.")


class RemovedSentence(BaseModel):
    sentence: str
    problem: str | None
    titles: list[int] = Field(default_factory=list)
    preferences: list[int] = Field(default_factory=list)
    facts: list[str] = Field(default_factory=list)


class ExplanationOut(BaseModel):
    """A reason with the evidence it must be faithful to: whyrec's explanation record
    (as ``whyrec explain --format json`` prints it) plus the service's status fields."""

    item_id: str
    title: str
    user: str | None
    rank: int = Field(description="The model's rank of the item among unseen items.")
    score: float | None
    item_facts: list[str] = Field(description="The item's facts (e.g. genres).")
    reason: str
    reason_source: str = Field(
        description="llm | llm+template (LLM sentences completed by template ones for "
        "cited evidence they left out) | template"
    )
    reason_note: str | None = Field(None, description="Why a template reason is shown.")
    completed_sentences: list[str] = Field(
        default_factory=list,
        description="Template sentences added to the LLM's verified reason for the cited "
        "evidence it left out (reason_source llm+template).",
    )
    cited: Cited = Field(description="What the reason cites: what moved this item's score.")
    removed_sentences: list[RemovedSentence] = Field(
        description="LLM sentences the claim verifier removed, and why."
    )
    llm_status: str = Field(description="done | pending | failed | unavailable | disabled")
    pending: bool = Field(description="The LLM is writing this reason now; ask again later.")
    cache: str = Field(description="memory | store | miss")
    preferences: list[str]
    preference_source: str
    weights: list[float] = Field(
        description="LANE's user-level preference weights (empty: not LANE); the same for "
        "every item of the user, so never the reason for one item."
    )
    preference_effects: list[PreferenceEffect]
    history_effects: list[HistoryEffect]
    steps: dict[str, Any] | None = None
    llm_model: str
    prompt_version: str
    evidence_version: str
    problems: list[str]
    history_length: int
    model: str
    created: str
    stale: bool = Field(
        False,
        description="POST /v1/explanations for a user: the user's history is what this "
        "replica last saw (its shared store cannot be reached). Not set on the "
        "explanations inside a recommendations reply (see its own 'stale').",
    )


class RecommendedItem(BaseModel):
    rank: int
    item_id: str
    title: str
    score: float
    explanation: ExplanationOut | None = None


class RecommendationsOut(BaseModel):
    user: str | None
    model: str
    k: int
    explained: bool
    history_length: int
    new_interactions: int
    stale: StaleReply = False
    items: list[RecommendedItem]


class PreferenceOut(BaseModel):
    index: int
    text: str
    weight: float


class PreferencesOut(BaseModel):
    user: str | None
    model: str
    model_has_preferences: bool
    source: str | None = None
    pending: bool = False
    preferences: list[PreferenceOut]
    order: list[int] = Field(default_factory=list, description="Indices by weight, largest first.")
    note: str | None = None
    stale: StaleReply = False


class InteractionsOut(BaseModel):
    user: str
    added: int
    item_ids: list[str]
    sequence: list[int] = Field(description="Store sequence numbers, in acknowledgement order.")
    token: str = Field(
        description="Consistency token of this write (also the X-Whyrec-Token header): send "
        "it back as X-Whyrec-After (or ?after=) with later reads, and any replica answers "
        "them with this write included."
    )
    history_length: int
    new_interactions: int
    known_to_model: bool


class UserRow(BaseModel):
    user: str
    known_to_model: bool
    history_length: int
    new_interactions: int


class UsersOut(BaseModel):
    total: int
    offset: int
    stale: StaleReply = False
    users: list[UserRow]


class HistoryItem(BaseModel):
    position: int
    item_id: str
    title: str
    source: str = Field(description="training | api")
    text: str | None = None


class HistoryOut(BaseModel):
    user: str
    history_length: int
    stale: StaleReply = False
    items: list[HistoryItem] = Field(description="Most recent first.")


class ItemMatch(BaseModel):
    item_id: str
    title: str
    match: float


class ItemsOut(BaseModel):
    items: list[ItemMatch]


class ReadyOut(BaseModel):
    ready: bool = Field(description="This replica can take writes.")
    reasons: list[str] = Field(description="Why not (empty when ready).")


class HealthOut(BaseModel):
    status: str = Field(description="ok | degraded (see 'degraded' for why)")
    degraded: list[str] = Field(
        default_factory=list,
        description="Why the service is degraded: e.g. its shared store cannot be reached.",
    )
    version: str
    model: dict[str, Any]
    precomputed_users: int
    store: dict[str, Any]
    auth: bool
    detail: bool = Field(
        False, description="Paths and errors shown: the caller sent a valid API key."
    )
    llm: dict[str, Any]
    explain_budget_s: float
    k_max: int
    uptime_s: float
