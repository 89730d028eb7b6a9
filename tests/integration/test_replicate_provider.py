"""ReplicateProvider over real httpx clients against FakeReplicate on loopback."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest

from gateway.providers.base import RenderRequest
from gateway.providers.replicate import ReplicateProvider
from shared.errors import RateLimited, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from tests.fakes import FakeClock, derived_image
from tests.fakes.replicate import API_TOKEN, FakeReplicate
from tests.images import interior
from tests.servers import free_port, serve

ORIGINAL = interior(320, 240, "JPEG")
PARAMS = {
    "prompt_strength": 0.45,
    "guidance_scale": 7.5,
    "num_inference_steps": 37.6,
    "controlnet_conditioning_scale": 0.8,
}
CREATE = "POST /v1/models/{owner}/{name}/predictions"
CREATE_VERSION = "POST /v1/predictions"
POLL = "GET /v1/predictions/{id}"
CANCEL = "POST /v1/predictions/{id}/cancel"


def render_request(**params: float) -> RenderRequest:
    return RenderRequest(
        api="stable_diffusion",
        image=ORIGINAL,
        content_type="image/jpeg",
        width=320,
        height=240,
        prompt="a calm japandi bedroom, photorealistic",
        negative_prompt="cartoon",
        parameters={**PARAMS, **params},
        seed=77,
    )


@dataclass
class Harness:
    fake: FakeReplicate
    url: str
    clock: FakeClock = field(default_factory=FakeClock)
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    def provider(
        self,
        *,
        url: str | None = None,
        token: str = API_TOKEN,
        model: str = "stability-ai/sdxl",
        wait_seconds: int = 60,
        timeout: float = 70.0,
        deadline_seconds: float = 180.0,
        controlnet_input: str | None = "controlnet_conditioning_scale",
    ) -> ReplicateProvider:
        api = httpx.AsyncClient(
            base_url=url or self.url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout
        )
        downloads = httpx.AsyncClient(timeout=timeout)
        self.clients += [api, downloads]
        return ReplicateProvider(
            api,
            downloads,
            model=model,
            wait_seconds=wait_seconds,
            deadline_seconds=deadline_seconds,
            poll_interval=1.0,
            controlnet_input=controlnet_input,
            sleep=self.clock.sleep,
            clock=self.clock,
        )


@pytest.fixture
async def rep() -> AsyncIterator[Harness]:
    fake = FakeReplicate()
    async with serve(fake.app) as url:
        harness = Harness(fake, url)
        yield harness
        for client in harness.clients:
            await client.aclose()


async def test_render_sends_the_original_and_parameters_and_downloads_the_output_url(
    rep: Harness,
) -> None:
    result = await rep.provider().render(render_request())

    (create,) = rep.fake.seen(CREATE)
    assert create.path == "/v1/models/stability-ai/sdxl/predictions"
    assert create.headers["prefer"] == "wait=60"
    inputs = create.json()["input"]
    assert inputs.pop("image") == "data:image/jpeg;base64," + base64.b64encode(ORIGINAL).decode()
    assert inputs == {
        "prompt": "a calm japandi bedroom, photorealistic",
        "negative_prompt": "cartoon",
        "prompt_strength": 0.45,
        "guidance_scale": 7.5,
        "num_inference_steps": 38,
        "seed": 77,
        "controlnet_conditioning_scale": 0.8,
    }
    assert result.image == derived_image(ORIGINAL)
    assert (result.content_type, result.width, result.height) == ("image/png", 320, 240)
    assert result.provider == "replicate"
    (prediction,) = rep.fake.predictions.values()
    assert result.metadata["prediction_id"] == prediction.id
    (download,) = rep.fake.seen("GET /files/{name}")
    assert "authorization" not in download.headers
    assert rep.fake.count(POLL) == 0


async def test_data_uri_output_given_as_a_single_uri_is_decoded(rep: Harness) -> None:
    rep.fake.output_as = "data_uri"
    rep.fake.output_list = False

    result = await rep.provider().render(render_request())

    assert result.image == derived_image(ORIGINAL)
    assert rep.fake.count("GET /files/{name}") == 0


async def test_versioned_model_uses_the_predictions_route_with_the_version(
    rep: Harness,
) -> None:
    await rep.provider(model="owner/img2img:5c7d5dc6dd8b", controlnet_input=None).render(
        render_request()
    )

    (create,) = rep.fake.seen(CREATE_VERSION)
    assert create.json()["version"] == "5c7d5dc6dd8b"
    assert "controlnet_conditioning_scale" not in create.json()["input"]


async def test_prefer_wait_is_shortened_to_end_before_the_read_timeout(rep: Harness) -> None:
    await rep.provider(wait_seconds=60, timeout=20.0).render(render_request())

    assert rep.fake.seen(CREATE)[0].headers["prefer"] == "wait=15"


async def test_prediction_slower_than_the_wait_is_polled_until_succeeded(rep: Harness) -> None:
    rep.fake.processing_seconds = 120.0
    rep.fake.polls_before_success = 2

    result = await rep.provider().render(render_request())

    assert rep.clock.sleeps == [1.0, 2.0]
    assert rep.fake.count(POLL) == 3
    assert result.image == derived_image(ORIGINAL)


async def test_failed_prediction_raises_with_replicates_error(rep: Harness) -> None:
    rep.fake.fail_with = "CUDA out of memory"

    with pytest.raises(UpstreamError) as info:
        await rep.provider().render(render_request())

    assert info.value.code == "generation_failed"
    assert info.value.upstream == "replicate"
    assert "CUDA out of memory" in info.value.message


async def test_prediction_running_past_the_deadline_is_canceled_and_times_out(
    rep: Harness,
) -> None:
    rep.fake.processing_seconds = 120.0
    rep.fake.polls_before_success = 10**6

    with pytest.raises(UpstreamTimeout) as info:
        await rep.provider(deadline_seconds=40.0).render(render_request())

    assert info.value.upstream == "replicate"
    assert sum(rep.clock.sleeps) == pytest.approx(40.0)
    (cancel,) = rep.fake.seen(CANCEL)
    (prediction,) = rep.fake.predictions.values()
    assert cancel.path == f"/v1/predictions/{prediction.id}/cancel"
    assert prediction.status == "canceled"


async def test_rate_limited_create_waits_the_retry_after_then_succeeds(rep: Harness) -> None:
    rep.fake.throttle(CREATE, times=1, retry_after="4")

    result = await rep.provider().render(render_request())

    assert rep.clock.sleeps == [4.0]
    assert rep.fake.count(CREATE) == 2
    assert len(rep.fake.predictions) == 1
    assert result.image == derived_image(ORIGINAL)


async def test_create_refused_on_every_attempt_raises_rate_limited(rep: Harness) -> None:
    rep.fake.throttle(CREATE, times=100, retry_after="1")

    with pytest.raises(RateLimited) as info:
        await rep.provider().render(render_request())

    assert info.value.retry_after == 1.0
    assert "throttled" in info.value.message
    assert rep.fake.count(CREATE) == 4
    assert rep.fake.predictions == {}


async def test_create_that_times_out_is_not_sent_again(rep: Harness) -> None:
    rep.fake.delay(CREATE, 0.6)

    with pytest.raises(UpstreamTimeout):
        await rep.provider(timeout=0.2).render(render_request())

    assert rep.fake.count(CREATE) == 1


async def test_create_answered_500_is_not_sent_again(rep: Harness) -> None:
    rep.fake.throttle(CREATE, times=1, retry_after=None, status=500)

    with pytest.raises(UpstreamError) as info:
        await rep.provider().render(render_request())

    assert info.value.details["status"] == 500
    assert rep.fake.count(CREATE) == 1


async def test_wrong_token_raises_upstream_auth_with_replicates_detail(rep: Harness) -> None:
    with pytest.raises(UpstreamError) as info:
        await rep.provider(token="r8_wrong").render(render_request())

    assert info.value.code == "upstream_auth"
    assert info.value.upstream == "replicate"
    assert "Invalid or missing API token" in info.value.message


async def test_create_that_cannot_connect_is_not_retried(rep: Harness) -> None:
    provider = rep.provider(url=f"http://127.0.0.1:{free_port()}")

    with pytest.raises(UpstreamUnavailable) as info:
        await provider.render(render_request())

    assert info.value.upstream == "replicate"
    assert rep.clock.sleeps == []


def test_model_that_is_not_owner_slash_name_is_refused_at_construction() -> None:
    client = httpx.AsyncClient()
    with pytest.raises(ValueError, match="owner/name"):
        ReplicateProvider(
            client,
            client,
            model="sdxl",
            wait_seconds=60,
            deadline_seconds=180,
            poll_interval=1,
            controlnet_input=None,
        )
