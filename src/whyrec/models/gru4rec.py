"""GRU4Rec (Hidasi et al., ICLR 2016) trained on whole sequences with the shared losses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from whyrec.data.dataset import Dataset
from whyrec.models.backbones import GRU4RecBackbone, IdItemEmbedding, SequentialModule
from whyrec.models.sequential import SequentialConfig, SequentialRecommender


@dataclass
class GRU4RecConfig(SequentialConfig):
    n_layers: int = 1


class GRU4Rec(SequentialRecommender):
    """A recurrent next-item model; its final state is the query."""

    name = "gru4rec"
    config_class = GRU4RecConfig
    config: GRU4RecConfig

    def build_module(
        self, dataset: Dataset | None, state: dict[str, Any] | None = None
    ) -> SequentialModule:
        c = self.config
        backbone = GRU4RecBackbone(c.dim, max_len=c.max_len, n_layers=c.n_layers, dropout=c.dropout)
        return SequentialModule(IdItemEmbedding(self.n_items, c.dim), backbone)
