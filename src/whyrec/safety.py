"""Untrusted text (item titles, user data, LLM replies, error bodies) at whyrec's boundaries.

One function per boundary, so each boundary applies the same rule everywhere:

* :func:`safe_title` — a title (or any catalogue/user text) inside a sentence a person
  reads: control characters and newlines collapsed, chat-template control strings and
  markup neutralised, capped at ``cap`` characters with an ellipsis.
* :func:`terminal_text` — any text printed through rich (console output of the CLI):
  rich markup escaped so ``[bold]`` or ``[/INST]`` print literally instead of styling or
  raising ``MarkupError``; terminal control characters (ESC sequences etc.) shown as
  visible ``\\xNN`` escapes; newlines and tabs kept; optionally capped.
* :func:`redact_secrets` — error text (HTTP error bodies, exception messages) before it
  is stored or printed: configured key values and ``Authorization``/``Bearer`` strings
  replaced by ``[redacted]``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

#: Longest title shown inside a user-facing sentence.
TITLE_CAP = 80

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_SPECIAL = re.compile(r"<\|[^|<>]{0,40}\|>|</?s>|\[/?INST\]", re.IGNORECASE)
_MARKUP = re.compile(r"[<>{}`]")


_TERMINAL_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def _visible_control(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal_text(text: object, cap: int | None = None) -> str:
    """``text`` ready to pass to rich's ``console.print`` as *markup*: it prints literally.

    Rich markup (``[bold red]``, ``[/INST]``, ``[link=...]``) is escaped, control
    characters other than newline and tab (ESC, carriage return, bell, C1 controls, line
    separators) become visible ``\\xNN``/``\\uNNNN`` text, and with ``cap`` the text is
    cut to ``cap`` characters ending in an ellipsis. Use it for every piece of untrusted
    text (titles, user ids, LLM replies, error messages) interpolated into a rich string.
    """
    from rich.markup import escape

    s = str(text)
    if cap is not None and len(s) > cap:
        s = s[: max(1, cap - 1)].rstrip() + "…"
    s = _TERMINAL_CONTROL.sub(_visible_control, s)
    return escape(s)


def safe_title(text: object, cap: int = TITLE_CAP) -> str:
    """``text`` made safe to quote in a sentence shown to a user (see module doc)."""
    s = _CONTROL.sub(" ", str(text))
    s = _SPECIAL.sub(" ", s)
    s = _MARKUP.sub("", s)
    s = " ".join(s.split())
    if len(s) > cap:
        s = s[: max(1, cap - 1)].rstrip() + "…"
    return s


#: What a secret is replaced with in text that is stored or printed.
REDACTED = "[redacted]"

# Credentials an error body may echo back: Authorization/Proxy-Authorization header
# values (any scheme), bare bearer tokens, api-key style parameters and OpenAI-shaped keys.
_SECRET_PATTERNS = (
    re.compile(
        r"""(?i)((?:proxy-)?authorization["']?\s*[:=]\s*["']?)(?:(?:bearer|basic|token)\s+)?"""
        r"""[^\s"',;}]+"""
    ),
    re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=-]{4,}"),
    re.compile(
        r"""(?i)(\b(?:x-)?api[-_]?key["']?\s*[:=]\s*["']?)[^\s"',;}&]+"""
    ),
    re.compile(r"()\bsk-[A-Za-z0-9_-]{16,}"),
)


def redact_secrets(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with credentials replaced by ``[redacted]`` before it is stored or printed.

    Every value in ``secrets`` (e.g. the configured API key; values shorter than 8
    characters are ignored, they would blank ordinary words) is replaced wherever it
    occurs, and so are ``Authorization: ...`` / ``Bearer ...`` strings, ``api_key=...``
    style parameters and ``sk-...`` keys, whatever key produced them. Use it on every
    error text that may echo a request (HTTP error bodies, exception messages).
    """
    s = str(text)
    for secret in sorted({x for x in secrets if x and len(x) >= 8}, key=len, reverse=True):
        s = s.replace(secret, REDACTED)
    for pattern in _SECRET_PATTERNS:
        s = pattern.sub(lambda m: m.group(1) + REDACTED, s)
    return s
