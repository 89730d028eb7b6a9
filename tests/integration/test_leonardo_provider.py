"""LeonardoProvider over real httpx clients against FakeLeonardo, init images in real S3."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.providers.base import RenderRequest
from gateway.providers.leonardo import LeonardoProvider
from shared.errors import RateLimited, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from tests.fakes import FakeClock, derived_image
from tests.fakes.leonardo import API_KEY, PREFIX, FakeLeonardo
from tests.images import interior
from tests.s3_server import S3Server
from tests.servers import free_port, serve

pytestmark = pytest.mark.s3

ORIGINAL = interior(320, 240, "JPEG")
PARAMS = {"init_strength": 0.35, "guidance_scale": 7.6, "controlnet_weight": 0.65}
MODEL_ID = "b24e16ff-06e3-43eb-8d33-4416c2d75876"
CREATE = "POST /generations"
POLL = "GET /generations/{id}"


def render_request(
    image: bytes = ORIGINAL, width: int = 320, height: int = 240, **params: float
) -> RenderRequest:
    return RenderRequest(
        api="leonardo",
        image=image,
        content_type="image/jpeg",
        width=width,
        height=height,
        prompt="a bright scandinavian living room, photorealistic",
        negative_prompt="blurry, distorted",
        parameters={**PARAMS, **params},
        seed=1234,
    )


@dataclass
class Harness:
    fake: FakeLeonardo
    url: str
    clock: FakeClock = field(default_factory=FakeClock)
    downloads_sent: list[httpx.Request] = field(default_factory=list)
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    def provider(
        self,
        *,
        api_key: str = API_KEY,
        api_timeout: float = 5.0,
        deadline_seconds: float = 180.0,
        url: str | None = None,
    ) -> LeonardoProvider:
        async def keep(request: httpx.Request) -> None:
            await request.aread()
            self.downloads_sent.append(request)

        api = httpx.AsyncClient(
            base_url=(url or self.url) + PREFIX,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=api_timeout,
        )
        downloads = httpx.AsyncClient(timeout=5.0, event_hooks={"request": [keep]})
        self.clients += [api, downloads]
        return LeonardoProvider(
            api,
            downloads,
            model_id=MODEL_ID,
            controlnet_preprocessor_id=20,
            deadline_seconds=deadline_seconds,
            poll_interval=2.0,
            sleep=self.clock.sleep,
            clock=self.clock,
        )


@pytest.fixture
async def leo(s3_server: S3Server) -> AsyncIterator[Harness]:
    fake = FakeLeonardo(s3_server)
    async with serve(fake.app) as url:
        harness = Harness(fake, url)
        yield harness
        for client in harness.clients:
            await client.aclose()


async def test_render_returns_the_generation_derived_from_the_uploaded_original(
    leo: Harness,
) -> None:
    result = await leo.provider().render(render_request())

    (generation,) = leo.fake.generations.values()
    init_id = generation.request["init_image_id"]
    assert await asyncio.to_thread(leo.fake.uploaded, init_id) == ORIGINAL
    assert result.image == derived_image(ORIGINAL, (320, 240))
    assert (result.content_type, result.width, result.height) == ("image/png", 320, 240)
    assert result.provider == "leonardo"
    assert result.metadata["generation_id"] == generation.id
    assert result.metadata["api_credit_cost"] == 9
    assert result.metadata["init_image_id"] == init_id


async def test_generation_request_carries_the_arm_parameters_as_leonardo_expects(
    leo: Harness,
) -> None:
    large = interior(2000, 1500, "JPEG")
    await leo.provider().render(
        render_request(large, 2000, 1500, guidance_scale=7.6, init_strength=0.95)
    )

    (sent,) = leo.fake.seen(CREATE)
    body = sent.json()
    init_id = body["init_image_id"]
    assert body == {
        "prompt": "a bright scandinavian living room, photorealistic",
        "negative_prompt": "blurry, distorted",
        "modelId": MODEL_ID,
        "width": 1536,
        "height": 1152,
        "num_images": 1,
        "guidance_scale": 8,
        "init_image_id": init_id,
        "init_strength": 0.9,
        "seed": 1234,
        "alchemy": False,
        "photoReal": False,
        "controlnets": [
            {
                "initImageId": init_id,
                "initImageType": "UPLOADED",
                "preprocessorId": 20,
                "weight": 0.65,
            }
        ],
    }
    assert type(body["guidance_scale"]) is int
    assert leo.fake.seen("POST /init-image")[0].json() == {"extension": "jpg"}


async def test_upload_sends_policy_fields_before_the_file_and_no_credentials(
    leo: Harness,
) -> None:
    await leo.provider().render(render_request())

    upload, download = leo.downloads_sent
    assert upload.method == "POST" and download.method == "GET"
    fields = ("key", "policy", "x-amz-signature", "x-amz-credential")
    positions = [upload.content.index(f'name="{name}"'.encode()) for name in fields]
    assert max(positions) < upload.content.index(b'name="file"')
    assert "authorization" not in upload.headers
    (cdn,) = leo.fake.seen("GET /cdn/{name}")
    assert "authorization" not in cdn.headers


async def test_pending_generation_is_polled_with_doubling_waits_capped_at_ten_seconds(
    leo: Harness,
) -> None:
    leo.fake.polls_before_complete = 5

    result = await leo.provider().render(render_request())

    assert leo.clock.sleeps == [2.0, 4.0, 8.0, 10.0, 10.0]
    assert leo.fake.count(POLL) == 6
    assert result.image == derived_image(ORIGINAL, (320, 240))


async def test_failed_generation_raises_generation_failed(leo: Harness) -> None:
    leo.fake.fail_generation = True

    with pytest.raises(UpstreamError) as info:
        await leo.provider().render(render_request())

    assert info.value.code == "generation_failed"
    assert info.value.upstream == "leonardo"
    assert leo.fake.count("GET /cdn/{name}") == 0


async def test_generation_pending_past_the_deadline_raises_upstream_timeout(
    leo: Harness,
) -> None:
    leo.fake.polls_before_complete = 10**6

    with pytest.raises(UpstreamTimeout) as info:
        await leo.provider(deadline_seconds=30.0).render(render_request())

    assert info.value.upstream == "leonardo"
    assert sum(leo.clock.sleeps) == pytest.approx(30.0)
    assert leo.clock.sleeps[-1] < 10.0  # the last wait ends at the deadline
    assert leo.fake.count(CREATE) == 1


async def test_rate_limited_create_waits_the_retry_after_then_succeeds(leo: Harness) -> None:
    leo.fake.throttle(CREATE, times=1, retry_after="3")

    result = await leo.provider().render(render_request())

    assert leo.clock.sleeps[0] == 3.0
    assert leo.fake.count(CREATE) == 2
    assert len(leo.fake.generations) == 1
    assert result.image == derived_image(ORIGINAL, (320, 240))


async def test_retry_after_given_as_an_http_date_is_honoured(leo: Harness) -> None:
    # Whole seconds only, and the render runs before the poll: the wait is a bit under 10 s.
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=10), usegmt=True)
    leo.fake.throttle(POLL, times=1, retry_after=when)

    await leo.provider().render(render_request())

    assert 6.0 < leo.clock.sleeps[0] <= 10.0
    assert leo.fake.count(POLL) == 2


async def test_create_refused_on_every_attempt_raises_rate_limited(leo: Harness) -> None:
    leo.fake.throttle(CREATE, times=100, retry_after="2")

    with pytest.raises(RateLimited) as info:
        await leo.provider().render(render_request())

    assert info.value.retry_after == 2.0
    assert info.value.details["upstream"] == "leonardo"
    assert leo.clock.sleeps == [2.0, 2.0, 2.0]
    assert leo.fake.count(CREATE) == 4


async def test_retry_after_beyond_the_cap_fails_at_once(leo: Harness) -> None:
    leo.fake.throttle(CREATE, times=1, retry_after="600")

    with pytest.raises(RateLimited) as info:
        await leo.provider().render(render_request())

    assert info.value.retry_after == 600.0
    assert leo.clock.sleeps == []
    assert leo.fake.count(CREATE) == 1


async def test_create_that_times_out_is_not_sent_again(leo: Harness) -> None:
    leo.fake.delay(CREATE, 1.2)

    with pytest.raises(UpstreamTimeout):
        await leo.provider(api_timeout=0.6).render(render_request())

    assert leo.fake.count(CREATE) == 1


async def test_create_answered_503_is_not_sent_again(leo: Harness) -> None:
    leo.fake.throttle(CREATE, times=1, retry_after=None, status=503)

    with pytest.raises(UpstreamUnavailable):
        await leo.provider().render(render_request())

    assert leo.fake.count(CREATE) == 1


async def test_status_poll_answered_503_is_retried_with_backoff(leo: Harness) -> None:
    leo.fake.throttle(POLL, times=2, retry_after=None, status=503)

    result = await leo.provider().render(render_request())

    assert leo.clock.sleeps == [0.5, 1.0]
    assert leo.fake.count(POLL) == 3
    assert result.width == 320


async def test_wrong_api_key_raises_upstream_auth(leo: Harness) -> None:
    with pytest.raises(UpstreamError) as info:
        await leo.provider(api_key="not-the-key").render(render_request())

    assert info.value.code == "upstream_auth"
    assert info.value.upstream == "leonardo"
    assert leo.fake.init_images == {}


async def test_expired_upload_url_is_refused_by_s3_and_nothing_is_generated(
    leo: Harness,
) -> None:
    leo.fake.upload_expires = -10

    with pytest.raises(UpstreamError) as info:
        await leo.provider().render(render_request())

    assert "Policy expired" in info.value.message
    assert leo.fake.count(CREATE) == 0


async def test_unreachable_api_raises_upstream_unavailable_after_retries(leo: Harness) -> None:
    provider = leo.provider(url=f"http://127.0.0.1:{free_port()}")

    with pytest.raises(UpstreamUnavailable) as info:
        await provider.render(render_request())

    assert info.value.upstream == "leonardo"
    assert leo.clock.sleeps == [0.5, 1.0, 2.0]


@pytest.mark.parametrize("where", ["upload", "result"])
async def test_leonardo_urls_at_another_loopback_address_are_never_requested(
    leo: Harness, where: str
) -> None:
    seen: list[str] = []

    async def anything(request: Request) -> Response:
        seen.append(request.url.path)
        return Response(b"", status_code=204)

    async with serve(Starlette(routes=[Route("/{path:path}", anything)]), host="127.0.0.2") as bad:
        if where == "upload":
            leo.fake.upload_url = f"{bad}/upload"
        else:
            leo.fake.cdn_base = bad
        with pytest.raises(UpstreamError) as refused:
            await leo.provider().render(render_request())
    assert refused.value.code == "upstream_bad_url"
    assert seen == []
