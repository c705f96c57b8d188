"""Settings files shared by every component: a TOML/JSON file with an optional section
per component (``[llm]``, ``[serve]``), read into pydantic-settings as one source."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

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
