"""Recovering JSON from untrusted replies and validating it."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field

from whyrec.llm.parse import (
    JSONExtractionError,
    Schema,
    extract_json,
    parse_reply,
    reask_message,
)

PREFS_SCHEMA = {
    "type": "object",
    "properties": {
        "preferences": {"type": "array", "items": {"type": "string"}, "minItems": 2},
    },
    "required": ["preferences"],
}


class Prefs(BaseModel):
    preferences: list[str] = Field(min_length=2)


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1, "b": [1, 2]}',
        '```json\n{"a": 1, "b": [1, 2]}\n```',
        '```\n{"a": 1, "b": [1, 2]}\n```',
        'Sure! Here is the JSON you asked for:\n{"a": 1, "b": [1, 2]}\nHope it helps.',
        '{"a": 1, "b": [1, 2,],}',
        '\ufeff  {"a": 1, "b": [1, 2]}  ',
        'Here: ```json\n{"a": 1, "b": [1, 2],}\n``` done',
    ],
)
def test_extract_json_repairs_common_damage(text):
    assert extract_json(text) == {"a": 1, "b": [1, 2]}


def test_extract_json_skips_non_json_braces_and_keeps_braces_in_strings():
    text = 'Use {curly} braces like {"note": "a } inside, a , ] too", "n": 2}'
    assert extract_json(text) == {"note": "a } inside, a , ] too", "n": 2}


def test_trailing_comma_repair_leaves_string_contents_alone():
    assert extract_json('{"s": "x,]", "t": [1,],}') == {"s": "x,]", "t": [1]}


def test_extract_json_picks_the_expected_top_level_type():
    text = 'Items [1, 2] and then {"k": true}'
    assert extract_json(text, expect=dict) == {"k": True}
    assert extract_json(text, expect=list) == [1, 2]
    assert extract_json("42", expect=None) == 42


@pytest.mark.parametrize("text", ["", "no json here", '{"a": 1', "```json\n```"])
def test_extract_json_says_what_was_expected(text):
    with pytest.raises(JSONExtractionError, match="expected a JSON object"):
        extract_json(text)


def test_never_evaluates_python():
    # A Python literal is not JSON: it must be rejected, not evaluated.
    with pytest.raises(JSONExtractionError):
        extract_json("{'a': __import__('os').getpid()}")


def test_schema_from_dict_validates_and_reports_paths():
    sch = Schema.of(PREFS_SCHEMA)
    assert sch.model is None and sch.expects is dict
    parsed, problems = sch.validate({"preferences": ["x", "y"]})
    assert parsed == {"preferences": ["x", "y"]} and problems == []
    parsed, problems = sch.validate({"preferences": ["x", 3]})
    assert parsed is None
    assert problems == ["at preferences.1: 3 is not of type 'string'"]
    _, problems = sch.validate({})
    assert problems == ["at (root): 'preferences' is a required property"]


def test_schema_from_pydantic_returns_instances():
    sch = Schema.of(Prefs)
    assert sch.json_schema["required"] == ["preferences"]
    parsed, problems = sch.validate({"preferences": ["a", "b"]})
    assert isinstance(parsed, Prefs) and problems == []
    assert sch.to_plain(parsed) == {"preferences": ["a", "b"]}
    _, problems = sch.validate({"preferences": ["a"]})
    assert len(problems) == 1 and problems[0].startswith("at preferences:")


def test_schema_rejects_bad_inputs():
    with pytest.raises(ValueError, match="not a valid JSON schema"):
        Schema.of({"type": "no-such-type"})
    with pytest.raises(TypeError, match="pydantic BaseModel subclass"):
        Schema.of(["not", "a", "schema"])  # type: ignore[arg-type]


def test_parse_reply_and_reask_message():
    sch = Schema.of(PREFS_SCHEMA)
    parsed, raw, problems = parse_reply('```json\n{"preferences": ["a", "b"]}\n```', sch)
    assert parsed == raw == {"preferences": ["a", "b"]} and problems == []
    parsed, raw, problems = parse_reply('{"preferences": ["only one"]}', sch)
    assert parsed is None and raw == {"preferences": ["only one"]}
    assert "is too short" in problems[0]
    msg = reask_message(problems, sch)
    assert problems[0] in msg and '"required":["preferences"]' in msg
    _, raw, problems = parse_reply("I like films.", sch)
    assert raw is None and "found none" in problems[0]


def test_problem_fields_and_subschema():
    class Part(BaseModel):
        name: str = Field(min_length=2)

    class Whole(BaseModel):
        part: Part
        tags: list[str] = Field(min_length=1)
        note: str

    sch = Schema.of(Whole)
    ok = {"part": {"name": "ab"}, "tags": ["x"], "note": "n"}
    assert sch.problem_fields(ok) == []
    assert sch.problem_fields({**ok, "tags": [], "part": {"name": "a"}}) == ["part", "tags"]
    assert sch.problem_fields({"part": {"name": "ab"}, "tags": ["x"]}) == ["note"]  # missing
    assert sch.problem_fields(["not", "an", "object"]) is None
    sub = sch.subschema(["part"])
    assert sub.json_schema["required"] == ["part"] and "$defs" in sub.json_schema
    assert sub.validate({"part": {"name": "ab"}})[1] == []
    assert sub.validate({"part": {"name": "ab"}, "note": "n"})[1]  # nothing else allowed
    plain = Schema.of(PREFS_SCHEMA)
    assert plain.problem_fields({"preferences": ["one"]}) == ["preferences"]
    assert plain.problem_fields({}) is None  # a missing property is a root-level error


def test_raw_control_characters_inside_strings_are_accepted():
    # grammars derived from JSON schemas let a model put a raw newline inside a string
    assert extract_json('{"why": "line one\nline two\tend"}') == {"why": "line one\nline two\tend"}
    assert extract_json('Sure: {"a": "x\ny"} done') == {"a": "x\ny"}


def test_reply_models_keep_their_docstrings_out_of_what_the_llm_reads():
    from pydantic import Field

    from whyrec.evaluate.explanations.judges import PairVerdict, RubricVerdict
    from whyrec.explain.schemas import BaselineExplanation
    from whyrec.llm import ReplyModel
    from whyrec.llm.parse import schema_instruction

    class Verdict(ReplyModel):
        """Internal note for developers: never shown to the model."""

        grade: int = Field(description="0 to 3, higher is better")

    sch = Schema.of(Verdict)
    assert "description" not in sch.json_schema  # the docstring
    assert sch.json_schema["properties"]["grade"]["description"] == "0 to 3, higher is better"
    assert "developers" not in schema_instruction(sch)
    # SmolLM2 answered "The no-alignment baseline's reply." when the docstring was shown
    for model in (BaselineExplanation, RubricVerdict, PairVerdict):
        assert model.__doc__
        assert model.__doc__.strip() not in schema_instruction(Schema.of(model))
