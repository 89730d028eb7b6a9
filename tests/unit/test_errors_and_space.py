"""The error model's JSON shape and status table; the search-space file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.errors import STATUS_TABLE, NotReady
from shared import errors
from shared.search_space import load_search_space
from shared.storage import new_object_key, validate_key
from shared.web_errors import status_for


def test_error_body_has_code_message_and_details() -> None:
    exc = errors.InvalidInput(
        "rating must be 1-5", code="rating_out_of_range", details={"rating": 7}
    )
    assert exc.to_body() == {
        "error": {
            "code": "rating_out_of_range",
            "message": "rating must be 1-5",
            "details": {"rating": 7},
        }
    }


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (errors.MalformedRequest("x"), 400),
        (errors.Unauthenticated("x"), 401),
        (errors.Forbidden("x"), 403),
        (errors.ObjectNotFound("x"), 404),
        (errors.Conflict("x"), 409),
        (errors.PayloadTooLarge("x"), 413),
        (errors.UnsupportedMediaType("x"), 415),
        (errors.InvalidInput("x"), 422),
        (errors.RateLimited("x"), 429),
        (errors.UpstreamError("x", upstream="leonardo"), 502),
        (errors.UpstreamUnavailable("x", upstream="ml_service"), 503),
        (errors.UpstreamTimeout("x", upstream="replicate"), 504),
        (NotReady("x"), 503),
        (errors.LatinaError("x"), 500),
    ],
)
def test_status_table_picks_the_most_specific_class(error: errors.LatinaError, status: int) -> None:
    assert status_for(error, STATUS_TABLE) == status


def test_default_search_space_matches_the_contract() -> None:
    space = load_search_space()
    assert space.apis == ["leonardo", "stable_diffusion"]
    steps = next(p for p in space.parameters("stable_diffusion") if p.name == "num_inference_steps")
    assert (steps.type, steps.low, steps.high) == ("int", 20, 60)


def test_search_space_with_inverted_bounds_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "space.json"
    path.write_text(json.dumps({"x": [{"name": "a", "type": "float", "low": 2, "high": 1}]}))
    with pytest.raises(ValidationError, match="low must be below high"):
        load_search_space(path)


def test_new_object_keys_are_unique_and_valid() -> None:
    keys = {new_object_key("originals", "jpg") for _ in range(100)}
    assert len(keys) == 100
    for key in keys:
        assert validate_key(key) == key
        assert key.startswith("originals/") and key.endswith(".jpg")


@pytest.mark.parametrize("kind", ["../etc", "A B", ""])
def test_object_kind_must_be_safe(kind: str) -> None:
    with pytest.raises(ValueError):
        new_object_key(kind, "jpg")
