"""Any OpenAI-compatible ``/v1/embeddings`` endpoint (OpenAI, vLLM, llama.cpp, Ollama, ...).

The API key is read from an environment variable named in the configuration, never
stored in it, so configs and model manifests can be shared safely.
"""

from __future__ import annotations

import os
from functools import cached_property
from typing import Any

import numpy as np

from whyrec.embed.base import TextEncoder
from whyrec.embed.cache import EmbeddingCache
from whyrec.errors import ConfigError, ModelError


class OpenAIEncoder(TextEncoder):
    """Embeddings from an OpenAI-compatible server.

    ``api_key_env`` names the variable holding the key; local servers that need no key
    accept any value, so a missing variable is an error only when ``require_key``.
    ``dimensions`` is passed through for models that support shortened vectors.
    """

    batch_size = 128

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        require_key: bool = True,
        dimensions: int | None = None,
        timeout: float = 60.0,
        max_retries: int = 3,
        cache: bool | EmbeddingCache = True,
        batch_size: int | None = None,
        http_client: Any = None,
    ) -> None:
        super().__init__(cache=cache, batch_size=batch_size)
        if not model:
            raise ConfigError("OpenAIEncoder needs a model name")
        self.model = model
        self.base_url = base_url
        self.api_key_env = api_key_env
        self.require_key = require_key
        self.dimensions = dimensions
        self.timeout = timeout
        self.max_retries = max_retries
        self._http_client = http_client
        self._dim_value: int | None = dimensions

    @property
    def id(self) -> str:
        dims = f":{self.dimensions}" if self.dimensions else ""
        return f"openai:{self.base_url or 'https://api.openai.com/v1'}:{self.model}{dims}"

    @property
    def dim(self) -> int:
        if self._dim_value is None:
            self._dim_value = int(self._encode(["dimension probe"]).shape[1])
        return self._dim_value

    def config(self) -> dict[str, Any]:
        return {
            "kind": "openai",
            "model": self.model,
            "base_url": self.base_url,
            "api_key_env": self.api_key_env,
            "dimensions": self.dimensions,
        }

    @cached_property
    def client(self) -> Any:
        from openai import OpenAI

        key = os.environ.get(self.api_key_env)
        if not key:
            if self.require_key:
                raise ConfigError(
                    f"environment variable {self.api_key_env} (the API key for "
                    f"{self.base_url or 'OpenAI'}) is not set"
                )
            key = "not-needed"
        else:
            from whyrec.safety import register_secret

            register_secret(key)  # redacted from every error text and stored record
        return OpenAI(
            api_key=key,
            base_url=self.base_url,
            timeout=self.timeout,
            max_retries=self.max_retries,
            http_client=self._http_client,
        )

    def _encode(self, texts: list[str]) -> np.ndarray:
        import openai

        kwargs: dict[str, Any] = {"model": self.model, "input": texts}
        if self.dimensions:
            kwargs["dimensions"] = self.dimensions
        try:
            resp = self.client.embeddings.create(**kwargs)
        except openai.OpenAIError as exc:
            raise ModelError(f"embedding request to {self.id} failed: {exc}") from exc
        data = sorted(resp.data, key=lambda d: d.index)
        if len(data) != len(texts):
            raise ModelError(f"{self.id} returned {len(data)} vectors for {len(texts)} texts")
        vecs = np.asarray([d.embedding for d in data], dtype=np.float32)
        if self._dim_value is None:
            self._dim_value = vecs.shape[1]
        return vecs
