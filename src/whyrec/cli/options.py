"""Groups of command-line options declared once and given to several commands.

Typer builds a command's options from its function's signature; :func:`option_group`
appends a group's parameters to that signature (shown in --help after the command's own)
and hands their values to the command together, as one dict keyword.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import Any

#: The help of ``--holdout`` (``preferences``) and ``--pref-holdout`` (``train``, LANE).
HOLDOUT_HELP = (
    "Leak-free preferences: written from the training history up to this many interactions "
    "before its end; LANE learns them on the targets after (0: the whole history)."
)


class OutputFormat(StrEnum):
    """How a command prints its report (``--format``): a table, or JSON for scripts."""

    table = "table"
    json = "json"


#: One option of a group: (parameter name, type, ``typer.Option(...)``).
OptionSpec = tuple[str, Any, Any]


def option_group(
    options: Sequence[OptionSpec], into: str
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give the decorated command ``options``; their values reach it as ``into=dict``
    (the command declares ``*, <into>: dict[str, Any]``, which typer never sees)."""

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        params = inspect.signature(command, eval_str=True).parameters.values()
        own = [p for p in params if p.name != into]
        added = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=kind)
            for name, kind, opt in options
        ]

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> None:
            group = {name: kwargs.pop(name) for name, _, _ in options}
            command(**kwargs, **{into: group})

        wrapper.__signature__ = inspect.Signature(own + added)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in own + added}
        return wrapper

    return decorate
