"""SASRec with ID embeddings and with semantic (title) embeddings — LANE's backbone."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from whyrec.data.dataset import Dataset
from whyrec.errors import ConfigError
from whyrec.models.backbones import (
    IdItemEmbedding,
    SASRecBackbone,
    SequentialModule,
    TextItemEmbedding,
)
from whyrec.models.sequential import SequentialConfig, SequentialRecommender


@dataclass
class SASRecConfig(SequentialConfig):
    n_blocks: int = 2
    n_heads: int = 1
    ffn_dim: int | None = None  # default: dim (as in SASRec)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dim % self.n_heads:
            raise ConfigError(f"dim {self.dim} must be divisible by n_heads {self.n_heads}")


class SASRec(SequentialRecommender):
    """Self-attentive sequential recommendation (Kang & McAuley, ICDM 2018), ID items."""

    name = "sasrec"
    config_class = SASRecConfig
    config: SASRecConfig

    def _backbone(self) -> SASRecBackbone:
        c = self.config
        return SASRecBackbone(
            c.dim,
            max_len=c.max_len,
            n_blocks=c.n_blocks,
            n_heads=c.n_heads,
            ffn_dim=c.ffn_dim,
            dropout=c.dropout,
        )

    def build_module(
        self, dataset: Dataset | None, state: dict[str, Any] | None = None
    ) -> SequentialModule:
        return SequentialModule(IdItemEmbedding(self.n_items, self.config.dim), self._backbone())


@dataclass
class SASRecTextConfig(SASRecConfig):
    encoder: dict[str, Any] | None = None  # None = packaged all-MiniLM-L6-v2
    text_fields: list[str] = field(default_factory=list)  # besides the title
    center_text: bool = True
    text_lr_scale: float = 1.0  # learning-rate multiplier of the fine-tuned text table
    id_residual: bool = False  # add a zero-initialised free vector per item
    # "pca": text vectors reduced to dim once, at init, then an ordinary table (measured
    # best on ML-100k); "learned": fine-tune the full text table through a projection
    projection: str = "pca"


class SASRecText(SASRec):
    """SASRec whose item table starts from sentence embeddings of the item texts.

    The vectors of ``title`` (plus ``text_fields``) from the text encoder initialise
    the table, which is then fine-tuned with the model (LANE's semantic item
    embedding). If ``dim`` is smaller than the encoder's size the vectors are reduced
    to their top principal components at initialisation (``projection="pca"``) or
    mapped by a learned projection (``"learned"``).
    """

    name = "sasrec-text"
    config_class = SASRecTextConfig
    config: SASRecTextConfig

    def item_text_vectors(self, dataset: Dataset, progress: bool | None = None) -> np.ndarray:
        """Encoder vectors of each item's text, ``(n_items, d_text)`` (cached on disk)."""
        from whyrec.embed import encoder_from_config

        encoder = encoder_from_config(self.config.encoder)
        self.encoder_id = encoder.id
        return encoder.encode(dataset.item_texts(self.config.text_fields), progress=progress)

    def text_item_table(
        self, dataset: Dataset | None, state: dict[str, Any] | None = None
    ) -> TextItemEmbedding:
        """The semantic item table from the encoder (at fit) or shaped for ``state`` (at load)."""
        if state is not None:
            vectors = torch.zeros(self.n_items, state["items.weight"].shape[1])
        else:
            assert dataset is not None
            vectors = torch.from_numpy(self.item_text_vectors(dataset, self._progress))
        c = self.config
        return TextItemEmbedding(
            vectors,
            c.dim,
            center=c.center_text,
            lr_scale=c.text_lr_scale,
            id_residual=c.id_residual,
            projection=c.projection,
        )

    def build_module(
        self, dataset: Dataset | None, state: dict[str, Any] | None = None
    ) -> SequentialModule:
        return SequentialModule(self.text_item_table(dataset, state), self._backbone())

    _progress: bool | None = None

    def _fit(self, dataset: Dataset, **kwargs: Any) -> None:
        self._progress = kwargs.get("progress")
        super()._fit(dataset, **kwargs)
        self.training["encoder"] = getattr(self, "encoder_id", None)
