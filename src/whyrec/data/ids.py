"""The one rule for source ids at the data boundary.

A user or item id is a non-empty string or an integer, nothing else:

* strings are stripped; an empty string, or one that spells a missing value the way
  pandas writes it (``NaN``, ``nan``, ``None``, ``NULL``, ``N/A``, ``<NA>``, ... — see
  :data:`MISSING_SPELLINGS`), is not an id (``"NaN"`` and ``"nan"`` would otherwise become
  two users);
* integers (Python or NumPy, not booleans) are ids and are kept as their decimal text,
  negative ones included: ``-5`` is the id ``"-5"`` (an integer id is an id; nothing in
  whyrec gives ids an order or a sign);
* floats (``1.5``, ``1.0``, NaN), booleans, lists, dicts, bytes and None are errors: they
  would otherwise be stringified silently (``'1.5'``, ``'[1]'``, ``"b'...'"``).

A bad id is a :class:`~whyrec.errors.DataError` naming the row and the value, unless the
caller asked to drop such rows; then the count goes into the manifest's loading notes.
"""

from __future__ import annotations

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


def id_problem(value: Any) -> str | None:
    """Why ``value`` is not a valid id, or None when it is one."""
    if isinstance(value, str):
        text = value.strip()
        if text == "":
            return "empty id"
        if text in MISSING_SPELLINGS:
            return f"empty id ({text!r} spells a missing value)"
        return None
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
            bad = text.isin(MISSING_SPELLINGS).to_numpy()
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
