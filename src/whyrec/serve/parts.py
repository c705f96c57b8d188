"""What every part of the service is built on, made once by :class:`RecService`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from whyrec.serve.catalog import Catalog
from whyrec.serve.llm_gate import LLMGate
from whyrec.serve.settings import ServeSettings
from whyrec.serve.store import ServeStore


@dataclass(frozen=True)
class ServiceParts:
    """The served model and what the service keeps around it: its settings, the durable
    store, the catalogue (items, histories, posted interactions) and the LLM gate."""

    model: Any
    settings: ServeSettings
    store: ServeStore
    catalog: Catalog
    llm: LLMGate


class ServicePart:
    """Base of the service's parts (preferences, top lists, explanations): each works on
    the same :class:`ServiceParts`, read as its own attributes."""

    def __init__(self, parts: ServiceParts) -> None:
        self.model = parts.model
        self.settings = parts.settings
        self.store = parts.store
        self.catalog = parts.catalog
        self.llm = parts.llm
