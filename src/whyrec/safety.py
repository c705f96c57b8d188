"""Untrusted text (item titles, user data, LLM replies, error bodies) at whyrec's boundaries.

One function per boundary, so each boundary applies the same rule everywhere:

* :func:`safe_title` — a title (or any catalogue/user text) inside a sentence a person
  reads: control characters and newlines collapsed, chat-template control strings and
  markup neutralised, capped at ``cap`` characters with an ellipsis.
"""

from __future__ import annotations

import re

#: Longest title shown inside a user-facing sentence.
TITLE_CAP = 80

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_SPECIAL = re.compile(r"<\|[^|<>]{0,40}\|>|</?s>|\[/?INST\]", re.IGNORECASE)
_MARKUP = re.compile(r"[<>{}`]")


def safe_title(text: object, cap: int = TITLE_CAP) -> str:
    """``text`` made safe to quote in a sentence shown to a user (see module doc)."""
    s = _CONTROL.sub(" ", str(text))
    s = _SPECIAL.sub(" ", s)
    s = _MARKUP.sub("", s)
    s = " ".join(s.split())
    if len(s) > cap:
        s = s[: max(1, cap - 1)].rstrip() + "…"
    return s
