"""An on-disk embedding cache keyed by (encoder id, text), shared safely between processes.

SQLite in WAL mode: many readers, one writer at a time, and a busy timeout instead of
"database is locked" errors when two processes embed at once. Vectors are stored as
raw float32 bytes; a text is identified by its SHA-256 so long texts cost 32 bytes.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from whyrec.paths import cache_dir
from whyrec.sqlite import connect_wal

_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    encoder TEXT NOT NULL,
    text_sha BLOB NOT NULL,
    dim INTEGER NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (encoder, text_sha)
) WITHOUT ROWID
"""
_CHUNK = 500  # stays well below SQLite's bound-parameter limit


def text_key(text: str) -> bytes:
    """The cache key of a text: SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).digest()


class EmbeddingCache:
    """Vectors by (encoder id, text) in one SQLite file (default under ``$WHYREC_HOME``)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else cache_dir("embeddings") / "cache.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._connect()

    def _connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect_wal(self.path, timeout=60.0, schema=[_SCHEMA], isolation_level="")
            self._local.conn = conn
        return conn

    def get(self, encoder: str, texts: Sequence[str]) -> dict[int, np.ndarray]:
        """Cached vectors for ``texts``, as {position in ``texts``: vector}."""
        keys = [text_key(t) for t in texts]
        positions: dict[bytes, list[int]] = {}
        for i, k in enumerate(keys):
            positions.setdefault(k, []).append(i)
        unique = list(positions)
        out: dict[int, np.ndarray] = {}
        conn = self._connect()
        for start in range(0, len(unique), _CHUNK):
            chunk = unique[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(
                f"SELECT text_sha, dim, vector FROM embeddings "
                f"WHERE encoder = ? AND text_sha IN ({marks})",
                [encoder, *chunk],
            ).fetchall()
            for sha, dim, blob in rows:
                vec = np.frombuffer(blob, dtype=np.float32)
                if vec.shape != (dim,):
                    continue  # a damaged row is treated as a miss and re-encoded
                for i in positions[bytes(sha)]:
                    out[i] = vec
        return out

    def put(self, encoder: str, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Store ``vectors[i]`` for ``texts[i]`` (existing entries are kept)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(texts):
            raise ValueError(f"expected {len(texts)} vectors, got shape {vectors.shape}")
        rows = [
            (encoder, text_key(t), int(v.shape[0]), v.tobytes())
            for t, v in zip(texts, vectors, strict=True)
        ]
        conn = self._connect()
        with conn:
            conn.executemany(
                "INSERT OR IGNORE INTO embeddings (encoder, text_sha, dim, vector) "
                "VALUES (?, ?, ?, ?)",
                rows,
            )

    def count(self, encoder: str | None = None) -> int:
        """Number of cached vectors (of one encoder, or all)."""
        conn = self._connect()
        if encoder is None:
            return int(conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])
        return int(
            conn.execute("SELECT COUNT(*) FROM embeddings WHERE encoder = ?", [encoder]).fetchone()[
                0
            ]
        )

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
