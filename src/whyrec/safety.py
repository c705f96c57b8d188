"""Untrusted text (item titles, user data, LLM replies, error bodies) at whyrec's boundaries.

One function per boundary, so each boundary applies the same rule everywhere:

* :func:`safe_title` — a title (or any catalogue/user text) inside a sentence a person
  reads: control characters and newlines collapsed, chat-template control strings and
  markup neutralised, capped at ``cap`` characters with an ellipsis.
* :func:`terminal_text` — any text printed through rich (console output of the CLI):
  rich markup escaped so ``[bold]`` or ``[/INST]`` print literally instead of styling or
  raising ``MarkupError``; terminal control characters (ESC sequences etc.) and
  bidirectional controls shown as visible ``\\xNN``/``\\uNNNN`` escapes; newlines and tabs
  kept; optionally capped.
  :func:`printable_text` is the same without the markup escaping, for plain ``echo``.
* :func:`prompt_value` / :func:`prompt_json` — data placed in an LLM prompt: one line,
  capped per field (:data:`PROMPT_FIELD_CAP`, :data:`PROMPT_TEXT_CAP`), and in the JSON
  every ``<``, ``>`` and the ``[`` of ``[INST]``-style markers written as ``\\uXXXX``
  escapes, so no chat-template control string appears literally in the prompt text. The
  embedded backend also tokenizes message contents without special tokens
  (:func:`whyrec.llm.backends.local.guard_special_tokens`).
* :func:`quote_title` — a title inside a generated sentence: :func:`safe_title` in
  quotation marks, so it reads as a name, never as part of the sentence.
* :func:`redact_secrets` / :func:`redact` / :func:`redact_tree` — any text (error bodies,
  exception messages, LLM replies and every field of a stored LLM record) before it is
  stored or printed: the key values this process holds (:func:`register_secret`) and
  ``Authorization``/``Bearer``/``sk-...`` strings replaced by ``[redacted]``.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable
from typing import Any

#: Longest title shown inside a user-facing sentence.
TITLE_CAP = 80

#: Bidirectional embedding, override and isolate controls (U+202A–U+202E, U+2066–U+2069):
#: invisible, they reorder the text around them ("Harmless \u202egpj.exe" shows as
#: "Harmless exe.jpg"). Every rule below treats them as control characters; the web page
#: applies the same class (``shown`` in ``whyrec/serve/static/app.js``).
BIDI_CONTROLS = r"\u202a-\u202e\u2066-\u2069"
_CONTROL = re.compile(rf"[\x00-\x1f\x7f-\x9f\u2028\u2029{BIDI_CONTROLS}]+")
_SPECIAL = re.compile(r"<\|[^|<>]{0,40}\|>|</?s>|\[/?INST\]", re.IGNORECASE)
_MARKUP = re.compile(r"[<>{}`]")


#: What a terminal or the page shows as visible ``\xNN``/``\uNNNN`` text (newline and tab
#: kept).
TERMINAL_CONTROL_CHARS = rf"\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029{BIDI_CONTROLS}"
_TERMINAL_CONTROL = re.compile(f"[{TERMINAL_CONTROL_CHARS}]")


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

    return escape(printable_text(text, cap))


_JSON_INVISIBLE = re.compile(rf"[\x7f-\x9f\u2028\u2029{BIDI_CONTROLS}]")


def terminal_json(value: object, indent: int | None = 2) -> str:
    """``value`` as JSON for a terminal: non-ASCII text kept readable, but every character a
    terminal would act on (C0 controls, as JSON always does, and DEL, C1 controls, line
    separators and bidirectional controls) written as a ``\\uXXXX`` escape. The JSON
    decodes to exactly the same data."""
    text = json.dumps(value, indent=indent, ensure_ascii=False)
    return _JSON_INVISIBLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def sentence_text(text: object) -> str:
    """Model-written prose (a reason, a preference) as one line: control characters,
    bidirectional controls included, and runs of whitespace collapsed to single spaces."""
    return " ".join(_CONTROL.sub(" ", str(text)).split())


def printable_text(text: object, cap: int | None = None) -> str:
    """``text`` for a plain terminal write (``typer.echo``): control characters other than
    newline and tab shown as visible escapes, optionally capped; no markup escaping."""
    s = str(text)
    if cap is not None and len(s) > cap:
        s = s[: max(1, cap - 1)].rstrip() + "…"
    return _TERMINAL_CONTROL.sub(_visible_control, s)


#: Longest single value (a history title, a preference, a tag) inside a prompt.
PROMPT_FIELD_CAP = 300
#: Longest single free-text value in a prompt (an item's title with its text fields).
PROMPT_TEXT_CAP = 600

_PROMPT_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "[": "\\u005b"}
# every angle bracket (chat markers: <|im_start|>, <s>, </s>, <start_of_turn>, ...) and
# the bracket opening a Llama/Mistral marker ([INST], [/INST], [AVAILABLE_TOOLS], ...;
# "[Blu-ray]" or "[VHS]" in a title stays as it is)
_PROMPT_MARKER = re.compile(r"[<>]|\[(?=/?(?:INST|SYS|[A-Z]+_[A-Z_]+)\])")


def prompt_value(text: object, cap: int = PROMPT_FIELD_CAP) -> str:
    """One untrusted value for a prompt: control characters and runs of whitespace (200
    newlines included) collapsed to single spaces, cut to ``cap`` characters with "…"."""
    s = " ".join(_CONTROL.sub(" ", str(text)).split())
    if len(s) > cap:
        s = s[: max(1, cap - 1)].rstrip() + "…"
    return s


def prompt_json(
    values: str | Iterable[object], cap: int = PROMPT_FIELD_CAP, text_cap: int = PROMPT_TEXT_CAP
) -> str:
    """``values`` (one string, or a list of values) as JSON for a prompt's data block.

    List entries go through :func:`prompt_value` with ``cap``, a single string with
    ``text_cap``. Then ``<``, ``>`` and the ``[`` of ``[INST]``-like markers are written
    as JSON escapes: the JSON decodes to the same text, but no tokenizer reads a control
    string (or a closing ``</data>``) out of it.
    """
    if isinstance(values, str):
        data: object = prompt_value(values, text_cap)
    else:
        data = [prompt_value(v, cap) for v in values]
    payload = json.dumps(data, ensure_ascii=False)
    return _PROMPT_MARKER.sub(lambda m: _PROMPT_ESCAPES[m.group()], payload)


def quote_title(text: object, cap: int = TITLE_CAP) -> str:
    """A title for a sentence shown to a user: :func:`safe_title` inside “quotes”."""
    inner = safe_title(text, cap).replace("“", '"').replace("”", '"')
    return f"“{inner}”"


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
    re.compile(r"""(?i)(\b(?:x-)?api[-_]?key["']?\s*[:=]\s*["']?)[^\s"',;}&]+"""),
    re.compile(r"()\bsk-[A-Za-z0-9_-]{16,}"),
)


_SECRETS: set[str] = set()
_SECRETS_LOCK = threading.Lock()


def register_secret(value: str | None) -> None:
    """Remember a credential this process holds (an LLM or encoder API key read from the
    environment, the service's own API keys), so :func:`redact` replaces it everywhere
    from now on. Values shorter than 8 characters are ignored (see :func:`redact_secrets`)."""
    if value and len(value) >= 8:
        with _SECRETS_LOCK:
            _SECRETS.add(value)


def registered_secrets() -> tuple[str, ...]:
    """Every secret registered so far."""
    with _SECRETS_LOCK:
        return tuple(_SECRETS)


def redact(text: object) -> str:
    """``text`` with every registered secret and credential-looking string redacted."""
    return redact_secrets(str(text), registered_secrets())


def redact_tree(value: Any) -> Any:
    """``value`` (JSON-like: dicts, lists, strings, numbers) with :func:`redact` applied to
    every string in it, keys included; other values are returned as they are. Used on every
    record the LLM layer stores or hands on (a cached reply, a remembered failure)."""
    secrets = registered_secrets()

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            return redact_secrets(v, secrets)
        if isinstance(v, dict):
            return {walk(k): walk(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [walk(x) for x in v]
        return v

    return walk(value)


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


#: Most characters of a request value an HTTP error body repeats.
ECHO_CAP = 100


def echo_text(text: object, cap: int = ECHO_CAP) -> str:
    """Untrusted request text repeated in an HTTP error body (a 422 naming the bad value):
    cut to ``cap`` characters, saying how long it was, control characters shown as
    visible escapes, and lone UTF-16 surrogates (which no UTF-8 body can carry) replaced
    by U+FFFD, so the reply is always small and encodable."""
    s = str(text)
    n = len(s)
    if n > cap:
        s = s[: max(1, cap - 1)] + f"… ({n} characters)"
    s = s.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return _TERMINAL_CONTROL.sub(_visible_control, s)
