"""URLs in an image API's answer are followed only where they may lead: https (or the API's
own configured host), public addresses after resolving, redirects checked hop by hop, a byte
cap, a pixel cap from the header and one deadline for the whole download."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway.providers.fetch import UrlGuard
from gateway.providers.replicate import ReplicateProvider
from shared.errors import UpstreamError, UpstreamTimeout
from tests.fakes.replicate import API_TOKEN, FakeReplicate
from tests.images import interior
from tests.integration.test_replicate_provider import render_request
from tests.servers import serve


class Recorder:
    """A server that stands for what must never be reached (an instance-metadata endpoint)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

        async def anything(request: Request) -> Response:
            self.seen.append(request.url.path)
            return Response(interior(64, 64, "PNG"), media_type="image/png")

        self.app = Starlette(routes=[Route("/{path:path}", anything)])


def provider(url: str, **options: Any) -> tuple[ReplicateProvider, list[httpx.AsyncClient]]:
    api = httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {API_TOKEN}"})
    downloads = httpx.AsyncClient(timeout=70)
    built = ReplicateProvider(
        api,
        downloads,
        model="stability-ai/sdxl",
        wait_seconds=5,
        deadline_seconds=options.pop("deadline_seconds", 60.0),
        poll_interval=0.05,
        controlnet_input=None,
        **options,
    )
    return built, [api, downloads]


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeReplicate, str]]:
    replicate = FakeReplicate()
    async with serve(replicate.app) as url:
        yield replicate, url


async def _render(url: str, **options: Any) -> Any:
    built, clients = provider(url, **options)
    try:
        return await built.render(render_request())
    finally:
        for client in clients:
            await client.aclose()


async def test_an_output_url_at_another_loopback_address_is_never_requested(
    fake: tuple[FakeReplicate, str],
) -> None:
    replicate, url = fake
    metadata = Recorder()
    async with serve(metadata.app, host="127.0.0.2") as elsewhere:
        replicate.output_base = elsewhere
        with pytest.raises(UpstreamError) as refused:
            await _render(url)
    assert refused.value.code == "upstream_bad_url"
    assert metadata.seen == []


async def test_a_redirect_to_a_private_address_is_not_followed(
    fake: tuple[FakeReplicate, str],
) -> None:
    replicate, url = fake
    metadata = Recorder()
    async with serve(metadata.app, host="127.0.0.2") as elsewhere:

        async def hop(request: Request) -> Response:
            return RedirectResponse(f"{elsewhere}/latest/meta-data/", status_code=302)

        # the redirect comes from the API's own (trusted) host; its target is checked again
        async with serve(Starlette(routes=[Route("/files/{name}", hop)])) as redirector:
            replicate.output_base = redirector
            with pytest.raises(UpstreamError) as refused:
                await _render(url)
    assert refused.value.code == "upstream_bad_url"
    assert metadata.seen == []


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("http://images.example.com/out.png", "not https"),
        ("https://169.254.169.254/latest/meta-data/", "not a public address"),
        ("https://10.0.0.7/out.png", "not a public address"),
        ("https://[::1]/out.png", "not a public address"),
        ("file:///etc/passwd", "not https"),
    ],
)
async def test_the_guard_refuses_plain_http_and_non_public_addresses(target: str, why: str) -> None:
    guard = UrlGuard("replicate", ["api.replicate.com"])
    with pytest.raises(UpstreamError, match=why) as refused:
        await guard.check(target)
    assert refused.value.code == "upstream_bad_url"


async def test_the_configured_host_is_trusted_and_public_https_passes() -> None:
    trusting = UrlGuard("replicate", ["127.0.0.1"])
    stranger = UrlGuard("replicate", ["api.replicate.com"])
    own_host = "http://127.0.0.1:9/files/x.png"  # the operator's own base URL host
    assert await _refusal(trusting, own_host) is None
    assert await _refusal(stranger, own_host) == "not https"  # trusted only where configured
    public = "https://8.8.8.8/out.png"  # a public address, resolved without DNS
    assert await _refusal(trusting, public) is None
    assert await _refusal(stranger, public) is None


async def _refusal(guard: UrlGuard, url: str) -> str | None:
    """Why ``guard`` refuses ``url`` (the reason its message ends with), or None."""
    try:
        await guard.check(url)
    except UpstreamError as exc:
        return exc.message.rsplit("(", 1)[-1].rstrip(")")
    return None


async def test_a_download_over_the_byte_cap_is_refused(fake: tuple[FakeReplicate, str]) -> None:
    _, url = fake
    with pytest.raises(UpstreamError) as refused:
        await _render(url, max_download_bytes=1000)
    assert refused.value.code == "upstream_too_large"


async def test_an_image_over_the_pixel_cap_is_refused_from_its_header(
    fake: tuple[FakeReplicate, str],
) -> None:
    _, url = fake
    with pytest.raises(UpstreamError) as refused:
        await _render(url, max_pixels=1000)
    assert refused.value.code == "upstream_image_too_large"


async def test_a_download_that_drips_is_cut_at_the_overall_deadline(
    fake: tuple[FakeReplicate, str],
) -> None:
    replicate, url = fake
    served = 0

    async def drip(request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            nonlocal served
            for _ in range(100):  # each chunk well within the read timeout
                await asyncio.sleep(0.2)
                served += 1
                yield b"x" * 10

        return StreamingResponse(chunks(), media_type="image/png")

    async with serve(Starlette(routes=[Route("/files/{name}", drip)])) as slow:
        replicate.output_base = slow
        with pytest.raises(UpstreamTimeout):
            await _render(url, deadline_seconds=2.0)
    assert served < 100  # cut off mid-transfer, though every chunk came within the read timeout
