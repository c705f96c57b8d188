"""A dependency-free encoder: hashed character n-grams, L2-normalised.

Not semantic in the way a sentence encoder is, but deterministic, instant and always
available — for tests, for smoke runs, and where no model can be installed. Titles
that share words and word pieces get similar vectors.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from whyrec.embed.base import TextEncoder
from whyrec.embed.cache import EmbeddingCache


class HashingEncoder(TextEncoder):
    """Character n-grams (of lower-cased, space-padded words) hashed into ``dim`` buckets."""

    def __init__(
        self,
        dim: int = 64,
        *,
        ngrams: tuple[int, ...] = (3, 4),
        cache: bool | EmbeddingCache = False,
        batch_size: int | None = None,
    ) -> None:
        super().__init__(cache=cache, batch_size=batch_size)
        self._dim = int(dim)
        self.ngrams = tuple(ngrams)

    @property
    def id(self) -> str:
        return f"hashing:{self._dim}:{','.join(map(str, self.ngrams))}"

    @property
    def dim(self) -> int:
        return self._dim

    def config(self) -> dict[str, Any]:
        return {"kind": "hashing", "dim": self._dim, "ngrams": list(self.ngrams)}

    def _encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                padded = f" {word} "
                for n in self.ngrams:
                    for i in range(max(len(padded) - n + 1, 1)):
                        digest = hashlib.blake2b(padded[i : i + n].encode(), digest_size=8).digest()
                        h = int.from_bytes(digest, "little")
                        out[row, h % self._dim] += 1.0 if (h >> 63) & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms > 0, norms, 1.0)
