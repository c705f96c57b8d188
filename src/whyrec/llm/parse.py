"""Turn a model's reply into a validated object, or into a list of precise problems.

Replies are untrusted text. They are parsed with :func:`json.loads` only (never
``eval``), after a few purely textual repairs that small models need: code fences,
chatter around the object, trailing commas, raw control characters inside strings.
"""

from __future__ import annotations

import json
import re
import weakref
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import jsonschema
from pydantic import BaseModel, ConfigDict, ValidationError

_FENCE = re.compile(r"```[ \t]*(?:json|JSON|js|javascript)?[ \t]*\n?(.*?)(?:```|\Z)", re.S)
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")
_MAX_PROBLEMS = 5
# Schemas already checked, by their JSON text: the same few schemas come back every call.
_CHECKED: dict[str, Schema] = {}
_MODELS: weakref.WeakKeyDictionary[type[BaseModel], Schema] = weakref.WeakKeyDictionary()


class JSONExtractionError(ValueError):
    """No JSON value could be recovered from the text."""


def _strip_trailing_commas(text: str) -> str:
    """Remove commas that directly precede ``}`` or ``]`` outside string literals."""
    out: list[str] = []
    in_string = escaped = False
    i = 0
    while i < len(text):
        ch = text[i]
        if in_string:
            out.append(ch)
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
            out.append(ch)
        elif ch == ",":
            m = _TRAILING_COMMA.match(text, i)
            if m is None:
                out.append(ch)
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def _candidates(text: str) -> list[str]:
    """Texts worth trying, most specific first: fenced blocks, then the whole reply."""
    found = [m.group(1).strip() for m in _FENCE.finditer(text)]
    found.append(text.strip().lstrip("\ufeff"))
    return [c for c in found if c]


def extract_json(text: str, *, expect: type | None = dict) -> Any:
    """Return the first JSON value of type ``expect`` found in ``text``.

    Tries each fenced code block and then the whole text; in each, first the text as
    it is, then from every ``{`` or ``[`` onwards (so prose before or after the object
    is ignored), each time also with trailing commas removed. ``expect=None`` accepts
    any JSON value.
    """
    # strict=False: raw control characters (a newline) inside strings are accepted. JSON
    # forbids them, but grammars derived from JSON schemas (llama.cpp's among them) let a
    # model write them, and the reply is otherwise fine — measured: 7 of 42 SmolLM2
    # explanation attempts were lost to this alone
    decoder = json.JSONDecoder(strict=False)
    starts = "{[" if expect is None else ("{" if expect is dict else "[" if expect is list else "")
    for candidate in _candidates(text):
        for variant in (candidate, _strip_trailing_commas(candidate)):
            try:
                value = json.loads(variant, strict=False)
            except ValueError:
                pass
            else:
                if expect is None or isinstance(value, expect):
                    return value
            for pos, ch in enumerate(variant):
                if ch not in starts:
                    continue
                try:
                    value, _ = decoder.raw_decode(variant, pos)
                except ValueError:
                    continue
                if expect is None or isinstance(value, expect):
                    return value
    kind = "JSON value" if expect is None else f"JSON {'object' if expect is dict else 'array'}"
    snippet = text.strip().replace("\n", " ")
    if len(snippet) > 120:
        snippet = snippet[:117] + "..."
    raise JSONExtractionError(f"expected a {kind} in the reply, found none in {snippet!r}")


def _drop_description(schema: dict[str, Any], cls: type) -> None:
    schema.pop("description", None)


class ReplyModel(BaseModel):
    """Base for pydantic models that describe an LLM's reply.

    Pydantic puts a model's docstring into its JSON schema as ``description``, and the
    schema reaches the model (in the prompt when the decoding grammar cannot express every
    check, and in re-asks); a small model copies such a sentence into its answer. Models
    derived from this class keep their docstrings for developers only. Text the LLM should
    read goes into ``Field(description=...)``.
    """

    model_config = ConfigDict(json_schema_extra=_drop_description)


@dataclass(frozen=True)
class Schema:
    """A JSON schema plus, when the caller gave a pydantic model, that model.

    ``json_schema`` goes to the backend (constrained decoding, prompts); ``model``, when
    set, turns the validated object into an instance for the caller.
    """

    json_schema: dict[str, Any]
    model: type[BaseModel] | None = None

    @classmethod
    def of(cls, schema: dict[str, Any] | type[BaseModel] | Schema) -> Schema:
        """Accept a JSON-schema dict, a pydantic model class or a :class:`Schema`."""
        if isinstance(schema, Schema):
            return schema
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            made = _MODELS.get(schema)
            if made is None:
                made = cls(json_schema=schema.model_json_schema(), model=schema)
                _MODELS[schema] = made
            return made
        if isinstance(schema, dict):
            text = json.dumps(schema)
            hit = _CHECKED.get(text)
            if hit is not None:
                return hit
            try:
                jsonschema.validators.validator_for(schema).check_schema(schema)
            except jsonschema.SchemaError as exc:
                raise ValueError(f"schema is not a valid JSON schema: {exc.message}") from exc
            # A private copy, so a caller mutating its dict later cannot desync the cache.
            made = cls(json_schema=json.loads(text))
            if len(_CHECKED) >= 256:
                _CHECKED.clear()
            _CHECKED[text] = made
            return made
        raise TypeError(
            "schema must be a JSON-schema dict or a pydantic BaseModel subclass, "
            f"got {type(schema).__name__}"
        )

    @cached_property
    def _validator(self) -> Any:
        return jsonschema.validators.validator_for(self.json_schema)(self.json_schema)

    @property
    def expects(self) -> type | None:
        """The top-level JSON type the schema asks for (used to pick what to extract)."""
        kind = self.json_schema.get("type")
        return {"object": dict, "array": list}.get(kind) if isinstance(kind, str) else None

    def validate(self, value: Any) -> tuple[Any, list[str]]:
        """Return ``(parsed, problems)``; ``problems`` is empty when ``value`` is valid."""
        if self.model is not None:
            try:
                return self.model.model_validate(value), []
            except ValidationError as exc:
                problems = []
                for err in exc.errors()[:_MAX_PROBLEMS]:
                    where = ".".join(str(p) for p in err["loc"]) or "(root)"
                    problems.append(f"at {where}: {err['msg']}")
                return None, problems
        errors = sorted(self._validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        problems = []
        for err in errors[:_MAX_PROBLEMS]:
            where = ".".join(str(p) for p in err.absolute_path) or "(root)"
            problems.append(f"at {where}: {err.message}")
        return (value, []) if not problems else (None, problems)

    def problem_fields(self, value: Any) -> list[str] | None:
        """The top-level properties that hold every problem of ``value`` (schema order),
        or None when a problem is not inside one property (the value is not an object, a
        required property is missing under a plain JSON schema, an extra key...)."""
        props = self.json_schema.get("properties")
        if not isinstance(value, dict) or not isinstance(props, dict):
            return None
        found: set[str] = set()
        if self.model is not None:
            try:
                self.model.model_validate(value)
            except ValidationError as exc:
                for err in exc.errors():
                    loc = err["loc"]
                    if not loc or not isinstance(loc[0], str) or loc[0] not in props:
                        return None
                    found.add(loc[0])
        else:
            for err in self._validator.iter_errors(value):
                path = list(err.absolute_path)
                if not path or not isinstance(path[0], str) or path[0] not in props:
                    return None
                found.add(path[0])
        return [name for name in props if name in found]

    def subschema(self, fields: list[str]) -> Schema:
        """An object schema with only ``fields`` of this one (all required), for asking
        again for some properties of a reply; shared definitions are kept."""
        props = self.json_schema["properties"]
        sub: dict[str, Any] = {
            "type": "object",
            "properties": {name: props[name] for name in fields},
            "required": list(fields),
            "additionalProperties": False,
        }
        if "$defs" in self.json_schema:
            sub["$defs"] = self.json_schema["$defs"]
        return Schema.of(sub)

    def to_plain(self, parsed: Any) -> Any:
        """The JSON-serialisable form of a parsed value (for the cache)."""
        if isinstance(parsed, BaseModel):
            return parsed.model_dump(mode="json")
        return parsed


def parse_reply(text: str, schema: Schema) -> tuple[Any, Any, list[str]]:
    """Parse and validate ``text``: return ``(parsed, raw_json, problems)``.

    ``problems`` empty means success. ``raw_json`` is the recovered JSON value (or
    ``None`` when nothing parsed); it is what gets cached.
    """
    try:
        raw = extract_json(text, expect=schema.expects)
    except JSONExtractionError as exc:
        return None, None, [str(exc)]
    parsed, problems = schema.validate(raw)
    return parsed, raw, problems


def reask_message(problems: list[str], schema: Schema) -> str:
    """The follow-up user turn that tells the model what was wrong with its reply."""
    listed = "\n".join(f"- {p}" for p in problems)
    return (
        "Your previous reply could not be used:\n"
        f"{listed}\n"
        "Reply again with only one JSON value (no prose, no code fence) that matches this "
        f"JSON schema:\n{json.dumps(schema.json_schema, separators=(',', ':'))}"
    )


def partial_reask_message(problems: list[str], fields: list[str], sub: Schema) -> str:
    """The follow-up user turn asking again for only the properties that had problems."""
    listed = "\n".join(f"- {p}" for p in problems)
    names = ", ".join(fields)
    return (
        f"In your previous reply, {names} could not be used:\n"
        f"{listed}\n"
        f"The other fields are fine and are kept. Write only {names} again, as one JSON "
        "object (no prose, no code fence) that matches this JSON schema:\n"
        f"{json.dumps(sub.json_schema, separators=(',', ':'))}"
    )


def schema_instruction(schema: Schema) -> str:
    """A system-prompt addition for backends that cannot constrain decoding."""
    return (
        "Answer with only one JSON value (no prose, no code fence) that matches this JSON "
        f"schema:\n{json.dumps(schema.json_schema, separators=(',', ':'))}"
    )
