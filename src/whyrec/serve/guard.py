"""Request bodies at the HTTP boundary: size limit, JSON only, strict JSON, small errors.

:class:`BodyGuard` is an ASGI middleware in front of the app. For every request with a
body (POST, PUT, PATCH) it

* refuses a body larger than ``max_body_bytes`` with **413** (by its ``Content-Length``
  before reading anything, else while reading: at most the limit is ever buffered);
* refuses a non-empty body whose content type is not JSON with **415**;
* parses the JSON strictly (:func:`parse_json`): UTF-8 only, no ``NaN``/``Infinity``,
  no number that overflows to infinity (``1e400``), no integer of more than
  :data:`MAX_INT_DIGITS` digits, no lone UTF-16 surrogate, nesting bounded — a **422**
  whose ``loc`` names the field (``["body", "wait_s"]``) otherwise.

Only then does FastAPI see the body. :func:`safe_errors` is the one way a validation
error is turned into a reply: at most :data:`MAX_ERRORS` entries, messages capped, and a
rejected value repeated only as a short string (:func:`whyrec.safety.echo_text`) or a
summary ("array of 3 items") — a 20 MB body never gets a 20 MB reply.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from starlette.responses import JSONResponse

from whyrec.safety import echo_text

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: Methods whose body is checked.
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
#: Longest integer literal accepted in a body (a count or an index never needs more).
MAX_INT_DIGITS = 30
#: Validation errors listed in one reply (the rest are counted).
MAX_ERRORS = 20
#: Longest message in an error reply.
MAX_MESSAGE = 1000

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


class BodyError(ValueError):
    """A body that is not acceptable JSON; ``loc`` names where, ``status`` the HTTP code."""

    def __init__(self, loc: Sequence[str | int], message: str, status: int = 422) -> None:
        super().__init__(message)
        self.loc = list(loc)
        self.status = status


class _Rejected:
    """Stands in for a value the parser refused, so the field can be named afterwards."""

    __slots__ = ("why",)

    def __init__(self, why: str) -> None:
        self.why = why


def _find(value: Any, pred: Callable[[Any], bool]) -> tuple[list[str | int], Any] | None:
    """The path (keys and indices) of the first value — or object key — matching ``pred``."""
    stack: list[tuple[Any, list[str | int]]] = [(value, [])]
    while stack:
        node, path = stack.pop()
        if pred(node):
            return path, node
        if isinstance(node, dict):
            for k in reversed(list(node)):
                if pred(k):
                    return [*path, echo_text(k, 40)], k
                stack.append((node[k], [*path, k]))
        elif isinstance(node, list):
            stack.extend((v, [*path, i]) for i, v in reversed(list(enumerate(node))))
    return None


def _has_surrogate(v: Any) -> bool:
    if not isinstance(v, str):
        return False
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def parse_json(body: bytes) -> Any:
    """``body`` as JSON under the service's rules (see the module doc); :class:`BodyError`
    names the field or the position of the first problem."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError(
            ["body"], f"the body is not valid UTF-8 (byte {exc.start}); send UTF-8 JSON"
        ) from None
    rejected: list[_Rejected] = []

    def reject(why: str) -> _Rejected:
        mark = _Rejected(why)
        rejected.append(mark)
        return mark

    def constant(name: str) -> Any:
        return reject(f"{name} is not a number JSON allows; give a finite number")

    def number(s: str) -> Any:
        value = float(s)
        if math.isfinite(value):
            return value
        return reject(f"{echo_text(s, 40)} is out of range; give a finite number")

    def integer(s: str) -> Any:
        digits = len(s.lstrip("-"))
        if digits > MAX_INT_DIGITS:
            return reject(f"an integer of {digits} digits is out of range")
        return int(s)

    try:
        value = json.loads(text, parse_constant=constant, parse_float=number, parse_int=integer)
    except json.JSONDecodeError as exc:
        raise BodyError(
            ["body", exc.pos],
            f"invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
        ) from None
    except RecursionError:
        raise BodyError(["body"], "invalid JSON: nested too deeply") from None
    if rejected:
        found = _find(value, lambda v: isinstance(v, _Rejected))
        path, mark = found if found is not None else ([], rejected[0])
        raise BodyError(["body", *path], mark.why)
    if _SURROGATE_ESCAPE.search(text):  # escapes of surrogates: only pairs are text
        found = _find(value, _has_surrogate)
        if found is not None:
            raise BodyError(
                ["body", *found[0]],
                "contains a lone UTF-16 surrogate escape (\\uD800-\\uDFFF): not valid text",
            )
    return value


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def error_response(status: int, loc: Sequence[str | int], message: str) -> JSONResponse:
    """A small error reply in FastAPI's shape (``detail``: a list for 422s)."""
    msg = echo_text(message, MAX_MESSAGE)
    if status == 422:
        where = [_loc_part(p) for p in list(loc)[:12]]
        return JSONResponse({"detail": [{"loc": where, "msg": msg, "type": "value_error"}]}, 422)
    return JSONResponse({"detail": msg}, status)


class BodyGuard:
    """ASGI middleware: size limit, JSON content type and strict JSON for request bodies."""

    def __init__(self, app: Any, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = int(max_body_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers") or []}
        limit = self.max_body_bytes
        too_large = f"the body is larger than {limit} bytes (max_body_bytes)"
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await error_response(400, [], "invalid Content-Length")(scope, receive, send)
                return
            if size > limit:
                await error_response(413, [], too_large)(scope, receive, send)
                return
        chunks: list[bytes] = []
        total = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > limit:
                await error_response(413, [], too_large)(scope, receive, send)
                return
            chunks.append(chunk)
            more = bool(message.get("more_body", False))
        body = b"".join(chunks)
        if body:
            ctype = headers.get(b"content-type", b"").decode("latin-1")
            if ctype and not _is_json(ctype):
                msg = f"the body must be JSON (Content-Type: application/json), got {ctype!r}"
                await error_response(415, [], msg)(scope, receive, send)
                return
            try:
                parse_json(body)
            except BodyError as exc:
                await error_response(exc.status, exc.loc, str(exc))(scope, receive, send)
                return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


# ------------------------------------------------------------ validation errors
def _summary(value: Any) -> Any:
    """What an error reply may repeat of a rejected value."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if len(str(abs(value))) <= MAX_INT_DIGITS else "<integer out of range>"
    if isinstance(value, float):
        return value if math.isfinite(value) else "<not a finite number>"
    if isinstance(value, str):
        return echo_text(value)
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    if isinstance(value, dict):
        return f"<object with {len(value)} keys>"
    if isinstance(value, list | tuple):
        return f"<array of {len(value)} items>"
    return f"<{type(value).__name__}>"


def _loc_part(part: Any) -> str | int:
    return part if isinstance(part, int) and not isinstance(part, bool) else echo_text(part, 60)


def safe_errors(errors: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic/FastAPI validation errors as a small, always encodable ``detail`` list."""
    out: list[dict[str, Any]] = []
    more = 0
    for err in errors:
        if len(out) >= MAX_ERRORS:
            more += 1
            continue
        entry: dict[str, Any] = {
            "loc": [_loc_part(p) for p in list(err.get("loc") or ())[:12]],
            "msg": echo_text(err.get("msg", ""), MAX_MESSAGE),
            "type": echo_text(err.get("type", "value_error"), 60),
        }
        if "input" in err:
            entry["input"] = _summary(err["input"])
        out.append(entry)
    if more:
        out.append({"loc": ["body"], "msg": f"and {more} more errors", "type": "too_many_errors"})
    return out


__all__ = ["BodyError", "BodyGuard", "error_response", "parse_json", "safe_errors"]
