"""Hostile JSON bodies get the API's JSON errors on both services, never a 500: deep nesting,
non-finite numbers, a wrong media type, and bodies over the limit (declared or not)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.conftest import ML_TOKEN
from tests.integration.test_training_http import client, ml_url, upload

__all__ = ["client", "ml_url"]

ML_AUTH = {"Authorization": f"Bearer {ML_TOKEN}"}
JSON = {"content-type": "application/json"}
NESTED = b"[" * 100_000 + b"]" * 100_000
OBSERVATION = (
    '{"observations": [{"observation_id": "o-1", "api": "leonardo", "rating": 4, '
    '"parameters": {"init_strength": %s, "guidance_scale": 7.0, "controlnet_weight": 0.6}}]}'
)


def error_code(response: httpx.Response) -> str:
    body: dict[str, Any] = response.json()
    code: str = body["error"]["code"]
    return code


async def _chunks(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_deeply_nested_json_is_a_400_on_the_gateway(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/train/rate", content=NESTED, headers=JSON)
    assert response.status_code == 400, response.text
    assert error_code(response) == "malformed_request"
    assert "nested" in response.json()["error"]["message"]


async def test_deeply_nested_json_is_a_400_on_the_ml_service(
    ml_client: httpx.AsyncClient,
) -> None:
    response = await ml_client.post("/ml/update_model", content=NESTED, headers={**ML_AUTH, **JSON})
    assert response.status_code == 400, response.text
    assert error_code(response) == "malformed_request"


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999"])
async def test_non_finite_numbers_are_a_422_and_never_reach_the_model(
    ml_client: httpx.AsyncClient, value: str
) -> None:
    response = await ml_client.post(
        "/ml/update_model", content=(OBSERVATION % value).encode(), headers={**ML_AUTH, **JSON}
    )
    assert response.status_code == 422, response.text
    assert error_code(response) == "non_finite_number"
    best = await ml_client.get("/ml/best", headers=ML_AUTH)
    assert best.status_code == 200, best.text
    assert best.json()["best"]["leonardo"]["n_observations"] == 0  # nothing stored


async def test_a_finite_update_is_still_taken(ml_client: httpx.AsyncClient) -> None:
    response = await ml_client.post(
        "/ml/update_model", content=(OBSERVATION % "0.4").encode(), headers={**ML_AUTH, **JSON}
    )
    assert response.status_code == 200, response.text


async def test_non_finite_numbers_are_a_422_on_the_gateway(client: httpx.AsyncClient) -> None:
    body = b'{"experiment_id": "exp_x", "ratings": [{"option": "A", "rating": NaN}]}'
    response = await client.post("/api/train/rate", content=body, headers=JSON)
    assert response.status_code == 422, response.text
    assert error_code(response) == "non_finite_number"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_json_routes_require_a_json_media_type(
    client: httpx.AsyncClient, ml_client: httpx.AsyncClient, content_type: str | None
) -> None:
    trained = (await upload(client)).json()
    valid = json.dumps(
        {
            "experiment_id": trained["experiment_id"],
            "ratings": [{"option": "A", "rating": 4}, {"option": "B", "rating": 2}],
        }
    ).encode()
    headers = {"content-type": content_type} if content_type else {}
    rated = await client.post("/api/train/rate", content=valid, headers=headers)
    assert rated.status_code == 415, rated.text
    assert error_code(rated) == "unsupported_media_type"
    # nothing was recorded: the same body as JSON is the first rating
    accepted = await client.post("/api/train/rate", content=valid, headers=JSON)
    assert accepted.status_code == 200 and accepted.json()["sample_number"] == 1
    ml = await ml_client.post(
        "/ml/update_model", content=(OBSERVATION % "0.4").encode(), headers={**ML_AUTH, **headers}
    )
    assert ml.status_code == 415, ml.text


async def test_a_json_media_type_with_parameters_is_accepted(client: httpx.AsyncClient) -> None:
    trained = (await upload(client)).json()
    rated = await client.post(
        "/api/train/rate",
        content=json.dumps(
            {
                "experiment_id": trained["experiment_id"],
                "ratings": [{"option": "A", "rating": 3}, {"option": "B", "rating": 3}],
            }
        ),
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert rated.status_code == 200, rated.text


async def test_bodies_over_the_limit_are_refused_while_read_even_when_chunked(
    client: httpx.AsyncClient, ml_client: httpx.AsyncClient
) -> None:
    big = b'{"experiment_id": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    # no Content-Length: a chunked body is counted as it arrives
    chunked = await client.post("/api/train/rate", content=_chunks(big), headers=JSON)
    assert chunked.status_code == 413, chunked.text
    assert error_code(chunked) == "payload_too_large"
    declared = await client.post("/api/train/rate", content=big, headers=JSON)
    assert declared.status_code == 413
    huge = b'{"observations": "' + b"x" * (40 * 1024 * 1024) + b'"}'
    ml = await ml_client.post(
        "/ml/update_model", content=_chunks(huge), headers={**ML_AUTH, **JSON}
    )
    assert ml.status_code == 413, ml.text
    assert error_code(ml) == "payload_too_large"
