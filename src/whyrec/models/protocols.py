"""What the layers above ask of a fitted recommender, as a typed protocol.

Every :class:`whyrec.models.Recommender` satisfies :class:`ExplainableModel`; the
explanation pipeline, the service and the harness are annotated with it, so they rely on
these members only, and on its capability flags (``has_preferences``,
``has_attribution``) instead of the model's name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from whyrec.models.base import Recommendations


@runtime_checkable
class ExplainableModel(Protocol):
    """A fitted recommender that can rank items and give item-specific evidence."""

    @property
    def name(self) -> str:
        """The registered model name (for records and messages, not for decisions)."""
        ...

    @property
    def has_preferences(self) -> bool:
        """Conditions on per-user preference sentences (see ``Recommender``)."""
        ...

    @property
    def has_attribution(self) -> bool:
        """Its attribution is evidence about this user's history."""
        ...

    item_ids: np.ndarray
    item_titles: np.ndarray
    user_ids: np.ndarray
    histories: Sequence[np.ndarray]

    def recommend(
        self,
        user: int | None = None,
        *,
        history: Sequence[int] | np.ndarray | None = None,
        k: int = 10,
    ) -> Recommendations:
        """Top-``k`` unseen items for a known user (internal index) or a history."""
        ...

    def attribution(
        self,
        item: int,
        user: int | None = None,
        *,
        history: Sequence[int] | np.ndarray | None = None,
        **context: Any,
    ) -> Any:
        """Item-specific evidence (:class:`whyrec.models.attribution.Attribution`)."""
        ...
