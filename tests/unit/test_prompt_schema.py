"""``prompts/schema.json`` describes the prompt version files, and refuses broken ones."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from jsonschema import Draft202012Validator

from gateway.adapters.prompt_export import PROMPTS_DIR

SCHEMA = json.loads((PROMPTS_DIR / "schema.json").read_text())
SEED = json.loads((PROMPTS_DIR / "versions" / "v1.0.0.json").read_text())
VALIDATOR = Draft202012Validator(SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)


def errors(document: dict[str, Any]) -> list[str]:
    return [e.message for e in VALIDATOR.iter_errors(document)]


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(SCHEMA)


def test_every_version_file_validates() -> None:
    files = sorted((PROMPTS_DIR / "versions").glob("v*.json"))
    assert files
    for path in files:
        assert errors(json.loads(path.read_text())) == [], path.name


def test_an_evolved_version_with_the_optional_fields_validates() -> None:
    evolved = {
        **SEED,
        "version": "v1.0.12",
        "parent_version": "v1.0.11",
        "origin": "heuristic",
        "changes": ["Added 'bright well-exposed interior' to the prompt"],
        "created_at": "2026-11-26T12:00:00+00:00",
        "performance_score": 4.2,
        "usage_count": 7,
    }
    assert errors(evolved) == []
    assert errors({**evolved, "performance_score": None}) == []


@pytest.mark.parametrize(
    "field",
    ["version", "parent_version", "origin", "prompt", "negative_prompt", "changes", "reasoning"],
)
def test_a_file_missing_a_field_is_refused(field: str) -> None:
    document = {k: v for k, v in SEED.items() if k != field}
    with pytest.raises(jsonschema.ValidationError, match=field):
        jsonschema.validate(document, SCHEMA)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("version", "1.0.0"),
        ("version", "v1.0"),
        ("version", "v1.0.0-beta"),
        ("version", "v1.0.0\n"),
        ("parent_version", "latest"),
        ("origin", "gpt"),
        ("prompt", ""),
        ("prompt", "x" * 1501),
        ("changes", "one change"),
        ("changes", [1]),
        ("reasoning", None),
        ("created_at", "yesterday"),
        ("performance_score", "high"),
        ("usage_count", 1.5),
    ],
)
def test_a_file_with_a_bad_value_is_refused(field: str, value: object) -> None:
    assert errors({**SEED, field: value}) != []


def test_unknown_fields_are_refused() -> None:
    assert errors({**SEED, "temperature": 0.7}) != []
