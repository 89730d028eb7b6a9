"""Leonardo.ai image-to-image over its REST v1 API (``shared/REFERENCE.md``, "Leonardo.ai").

Four steps: register an init image, upload it to the presigned S3 form, start a generation with
the arm's parameters and a ControlNet on the same init image, then poll until it is done and
download the result. Only the generation costs credits, so only its create is guarded against
being sent twice (``gateway.providers.http``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from gateway.providers.base import ProviderName, RenderRequest, RenderResult
from gateway.providers.fetch import (
    DEFAULT_MAX_DOWNLOAD_BYTES,
    DEFAULT_MAX_PIXELS,
    UrlGuard,
    download,
)
from gateway.providers.http import Clock, Sleep, UpstreamHttp, json_object, poll_schedule
from gateway.providers.images import decode_image, fit_within
from shared.errors import InvalidInput, UpstreamError, UpstreamTimeout

log = logging.getLogger("latina.providers.leonardo")

UPSTREAM = "leonardo"
MAX_SIDE = 1536
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
UPLOAD_OK = (200, 201, 204)


@dataclass(frozen=True)
class _InitImage:
    id: str
    url: str
    fields: dict[str, str]


def _parameter(request: RenderRequest, name: str) -> float:
    try:
        return float(request.parameters[name])
    except KeyError:
        raise InvalidInput(f"the Leonardo render needs the parameter {name!r}") from None


def _clip(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


def _unexpected(what: str) -> UpstreamError:
    return UpstreamError(f"leonardo answered {what} in an unexpected shape", upstream=UPSTREAM)


class LeonardoProvider:
    """Renders one variant on Leonardo.ai; see the module docstring for the steps."""

    name: ProviderName = "leonardo"

    def __init__(
        self,
        api: httpx.AsyncClient,
        downloads: httpx.AsyncClient,
        *,
        model_id: str,
        controlnet_preprocessor_id: int,
        deadline_seconds: float,
        poll_interval: float,
        max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
    ) -> None:
        """Build the provider over the gateway's long-lived clients.

        Args:
            api: Client with Leonardo's base URL and the bearer header.
            downloads: Client without credentials, for the presigned upload and the result.
            model_id: Leonardo model (``modelId``).
            controlnet_preprocessor_id: ControlNet preprocessor matching the model's family.
            deadline_seconds: Longest a whole render may take before ``UpstreamTimeout``.
            poll_interval: First wait between status polls; doubles up to 10 s.
            max_download_bytes: Largest rendered image downloaded.
            max_pixels: Largest rendered image (from its header) accepted.
            sleep: Awaited for every wait (tests pass a recorder).
            clock: Monotonic seconds for the deadline (tests pass a fake advanced by ``sleep``).
        """
        self._api = api
        self._downloads = downloads
        # the URLs Leonardo answers with (upload, result) go where the guard lets them
        self._guard = UrlGuard(UPSTREAM, [api.base_url.host])
        self._max_download_bytes = max_download_bytes
        self._max_pixels = max_pixels
        self._model_id = model_id
        self._preprocessor_id = controlnet_preprocessor_id
        self._deadline_seconds = deadline_seconds
        self._poll_interval = poll_interval
        self._sleep = sleep
        self._clock = clock
        self._http = UpstreamHttp(UPSTREAM, ("error",), sleep=sleep, clock=clock)

    async def render(self, request: RenderRequest) -> RenderResult:
        """Render ``request`` on Leonardo.

        Raises:
            InvalidInput: A parameter is missing or the image type is not PNG/JPEG/WebP.
            UpstreamError: Leonardo failed (code ``generation_failed`` for a FAILED generation,
                ``upstream_auth`` for a refused key); ``UpstreamTimeout`` past the deadline;
                ``RateLimited`` when Leonardo keeps refusing.
        """
        deadline = self._clock() + self._deadline_seconds
        extension = EXTENSIONS.get(request.content_type)
        if extension is None:
            raise InvalidInput(f"Leonardo cannot take {request.content_type} init images")
        init = await self._register_init_image(extension, deadline)
        await self._upload(init, request, extension, deadline)
        generation_id, cost = await self._start_generation(request, init.id, deadline)
        log.info("leonardo generation started", extra={"generation_id": generation_id})
        url = await self._wait_until_complete(generation_id, deadline)
        data = await download(
            self._downloads,
            url,
            guard=self._guard,
            max_bytes=self._max_download_bytes,
            deadline=deadline,
            clock=self._clock,
        )
        image = decode_image(data, UPSTREAM, max_pixels=self._max_pixels)
        return RenderResult(
            image=data,
            content_type=image.content_type,
            width=image.width,
            height=image.height,
            provider="leonardo",
            metadata={
                "generation_id": generation_id,
                "api_credit_cost": cost,
                "init_image_id": init.id,
                "model_id": self._model_id,
            },
        )

    async def _register_init_image(self, extension: str, deadline: float) -> _InitImage:
        # Free and harmless to repeat: an unused init image is just never referenced.
        response = await self._http.request(
            self._api, "POST", "/init-image", json={"extension": extension}, deadline=deadline
        )
        upload = json_object(response, UPSTREAM).get("uploadInitImage")
        if not isinstance(upload, dict):
            raise _unexpected("/init-image")
        fields: Any = upload.get("fields")
        if isinstance(fields, str):  # documented as a JSON string
            try:
                fields = json.loads(fields)
            except json.JSONDecodeError as exc:
                raise _unexpected("/init-image fields") from exc
        init_id, url = upload.get("id"), upload.get("url")
        if not (isinstance(init_id, str) and isinstance(url, str) and isinstance(fields, dict)):
            raise _unexpected("/init-image")
        return _InitImage(init_id, url, {str(k): str(v) for k, v in fields.items()})

    async def _upload(
        self, init: _InitImage, request: RenderRequest, extension: str, deadline: float
    ) -> None:
        await self._guard.check(init.url)
        # httpx writes ``data`` before ``files``: S3 ignores form fields after the file.
        response = await self._http.request(
            self._downloads,
            "POST",
            init.url,
            data=init.fields,
            files={"file": (f"init.{extension}", request.image, request.content_type)},
            deadline=deadline,
        )
        if response.status_code not in UPLOAD_OK:
            raise UpstreamError(
                f"leonardo's upload URL answered {response.status_code}",
                upstream=UPSTREAM,
                details={"status": response.status_code},
            )

    async def _start_generation(
        self, request: RenderRequest, init_id: str, deadline: float
    ) -> tuple[str, int | None]:
        width, height = fit_within(request.width, request.height, MAX_SIDE)
        body = {
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "modelId": self._model_id,
            "width": width,
            "height": height,
            "num_images": 1,
            "guidance_scale": int(_clip(round(_parameter(request, "guidance_scale")), 1, 20)),
            "init_image_id": init_id,
            "init_strength": _clip(_parameter(request, "init_strength"), 0.1, 0.9),
            "seed": request.seed,
            "alchemy": False,
            "photoReal": False,
            "controlnets": [
                {
                    "initImageId": init_id,
                    "initImageType": "UPLOADED",
                    "preprocessorId": self._preprocessor_id,
                    "weight": _parameter(request, "controlnet_weight"),
                }
            ],
        }
        response = await self._http.create(self._api, "/generations", json=body, deadline=deadline)
        job = json_object(response, UPSTREAM).get("sdGenerationJob")
        if not isinstance(job, dict) or not isinstance(job.get("generationId"), str):
            raise _unexpected("POST /generations")
        cost = job.get("apiCreditCost")
        return job["generationId"], cost if isinstance(cost, int) else None

    async def _wait_until_complete(self, generation_id: str, deadline: float) -> str:
        """The URL of the generated image, once the generation is COMPLETE."""
        path = f"/generations/{quote(generation_id, safe='')}"
        async for _ in poll_schedule(
            self._poll_interval, deadline, sleep=self._sleep, clock=self._clock
        ):
            response = await self._http.request(self._api, "GET", path, deadline=deadline)
            generation = json_object(response, UPSTREAM).get("generations_by_pk")
            if not isinstance(generation, dict):
                continue  # not visible yet right after the create
            status = generation.get("status")
            if status == "FAILED":
                raise UpstreamError(
                    "leonardo could not complete the generation",
                    upstream=UPSTREAM,
                    code="generation_failed",
                    details={"generation_id": generation_id},
                )
            if status == "COMPLETE":
                images = generation.get("generated_images")
                if not images or not isinstance(images[0], dict):
                    raise _unexpected("a COMPLETE generation without images")
                url = images[0].get("url")
                if not isinstance(url, str):
                    raise _unexpected("a generated image without a URL")
                return url
        raise UpstreamTimeout(
            f"leonardo generation not complete after {self._deadline_seconds:g} s",
            upstream=UPSTREAM,
            details={"generation_id": generation_id},
        )
