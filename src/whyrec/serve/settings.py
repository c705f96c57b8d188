"""Service settings: defaults < config file < ``WHYREC_SERVE_*`` environment < explicit values.

The config file (TOML or JSON) is named by ``config_file=`` or ``$WHYREC_SERVE_CONFIG``;
its keys are the field names below, at the top level or under a ``[serve]`` table.

API keys: ``api_keys`` (comma-separated in ``$WHYREC_SERVE_API_KEYS``, or a list in the
file) and/or ``api_keys_file`` (one key per line; ``#`` starts a comment). Without any
key the service refuses to bind to anything but a loopback address.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from whyrec.config import FileSettings
from whyrec.safety import register_secret
from whyrec.serve.store_url import display_url, is_postgres_url

CONFIG_ENV = "WHYREC_SERVE_CONFIG"
ENV_PREFIX = "WHYREC_SERVE_"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (127.0.0.0/8, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ServeSettings(FileSettings):
    """Everything ``whyrec serve`` needs; every field is also ``WHYREC_SERVE_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX)
    config_env: ClassVar[str] = CONFIG_ENV
    config_section: ClassVar[str] = "serve"
    settings_name: ClassVar[str] = "serve"

    run: Path = Field(
        ...,
        description="Model directory written by 'whyrec train' (or a saved outside model), "
        "or an outside model's import path module:object (then 'dataset' is required).",
    )
    host: str = Field("127.0.0.1", description="Address to bind (non-loopback needs API keys).")
    port: int = Field(8000, ge=0, le=65535, description="TCP port.")
    api_keys: SecretStr | None = Field(
        None, description="Accepted bearer tokens, comma-separated (a list in the file)."
    )
    api_keys_file: Path | None = Field(None, description="File with one accepted key per line.")
    store: Path | None = Field(
        None,
        description="SQLite store (default: <RUN>.serve.sqlite next to the run); a "
        "postgresql:// URL given here is taken as store_url.",
    )
    store_url: SecretStr | None = Field(
        None,
        description="PostgreSQL store shared by service replicas: "
        "postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE (default: the SQLite file).",
    )
    store_pool_size: int = Field(
        8, ge=1, le=256, description="Most PostgreSQL connections this process opens."
    )
    store_timeout_s: float = Field(
        1.0,
        gt=0,
        le=300,
        description="With PostgreSQL: seconds a statement waits for a pooled connection, and "
        "a replica's check of the database may take, before the store counts as unreachable.",
    )
    store_check_s: float = Field(
        0.5,
        gt=0,
        le=60,
        description="With PostgreSQL: how often an idle replica checks the database, and how "
        "soon it tries again while the database is unreachable.",
    )
    read_consistency: Literal["session", "strict"] = Field(
        "session",
        description="With PostgreSQL: 'session' answers reads from memory at once (kept "
        "current by LISTEN/NOTIFY) and waits for the database only for a read whose "
        "consistency token (X-Whyrec-After) names a write this replica has not seen yet; "
        "'strict' makes every read wait for one round trip to the database first.",
    )
    store_threads: int = Field(
        4, ge=1, le=256, description="Threads for store writes (never on the event loop)."
    )
    sqlite_synchronous: Literal["FULL", "NORMAL"] = Field(
        "FULL",
        description="FULL: an acknowledged write survives a power cut; NORMAL: survives a "
        "killed process only.",
    )
    dataset: str | None = Field(
        None,
        description="Dataset name or directory for item text fields (genres); default: the "
        "one named in the run's manifest. Optional: the run alone is enough to serve.",
    )
    llm: bool = Field(True, description="Write reasons with the LLM (else grounded templates).")
    llm_config: Path | None = Field(None, description="LLM config file (see docs/llm.md).")
    llm_workers: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Parallel background LLM jobs (default: local n_parallel x workers, "
        "API concurrency).",
    )
    explain_budget_s: float = Field(
        1.5, ge=0, le=600, description="How long a request waits for a new LLM reason."
    )
    explain_max_wait_s: float = Field(
        60.0, ge=0, le=600, description="Upper bound of a request's own 'wait_s'."
    )
    llm_retry_s: float = Field(
        300.0, ge=0, description="After a failed LLM reason, ask again no sooner than this."
    )
    llm_claim_s: float = Field(
        900.0,
        gt=0,
        description="With a shared store (replicas): how long one replica's claim on writing "
        "a reason with the LLM holds; another replica takes it over after that (its owner "
        "was killed).",
    )
    llm_outage_cooldown_s: float = Field(
        30.0, ge=0, description="After an LLM outage, start no new LLM job for this long."
    )
    max_pending_llm: int = Field(256, ge=1, description="Most queued background LLM jobs.")
    k_default: int = Field(10, ge=1, description="k when the request gives none.")
    k_max: int = Field(100, ge=1, le=10_000, description="Largest k a request may ask for.")
    max_history: int = Field(
        2000, ge=1, description="Most items in a posted history or interaction batch."
    )
    max_body_bytes: int = Field(
        1_048_576,
        ge=1024,
        le=1 << 30,
        description="Largest request body in bytes (a larger one is refused with 413).",
    )
    explanation_cache_size: int = Field(
        20_000, ge=0, description="Explanations kept in memory (LRU in front of SQLite)."
    )
    response_cache_size: int = Field(4096, ge=0, description="Encoded responses kept in memory.")
    precompute: bool = Field(
        True, description="Compute every known user's top-k_max at start (in the background)."
    )
    model_threads: int = Field(2, ge=1, le=64, description="Threads for model computations.")
    history_window: int = Field(15, ge=1, description="History titles shown to the LLM.")
    pref_window: int = Field(200, ge=1, description="History titles for new users' preferences.")
    access_log: bool = Field(True, description="uvicorn access log.")
    config_file: Path | None = Field(None, description="Where file values came from.")

    @field_validator("api_keys", mode="before")
    @classmethod
    def _join_list(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return ",".join(str(v) for v in value)
        return value

    @model_validator(mode="before")
    @classmethod
    def _url_in_store(cls, data: Any) -> Any:
        """``store=postgresql://…`` (the CLI's --store, $WHYREC_SERVE_STORE) is the URL."""
        if isinstance(data, dict):
            value = data.get("store")
            if is_postgres_url(value):
                if data.get("store_url") is not None:
                    raise ValueError("give the store once: a SQLite path or store_url, not both")
                data = {**data, "store_url": value.strip()}
                del data["store"]
        return data

    @model_validator(mode="after")
    def _check(self) -> ServeSettings:
        if self.store_url is not None:
            if self.store is not None:
                raise ValueError("give the store once: a SQLite path or store_url, not both")
            url = self.store_url.get_secret_value().strip()
            if not is_postgres_url(url):
                raise ValueError(  # the value itself is not repeated: it may hold a password
                    "store_url must be a URL starting with postgresql:// (or postgres://)"
                )
        if self.k_default > self.k_max:
            raise ValueError(f"k_default ({self.k_default}) is larger than k_max ({self.k_max})")
        if self.api_keys_file is not None and not Path(self.api_keys_file).is_file():
            raise ValueError(f"api_keys_file {self.api_keys_file} does not exist")
        if not self.keys() and not is_loopback(self.host):
            raise ValueError(
                f"refusing to serve on {self.host!r} without API keys: anyone on the network "
                f"could use it. Set {ENV_PREFIX}API_KEYS (or api_keys_file), or bind 127.0.0.1"
            )
        return self

    def keys(self) -> list[str]:
        """Every accepted API key (empty: authentication is off)."""
        out: list[str] = []
        if self.api_keys is not None:
            out += [k.strip() for k in self.api_keys.get_secret_value().split(",")]
        if self.api_keys_file is not None:
            for line in Path(self.api_keys_file).read_text(encoding="utf-8").splitlines():
                out.append(line.split("#", 1)[0].strip())
        keys = [k for k in dict.fromkeys(out) if k]
        for key in keys:  # the service's bearer tokens: redacted wherever text is redacted
            register_secret(key)
        return keys

    @property
    def auth_enabled(self) -> bool:
        return bool(self.keys())

    def store_path(self) -> Path:
        """The SQLite file: ``store`` or ``<run>.serve.sqlite`` beside the run directory
        (not used when ``store_url`` names a PostgreSQL database)."""
        if self.store is not None:
            return Path(self.store).expanduser()
        run = Path(self.run).expanduser().resolve()
        # an import path (module:object) is no directory: its store goes in the working
        # directory, named after it
        return run.with_name(run.name.replace(":", "-") + ".serve.sqlite")

    def store_display(self) -> str:
        """Where the store is, for logs: the SQLite path or the URL without its password."""
        if self.store_url is not None:
            return display_url(self.store_url.get_secret_value())
        return str(self.store_path())
