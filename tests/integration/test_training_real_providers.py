"""The gateway's HTTP API over the real Leonardo and Replicate clients and the fake servers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from shared.settings import Settings
from tests.fakes.leonardo import API_KEY, PREFIX, FakeLeonardo
from tests.fakes.replicate import API_TOKEN, FakeReplicate
from tests.images import interior
from tests.s3_server import S3Server
from tests.servers import gateway_client, serve


@dataclass
class Stack:
    client: httpx.AsyncClient
    leonardo: FakeLeonardo
    replicate: FakeReplicate


@pytest.fixture
def overrides() -> dict[str, Any]:
    return {}


@pytest.fixture
async def stack(
    settings: Settings, trainer_token: str, s3_server: S3Server, overrides: dict[str, Any]
) -> AsyncIterator[Stack]:
    leonardo = FakeLeonardo(s3_server, polls_before_complete=1)
    replicate = FakeReplicate(output_as="data_uri", polls_before_success=1, processing_seconds=5.0)
    async with serve(leonardo.app) as leo_url, serve(replicate.app) as rep_url:
        configured = settings.model_copy(
            update={
                "leonardo_api_key": API_KEY,
                "leonardo_base_url": leo_url + PREFIX,
                "leonardo_poll_interval": 0.05,
                "replicate_api_token": API_TOKEN,
                "replicate_base_url": rep_url,
                "replicate_poll_interval": 0.05,
                "replicate_wait_seconds": 1,
                "replicate_controlnet_input": "controlnet_conditioning_scale",
                **overrides,
            }
        )
        async with gateway_client(configured, trainer_token) as client:
            yield Stack(client, leonardo, replicate)


async def train(client: httpx.AsyncClient) -> httpx.Response:
    return await client.post(
        "/api/enhance/train", files={"image": ("room.jpg", interior(), "image/jpeg")}
    )


async def test_train_renders_on_leonardo_and_replicate(stack: Stack) -> None:
    response = await train(stack.client)
    assert response.status_code == 201, response.text
    a, b = response.json()["options"]
    assert (a["provider"], b["provider"]) == ("leonardo", "replicate")
    for option in (a, b):
        image = await stack.client.get(option["url"])
        assert image.status_code == 200 and image.content
    generation = stack.leonardo.seen("POST /generations")[0].json()
    assert generation["guidance_scale"] == round(a["parameters"]["guidance_scale"])
    assert generation["init_strength"] == pytest.approx(a["parameters"]["init_strength"])
    assert generation["controlnets"][0]["weight"] == pytest.approx(
        a["parameters"]["controlnet_weight"]
    )
    created = stack.replicate.seen("POST /v1/models/{owner}/{name}/predictions")
    assert len(created) == 1
    sent: dict[str, Any] = created[0].json()["input"]
    assert sent["num_inference_steps"] == b["parameters"]["num_inference_steps"]
    assert sent["controlnet_conditioning_scale"] == pytest.approx(
        b["parameters"]["controlnet_conditioning_scale"]
    )
    assert sent["image"].startswith("data:image/jpeg;base64,")
    assert "photorealistic" in sent["prompt"]


async def test_failed_leonardo_generation_leaves_replicate_rateable(stack: Stack) -> None:
    stack.leonardo.fail_generation = True
    response = await train(stack.client)
    assert response.status_code == 201, response.text
    body = response.json()
    a, b = body["options"]
    assert a["error"]["code"] == "generation_failed" and "url" not in a
    assert b["provider"] == "replicate" and "url" in b
    rated = await stack.client.post(
        "/api/train/rate",
        json={
            "experiment_id": body["experiment_id"],
            "ratings": [{"option": "B", "image_id": b["image_id"], "rating": 4}],
        },
    )
    assert rated.status_code == 200, rated.text


async def test_replicate_throttling_is_waited_out(stack: Stack) -> None:
    stack.replicate.throttle("POST /v1/models/{owner}/{name}/predictions", times=1, retry_after="1")
    response = await train(stack.client)
    assert response.status_code == 201, response.text
    assert response.json()["options"][1]["provider"] == "replicate"
    assert stack.replicate.count("POST /v1/models/{owner}/{name}/predictions") == 2


@pytest.mark.parametrize("overrides", [{"paid_renders_per_day": 3}])
async def test_the_daily_cap_of_paid_calls_refuses_an_upload_that_would_pass_it(
    stack: Stack,
) -> None:
    first = await train(stack.client)  # two paid calls: Leonardo and Replicate
    assert first.status_code == 201, first.text
    second = await train(stack.client)  # two more would make four of three
    assert second.status_code == 429, second.text
    assert second.json()["error"]["code"] == "paid_render_cap"
    assert int(second.headers["retry-after"]) > 3600  # the day's first call must age out
    assert stack.leonardo.count("POST /generations") == 1  # nothing more was asked
