"""Text encoders: texts in, float32 vectors out, cached on disk.

``get_encoder()`` gives the default, the packaged all-MiniLM-L6-v2 (384-d, offline);
:class:`OpenAIEncoder` talks to any OpenAI-compatible ``/v1/embeddings`` endpoint.
Items, and later users' preference sentences, are embedded by the same encoder.
"""

from __future__ import annotations

from typing import Any

from whyrec.embed.base import TextEncoder
from whyrec.embed.cache import EmbeddingCache
from whyrec.embed.hashing import HashingEncoder
from whyrec.embed.openai import OpenAIEncoder
from whyrec.embed.sentence import SentenceTransformerEncoder, minilm_dir
from whyrec.errors import ConfigError

__all__ = [
    "EmbeddingCache",
    "HashingEncoder",
    "OpenAIEncoder",
    "SentenceTransformerEncoder",
    "TextEncoder",
    "encoder_from_config",
    "get_encoder",
    "minilm_dir",
]


def encoder_from_config(config: dict[str, Any] | None, **kwargs: Any) -> TextEncoder:
    """Rebuild an encoder from :meth:`TextEncoder.config` output (``None`` = MiniLM)."""
    config = dict(config or {"kind": "minilm"})
    kind = config.pop("kind", "minilm")
    if kind == "minilm":
        return SentenceTransformerEncoder(None, **config, **kwargs)
    if kind == "sentence-transformers":
        return SentenceTransformerEncoder(config.pop("model_dir"), **config, **kwargs)
    if kind == "openai":
        return OpenAIEncoder(config.pop("model"), **config, **kwargs)
    if kind == "hashing":
        if "ngrams" in config:
            config["ngrams"] = tuple(config["ngrams"])
        return HashingEncoder(**config, **kwargs)
    raise ConfigError(
        f"unknown encoder kind {kind!r}; expected 'minilm', 'sentence-transformers', "
        "'openai' or 'hashing'"
    )


def get_encoder(
    spec: str | dict[str, Any] | TextEncoder | None = None, **kwargs: Any
) -> TextEncoder:
    """An encoder from a short spec.

    ``None``/``"minilm"``: packaged all-MiniLM-L6-v2. ``"st:/path/to/model"``: a local
    sentence-transformers directory. ``"openai:MODEL"``: an OpenAI-compatible endpoint
    (pass ``base_url=``/``api_key_env=``). A dict is read by :func:`encoder_from_config`.
    """
    if isinstance(spec, TextEncoder):
        return spec
    if spec is None or isinstance(spec, dict):
        return encoder_from_config(spec, **kwargs)
    if spec == "minilm":
        return SentenceTransformerEncoder(None, **kwargs)
    if spec.startswith("st:"):
        return SentenceTransformerEncoder(spec[3:], **kwargs)
    if spec == "hashing" or spec.startswith("hashing:"):
        dim = int(spec.split(":", 1)[1]) if ":" in spec else 64
        return HashingEncoder(dim, **kwargs)
    if spec.startswith("openai:"):
        return OpenAIEncoder(spec[len("openai:") :], **kwargs)
    raise ConfigError(
        f"unknown encoder {spec!r}; expected 'minilm', 'st:<model dir>', 'openai:<model>' "
        "or 'hashing[:dim]'"
    )
