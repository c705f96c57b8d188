"""LLM settings: defaults < config file < ``WHYREC_LLM_*`` environment < explicit values.

The config file (TOML or JSON) is named by ``config_file=`` or ``$WHYREC_LLM_CONFIG``;
its keys are the field names below, either at the top level or under an ``[llm]``
table. API keys never live in settings: ``api_key_env`` names the environment variable
that holds the key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from whyrec.config import FileSettings
from whyrec.llm.errors import LLMConfigError
from whyrec.paths import cache_dir

CONFIG_ENV = "WHYREC_LLM_CONFIG"
ENV_PREFIX = "WHYREC_LLM_"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FORBIDDEN_KEYS = ("api_key", "key", "token", "secret")


class Price(BaseModel):
    """US dollars per one million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)


# Public list prices (USD per 1M tokens) of a few common API models, checked in 2025.
# They change; override or extend them with the ``prices`` setting.
BUILTIN_PRICES: dict[str, Price] = {
    "gpt-4o": Price(input=2.50, output=10.00),
    "gpt-4o-mini": Price(input=0.15, output=0.60),
    "gpt-4.1": Price(input=2.00, output=8.00),
    "gpt-4.1-mini": Price(input=0.40, output=1.60),
    "gpt-4.1-nano": Price(input=0.10, output=0.40),
    "gpt-3.5-turbo": Price(input=0.50, output=1.50),
}


#: ``weights``: "file" (as stored) or a llama.cpp file type to re-encode the GGUF into
#: (the name of its ``LLAMA_FTYPE_MOSTLY_*`` constant, lower-cased)
WeightsFormat = Literal["file", "f16", "bf16", "q8_0", "q5_k_m", "q4_k_m", "q4_0", "iq4_nl"]


class LLMSettings(FileSettings):
    """Everything the LLM client needs; every field is also ``WHYREC_LLM_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX)
    config_env: ClassVar[str] = CONFIG_ENV
    config_section: ClassVar[str] = "llm"
    settings_name: ClassVar[str] = "LLM"
    config_error = LLMConfigError

    backend: Literal["local", "openai"] = Field(
        "local", description="'local' runs a GGUF file in-process; 'openai' calls an endpoint."
    )
    model: str | None = Field(
        None,
        description="Model name. Required for 'openai'; for 'local' only a label "
        "(default: the GGUF file name).",
    )
    model_path: Path | None = Field(
        None, description="GGUF file for 'local' (default: the packaged SmolLM2-135M-Instruct)."
    )
    weights: WeightsFormat = Field(
        "file",
        description="'local': 'file' loads the GGUF's weights as stored; f16, bf16, q8_0, "
        "q5_k_m, q4_k_m, q4_0 or iq4_nl re-encode them once (cached under "
        "<WHYREC_HOME>/llm/models). f16 keeps the packaged model's quality and makes prompt "
        "processing and batched decoding faster on CPUs; see docs/batch.md.",
    )
    n_threads: int = Field(
        2, ge=1, description="CPU threads for 'local' (shared out among the workers)."
    )
    n_ctx: int = Field(4096, ge=256, description="Context window (tokens) for 'local'.")
    n_batch: int = Field(512, ge=8, description="Prompt-processing batch size for 'local'.")
    n_parallel: int = Field(
        1,
        ge=1,
        le=64,
        description="Sequences 'local' decodes together (>1: batched decoding, see "
        "docs/batch.md; KV memory grows to n_ctx x n_parallel).",
    )
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Model processes for 'local' (>1: each loads the model with its share "
        "of n_threads, pinned to its own cores, and calls are spread over them; see "
        "docs/batch.md).",
    )
    chat_format: str | None = Field(
        None, description="llama.cpp chat format; default: the GGUF file's own chat template."
    )
    base_url: str | None = Field(
        None, description="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1."
    )
    api_key_env: str = Field(
        "OPENAI_API_KEY", description="Name of the environment variable holding the API key."
    )
    structured_output: Literal["auto", "json_schema", "json_object", "prompt"] = Field(
        "auto",
        description="How 'openai' asks for JSON: auto tries json_schema, then llama.cpp's "
        "json_object+schema, then prompt-and-parse.",
    )
    timeout: float = Field(120.0, gt=0, description="Seconds per attempt.")
    max_retries: int = Field(
        3, ge=0, description="Extra attempts after a timeout, 429, 5xx or connection error."
    )
    backoff_base: float = Field(1.0, ge=0, description="First backoff delay in seconds.")
    backoff_max: float = Field(30.0, ge=0, description="Longest backoff delay in seconds.")
    max_reasks: int = Field(
        2, ge=0, description="Re-asks after a reply that fails the schema, with the error fed back."
    )
    partial_reasks: bool = Field(
        True,
        description="When a reply's problems all lie in some of its top-level fields, re-ask "
        "for those fields only and keep the rest (False: ask for the whole reply again).",
    )
    max_tokens: int = Field(512, ge=1, description="Default completion budget per call.")
    temperature: float = Field(0.0, ge=0, le=2, description="Default sampling temperature.")
    seed: int | None = Field(0, description="Default sampling seed (None: backend's choice).")
    concurrency: int = Field(4, ge=1, description="Default parallel calls in complete_many.")
    cache: bool = Field(True, description="Use the persistent reply cache.")
    retry_failed: bool = Field(
        False,
        description="Ask again for requests whose replies never validated last time (the "
        "cache remembers those failures and answers them without asking the model).",
    )
    cache_path: Path | None = Field(
        None, description="SQLite cache file (default: <WHYREC_HOME>/llm/cache.sqlite)."
    )
    prices: dict[str, Price] = Field(
        default_factory=dict,
        description="USD per 1M input/output tokens by model name; extends the built-in table.",
    )
    prefill_tokens_per_second: float | None = Field(
        None, gt=0, description="Prompt-processing speed for estimates (default: per backend)."
    )
    decode_tokens_per_second: float | None = Field(
        None, gt=0, description="Generation speed for estimates (default: per backend)."
    )
    config_file: Path | None = Field(
        None, description="Where file values came from ($WHYREC_LLM_CONFIG)."
    )

    @field_validator("api_key_env")
    @classmethod
    def _env_name_only(cls, value: str) -> str:
        if not _ENV_NAME.match(value):
            raise ValueError(
                "must be the NAME of an environment variable (letters, digits, '_'), "
                "not the key itself"
            )
        return value

    @model_validator(mode="after")
    def _backend_needs(self) -> LLMSettings:
        if not self.is_local and not self.model:
            raise ValueError(
                "backend 'openai' needs 'model' (the endpoint's model name); set "
                f"{ENV_PREFIX}MODEL or 'model' in the config file"
            )
        return self

    @property
    def calls_to_fill(self) -> int:
        """Calls the local backend decodes at once (``n_parallel`` in each worker)."""
        return self.n_parallel * self.workers if self.is_local else 1

    @classmethod
    def read_config(cls, path: str | Path) -> dict[str, Any]:
        """The ``[llm]`` table (or top level) of a TOML/JSON file, errors naming the file;
        a key that looks like a secret is refused: keys live in environment variables."""
        data = super().read_config(path)
        for key in data:
            if key.lower() in _FORBIDDEN_KEYS:
                raise LLMConfigError(
                    f"{Path(path).expanduser()}: key {key!r} is not allowed: secrets never go "
                    "in config files; put the key in an environment variable and set "
                    "'api_key_env' to that variable's name"
                )
        return data

    @property
    def is_local(self) -> bool:
        """The backend runs the model in this process (``local``), not behind an API:
        the one place the backend's name is read (``make_backend`` builds from it)."""
        return self.backend == "local"

    def resolved_cache_path(self) -> Path:
        """Where the reply cache lives."""
        if self.cache_path is not None:
            return Path(self.cache_path).expanduser()
        return cache_dir("llm") / "cache.sqlite"

    def price_for(self, model: str) -> Price | None:
        """The price of ``model``: exact name first, then the longest matching name prefix
        (so dated snapshots such as ``gpt-4o-mini-2024-07-18`` find ``gpt-4o-mini``)."""
        table = {**BUILTIN_PRICES, **self.prices}
        if model in table:
            return table[model]
        matches = [name for name in table if model.startswith(name + "-")]
        return table[max(matches, key=len)] if matches else None
