"""The one text-encoder interface: a list of texts in, a float32 matrix out.

Subclasses implement :meth:`TextEncoder._encode` for one batch; the base class adds the
parts every encoder needs — de-duplication, the on-disk cache, batching and a progress
bar — so a second run over the same texts encodes nothing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from whyrec.embed.cache import EmbeddingCache
from whyrec.errors import ModelError


class TextEncoder(ABC):
    """Turns texts into fixed-size float32 vectors.

    ``cache``: ``True`` (default) uses the shared cache under ``$WHYREC_HOME``, an
    :class:`EmbeddingCache` uses that one, ``False`` disables caching.
    """

    batch_size: int = 64
    #: the model pads each batch to its longest text (a local transformer): encode the
    #: shortest texts first
    pads_batches: bool = False

    def __init__(self, *, cache: bool | EmbeddingCache = True, batch_size: int | None = None):
        self._cache_opt = cache
        self._cache: EmbeddingCache | None = cache if isinstance(cache, EmbeddingCache) else None
        if batch_size is not None:
            self.batch_size = batch_size
        self.last_encoded = 0  # texts actually sent to the model by the last encode() call

    @property
    @abstractmethod
    def id(self) -> str:
        """Identifies the encoder *and its weights*; vectors are cached under this id."""

    @property
    @abstractmethod
    def dim(self) -> int:
        """Vector size."""

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """A JSON-able description from which :func:`whyrec.embed.encoder_from_config`
        rebuilds an equivalent encoder (stored in model manifests)."""

    @abstractmethod
    def _encode(self, texts: list[str]) -> np.ndarray:
        """Encode one batch (no cache, no de-duplication)."""

    @property
    def cache(self) -> EmbeddingCache | None:
        if self._cache is None and self._cache_opt is True:
            self._cache = EmbeddingCache()
        return self._cache

    def encode(self, texts: Sequence[str], *, progress: bool | None = None) -> np.ndarray:
        """Vectors for ``texts`` as a ``(len(texts), dim)`` float32 array.

        Identical texts are encoded once; cached texts are not encoded at all.
        ``progress=None`` shows a bar only on an interactive terminal.
        """
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of texts, not a single string")
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
        self.last_encoded = 0
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        cache = self.cache
        found = cache.get(self.id, texts) if cache is not None else {}
        todo: dict[str, list[int]] = {}
        for i, t in enumerate(texts):
            if i not in found:
                todo.setdefault(t, []).append(i)
        out: np.ndarray | None = None
        if found:
            first = next(iter(found.values()))
            out = np.empty((len(texts), len(first)), dtype=np.float32)
            for i, v in found.items():
                out[i] = v
        if todo:
            uniq = list(todo)
            new = self._encode_batched(uniq, progress)
            if out is None:
                out = np.empty((len(texts), new.shape[1]), dtype=np.float32)
            if new.shape[1] != out.shape[1]:
                raise ModelError(
                    f"encoder {self.id!r} returned {new.shape[1]}-d vectors but the cache "
                    f"holds {out.shape[1]}-d ones for the same encoder id"
                )
            for t, v in zip(uniq, new, strict=True):
                out[todo[t]] = v
            if cache is not None:
                cache.put(self.id, uniq, new)
            self.last_encoded = len(uniq)
        assert out is not None
        return out

    def _encode_batched(self, texts: list[str], progress: bool | None) -> np.ndarray:
        """Encode in batches of ``batch_size``; an encoder that pads a batch to its
        longest text (``pads_batches``) gets the shortest texts first, so each batch holds
        texts of similar lengths and wastes less work (``bench/encode.py``). Rows come back
        in the order of ``texts``."""
        from tqdm.auto import tqdm

        order = list(range(len(texts)))
        if self.pads_batches:
            order.sort(key=lambda i: len(texts[i]))
        texts = [texts[i] for i in order]
        parts = []
        with tqdm(
            total=len(texts),
            desc=f"embedding ({self.id.split(':')[0]})",
            unit="text",
            disable=(None if progress is None else not progress),
            leave=False,
        ) as bar:
            for start in range(0, len(texts), self.batch_size):
                batch = texts[start : start + self.batch_size]
                vecs = np.asarray(self._encode(batch), dtype=np.float32)
                if vecs.ndim != 2 or len(vecs) != len(batch):
                    raise ModelError(
                        f"encoder {self.id!r} returned shape {vecs.shape} for {len(batch)} texts"
                    )
                parts.append(vecs)
                bar.update(len(batch))
        out = np.empty((len(texts), parts[0].shape[1]), dtype=np.float32)
        out[order] = np.concatenate(parts, axis=0)
        return out
