"""Recommenders with one API: ``fit``, ``recommend``, ``score``, ``save``/``load``.

=============  ====================================================================
name           model
=============  ====================================================================
popularity     most interactions in training (baseline)
bpr-mf         matrix factorisation, BPR loss (baseline)
sasrec         SASRec, ID item embeddings
sasrec-text    SASRec, item table initialised from title embeddings (LANE's backbone)
gru4rec        GRU4Rec
outside        a model trained elsewhere behind an adapter (:mod:`whyrec.models.outside`)
=============  ====================================================================
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from whyrec.data.dataset import Dataset
from whyrec.errors import ConfigError, ModelError
from whyrec.models.backbones import (
    GRU4RecBackbone,
    IdItemEmbedding,
    ItemEmbedding,
    SASRecBackbone,
    SequenceBackbone,
    SequentialModule,
    TextItemEmbedding,
)
from whyrec.models.base import Recommendations, Recommender, read_manifest
from whyrec.models.bpr import BPRMF
from whyrec.models.gru4rec import GRU4Rec
from whyrec.models.outside import OutsideModel, OutsideScorer, is_import_path, model_from_import
from whyrec.models.popularity import Popularity
from whyrec.models.protocols import ExplainableModel
from whyrec.models.sasrec import SASRec, SASRecText
from whyrec.models.sequential import SequenceTask, SequentialConfig, SequentialRecommender
from whyrec.models.training import EpochInfo, LoopSettings, run_training

MODELS: dict[str, type[Recommender]] = {
    cls.name: cls for cls in (Popularity, BPRMF, SASRec, SASRecText, GRU4Rec, OutsideModel)
}
ALIASES = {"pop": "popularity", "bpr": "bpr-mf", "sasrec-id": "sasrec", "gru": "gru4rec"}

__all__ = [
    "BPRMF",
    "MODELS",
    "EpochInfo",
    "ExplainableModel",
    "GRU4Rec",
    "GRU4RecBackbone",
    "IdItemEmbedding",
    "ItemEmbedding",
    "LoopSettings",
    "OutsideModel",
    "OutsideScorer",
    "Popularity",
    "Recommendations",
    "Recommender",
    "SASRec",
    "SASRecBackbone",
    "SASRecText",
    "SequenceBackbone",
    "SequenceTask",
    "SequentialConfig",
    "SequentialModule",
    "SequentialRecommender",
    "TextItemEmbedding",
    "create_model",
    "load_model",
    "model_class",
    "register_model",
    "run_training",
]


def register_model(cls: type[Recommender]) -> type[Recommender]:
    """Make ``cls`` known to :func:`create_model`, :func:`load_model` and the CLI."""
    MODELS[cls.name] = cls
    return cls


def model_class(name: str) -> type[Recommender]:
    """The class registered under ``name`` (aliases such as ``sasrec-id`` accepted)."""
    key = ALIASES.get(name, name)
    if key not in MODELS:
        raise ConfigError(f"unknown model {name!r}; available: {sorted(MODELS)}")
    return MODELS[key]


def create_model(name: str, **config: Any) -> Recommender:
    """An unfitted model by name, e.g. ``create_model("sasrec-text", loss="ce")``."""
    return model_class(name)(**config)


def load_model(path: str | Path, dataset: Dataset | None = None) -> Recommender:
    """Load any model directory written by :meth:`Recommender.save` — whyrec's own
    models and outside ones (the manifest names the adapter) — or, for ``path`` of the
    form ``module.path:object``, the outside model that object names (``dataset``
    required: see :func:`whyrec.models.outside.model_from_import`)."""
    if is_import_path(path):
        return model_from_import(str(path), dataset)
    manifest = read_manifest(path)
    name = manifest["model"]
    if name not in MODELS:
        raise ModelError(f"{path} holds an unknown model type {name!r}; known: {sorted(MODELS)}")
    return MODELS[name].load(path, dataset)


def _register_lane() -> None:
    # LANE builds on the classes above, so it registers itself last
    from whyrec.models.lane import Lane

    MODELS[Lane.name] = Lane


_register_lane()
