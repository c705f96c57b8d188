"""The one rule for user and item ids, at the data boundary and in the HTTP API.

A user or item id is a non-empty string or an integer, nothing else:

* strings are stripped; an empty string, or one that spells a missing value the way
  pandas writes it (``NaN``, ``nan``, ``None``, ``NULL``, ``N/A``, ``<NA>``, ... — see
  :data:`MISSING_SPELLINGS`), is not an id (``"NaN"`` and ``"nan"`` would otherwise become
  two users);
* a string id has at most :data:`MAX_ID_LENGTH` (128) characters and no control
  character (C0 and C1 controls, DEL — a NUL made ``3\x00`` a user apart from ``3``),
  line or paragraph separator, bidirectional control (U+200E/F, U+202A–U+202E,
  U+2066–U+2069: they reorder what a terminal or page shows) or lone surrogate; it is not
  ``.`` or ``..`` (no URL can name those). Any other character is allowed, ``/``
  included: the service's ``/v1/users/{user}/...`` routes take an id with ``/`` written
  as ``%2F`` (or as it is);
* integers (Python or NumPy, not booleans) are ids and are kept as their decimal text,
  negative ones included: ``-5`` is the id ``"-5"`` (an integer id is an id; nothing in
  whyrec gives ids an order or a sign);
* floats (``1.5``, ``1.0``, NaN), booleans, lists, dicts, bytes and None are errors: they
  would otherwise be stringified silently (``'1.5'``, ``'[1]'``, ``"b'...'"``).

A bad id is a :class:`~whyrec.errors.DataError` naming the row and the value, unless the
caller asked to drop such rows; then the count goes into the manifest's loading notes.
The HTTP API applies :func:`check_id` to every user id it is given (422 otherwise).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from numbers import Integral
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from whyrec.errors import DataError

#: Strings that mean "no value" (pandas' default ``na_values``); never ids.
MISSING_SPELLINGS = frozenset(
    {
        "",
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "-nan",
        "1.#IND",
        "1.#QNAN",
        "<NA>",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "None",
        "n/a",
        "nan",
        "null",
    }
)


#: Longest id in characters (after stripping), in files and in the HTTP API alike.
MAX_ID_LENGTH = 128

#: Characters no id may hold (see the module doc), as regex escapes that Python's ``re``,
#: JSON Schema (ECMA-262) and pydantic's regex engine all read the same way.
FORBIDDEN_ID_CHARS = r"\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069"
_FORBIDDEN = re.compile(rf"[{FORBIDDEN_ID_CHARS}\ud800-\udfff]")
#: A JSON-Schema pattern for the characters of an id: the API documents the rule with it
#: (lone surrogates never get that far: the body guard refuses them).
ID_PATTERN = f"^[^{FORBIDDEN_ID_CHARS}]+$"


def text_id_problem(text: str) -> str | None:
    """Why the (already stripped) string ``text`` is not a valid id, or None."""
    if text == "":
        return "empty id"
    if text in MISSING_SPELLINGS:
        return f"empty id ({text!r} spells a missing value)"
    if len(text) > MAX_ID_LENGTH:
        return f"id of {len(text):,} characters; at most {MAX_ID_LENGTH}"
    bad = _FORBIDDEN.search(text)
    if bad is not None:
        return (
            f"id {_shown(text)} holds the control character U+{ord(bad.group()):04X} at "
            f"position {bad.start() + 1}; ids may not hold control, line-separator or "
            "bidirectional-control characters"
        )
    if text in (".", ".."):
        return f"{text!r} is not an id (no URL can name it)"
    return None


def check_id(value: str) -> str:
    """``value`` stripped, or a ValueError saying why it is not an id (the API's rule)."""
    text = value.strip()
    problem = text_id_problem(text)
    if problem is not None:
        raise ValueError(problem)
    return text


def _shown(text: str) -> str:
    shown = text if len(text) <= 40 else text[:37] + "..."
    return repr(shown).encode("ascii", "backslashreplace").decode("ascii")


def id_problem(value: Any) -> str | None:
    """Why ``value`` is not a valid id, or None when it is one."""
    if isinstance(value, str):
        return text_id_problem(value.strip())
    if isinstance(value, bool | np.bool_):
        return f"a boolean ({value!r}) is not an id"
    if isinstance(value, Integral):
        return None
    if value is None or value is pd.NA or value is pd.NaT:
        return "empty id (no value)"
    if isinstance(value, float | np.floating):
        if np.isnan(value):
            return "empty id (NaN)"
        return f"a float ({value!r}) is not an id; ids are strings or integers"
    kind = type(value).__name__
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return f"a {kind} ({shown}) is not an id; ids are strings or integers"


def clean_ids(
    values: pd.Series,
    error: Callable[[int, str], DataError],
    *,
    drop: bool = False,
) -> tuple[pd.Series, np.ndarray]:
    """``values`` as stripped id strings, and a mask of the rows that hold a valid id.

    Without ``drop`` the first invalid row raises ``error(position, reason)``; with it
    the invalid rows are only marked False in the mask (their text is ``""``).
    """
    n = len(values)
    if ptypes.is_bool_dtype(values):
        bad = np.ones(n, dtype=bool)
    elif ptypes.is_integer_dtype(values) and not values.isna().any():
        return values.astype("int64").astype(str).reset_index(drop=True), np.ones(n, bool)
    else:
        obj = values.astype(object).reset_index(drop=True)
        kind = ptypes.infer_dtype(obj, skipna=False)
        if kind == "string":
            text = obj.str.strip()
            bad = text.isin(MISSING_SPELLINGS | {".", ".."}).to_numpy(copy=True)
            bad |= np.fromiter(map(len, text), dtype=np.int64, count=n) > MAX_ID_LENGTH
            # one search over all ids at once (joining cannot make a forbidden character);
            # only when it finds one are the ids searched one by one
            if _FORBIDDEN.search("".join(text)) is not None:
                bad |= np.fromiter((_FORBIDDEN.search(v) is not None for v in text), bool, n)
            if not bad.any():
                return text, np.ones(n, bool)
        elif kind == "integer":
            return obj.map(str), np.ones(n, bool)
        bad = np.fromiter((id_problem(v) is not None for v in obj), dtype=bool, count=n)
    obj = values.astype(object).reset_index(drop=True)
    if bad.any() and not drop:
        i = int(bad.argmax())
        raise error(i, str(id_problem(obj.iloc[i])))
    text = pd.Series(
        ["" if b else str(v).strip() for v, b in zip(obj, bad, strict=True)], dtype=object
    )
    return text, ~bad
