"""Settings files shared by every component: a TOML/JSON file with an optional section
per component (``[llm]``, ``[serve]``), read into pydantic-settings as one source, and
:class:`FileSettings`, the base of every settings class that reads one."""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Self

from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from whyrec.errors import ConfigError


def read_config_section(
    path: str | Path, section: str, *, error: type[ConfigError] = ConfigError
) -> dict[str, Any]:
    """The ``[section]`` table of a TOML/JSON file (or its top level), errors naming the file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise error(f"{path}: {section} config file not found (expected a .toml or .json file)")
    text = path.read_text(encoding="utf-8")
    kind = "JSON" if path.suffix.lower() == ".json" else "TOML"
    try:
        data = json.loads(text) if kind == "JSON" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise error(f"{path}: not valid {kind}: {exc}") from exc
    if not isinstance(data, dict):
        raise error(f"{path}: expected a table/object of settings at the top level")
    if isinstance(data.get(section), dict):
        data = data[section]
    return dict(data)


class ConfigFileSource(PydanticBaseSettingsSource):
    """The values of one settings file, read by ``reader``; records the file's path."""

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        path: str | Path | None,
        reader: Callable[[str | Path], dict[str, Any]],
    ) -> None:
        super().__init__(settings_cls)
        self.path = path
        self.reader = reader

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ returns the whole file at once

    def __call__(self) -> dict[str, Any]:
        if not self.path:
            return {}
        data = self.reader(self.path)
        data.setdefault("config_file", str(self.path))
        return data


class FileSettings(BaseSettings):
    """Settings from, highest precedence first: values given in code (``config_file``
    among them), ``<PREFIX><FIELD>`` environment variables, then the settings file named
    by ``config_file`` or by the ``config_env`` environment variable, its
    ``config_section`` read by :meth:`read_config`. Subclasses set ``env_prefix`` in their
    ``model_config`` and the class variables below; unknown keys are refused and a
    settings object is frozen."""

    model_config = SettingsConfigDict(extra="forbid", validate_default=True, frozen=True)

    #: the environment variable that names the settings file, e.g. ``WHYREC_LLM_CONFIG``
    config_env: ClassVar[str] = ""
    #: the settings' table in a settings file (``[llm]``, ``[serve]``); the page
    #: ``docs/<section>.md`` lists them
    config_section: ClassVar[str] = ""
    #: what the settings are for, in error messages ("invalid LLM settings: ...")
    settings_name: ClassVar[str] = "whyrec"
    #: raised by :meth:`load` for invalid values
    config_error: ClassVar[type[ConfigError]] = ConfigError

    @classmethod
    def read_config(cls, path: str | Path) -> dict[str, Any]:
        """The ``config_section`` table (or the top level) of a TOML/JSON settings file;
        errors are ``config_error`` naming the file."""
        return read_config_section(path, cls.config_section, error=cls.config_error)

    @classmethod
    def load(cls, config_file: str | Path | None = None, **overrides: Any) -> Self:
        """Settings from all sources; ``overrides`` whose value is ``None`` are ignored, so
        CLI options can be passed straight through.

        Invalid values raise ``config_error`` (a :class:`whyrec.errors.ConfigError`) with
        one message naming each bad field, its environment variable and the config file.
        """
        values = {k: v for k, v in overrides.items() if v is not None}
        if config_file is not None:
            values["config_file"] = config_file
        try:
            return cls(**values)
        except ValidationError as exc:
            path = config_file or os.environ.get(cls.config_env)
            raise cls.config_error(cls._describe(exc, path)) from None

    @classmethod
    def _describe(cls, exc: ValidationError, config_file: str | Path | None) -> str:
        """One message naming each bad field, its environment variable and the file."""
        prefix = str(cls.model_config.get("env_prefix", ""))
        parts = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                page = f"docs/{cls.config_section}.md"
                parts.append(f"{loc}: unknown setting (see {page} for the list)")
            elif loc:
                env = prefix + str(err["loc"][0]).upper()
                parts.append(
                    f"{loc} (env {env}): {'required' if err['type'] == 'missing' else msg}"
                )
            else:
                parts.append(msg)
        where = f" (config file {config_file})" if config_file else ""
        return f"invalid {cls.settings_name} settings{where}: " + "; ".join(parts)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        init_kwargs = getattr(init_settings, "init_kwargs", {}) or {}
        path = init_kwargs.get("config_file") or os.environ.get(cls.config_env) or None
        file_source = ConfigFileSource(settings_cls, path, cls.read_config)
        return (init_settings, env_settings, file_source)
