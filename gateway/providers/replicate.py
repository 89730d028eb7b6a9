"""Replicate image-to-image predictions (``shared/REFERENCE.md``, "Replicate").

One create (held open with ``Prefer: wait``), then polls until the prediction is terminal, then
the first output, which is either an HTTP URL or a ``data:`` URI. A prediction we stop waiting
for is cancelled, so it stops costing money.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
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
from gateway.providers.images import decode_image, from_data_uri, is_data_uri, to_data_uri
from shared.errors import InvalidInput, LatinaError, UpstreamError, UpstreamTimeout

log = logging.getLogger("latina.providers.replicate")

UPSTREAM = "replicate"
_MODEL = re.compile(r"^([\w.-]+)/([\w.-]+)(?::([0-9A-Za-z]+))?$")
# Replicate answers a held request when the wait ends; our read timeout must outlast it.
WAIT_MARGIN_SECONDS = 5.0
CANCEL_TIMEOUT_SECONDS = 5.0
TERMINAL = ("succeeded", "failed", "canceled")


def _parameter(request: RenderRequest, name: str) -> float:
    try:
        return float(request.parameters[name])
    except KeyError:
        raise InvalidInput(f"the Replicate render needs the parameter {name!r}") from None


class ReplicateProvider:
    """Renders one variant with a Replicate model; see the module docstring."""

    name: ProviderName = "replicate"

    def __init__(
        self,
        api: httpx.AsyncClient,
        downloads: httpx.AsyncClient,
        *,
        model: str,
        wait_seconds: int,
        deadline_seconds: float,
        poll_interval: float,
        controlnet_input: str | None,
        max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
    ) -> None:
        """Build the provider over the gateway's long-lived clients.

        Args:
            api: Client with Replicate's base URL and the bearer header.
            downloads: Client without credentials, for output URLs.
            model: ``owner/name`` (the model's latest version) or ``owner/name:version``.
            wait_seconds: ``Prefer: wait`` for the create, lowered to fit ``api``'s read timeout.
            deadline_seconds: Longest a whole render may take before ``UpstreamTimeout``.
            poll_interval: First wait between status polls; doubles up to 10 s.
            controlnet_input: The model's input name for ``controlnet_conditioning_scale``;
                None leaves the scale out.
            max_download_bytes: Largest output downloaded (or carried as a data URI).
            max_pixels: Largest output image (from its header) accepted.
            sleep: Awaited for every wait (tests pass a recorder).
            clock: Monotonic seconds for the deadline (tests pass a fake advanced by ``sleep``).

        Raises:
            ValueError: ``model`` is not ``owner/name`` or ``owner/name:version``.
        """
        match = _MODEL.match(model)
        if match is None:
            raise ValueError(f"REPLICATE_MODEL must be owner/name[:version], not {model!r}")
        owner, model_name, self._version = match.groups()
        self._model = model
        self._create_path = (
            "/v1/predictions" if self._version else f"/v1/models/{owner}/{model_name}/predictions"
        )
        self._api = api
        self._downloads = downloads
        # output URLs go where the guard lets them
        self._guard = UrlGuard(UPSTREAM, [api.base_url.host])
        self._max_download_bytes = max_download_bytes
        self._max_pixels = max_pixels
        self._wait_seconds = self._fit_wait(wait_seconds, api.timeout.read)
        self._deadline_seconds = deadline_seconds
        self._poll_interval = poll_interval
        self._controlnet_input = controlnet_input
        self._sleep = sleep
        self._clock = clock
        self._http = UpstreamHttp(UPSTREAM, ("detail", "title"), sleep=sleep, clock=clock)

    @staticmethod
    def _fit_wait(wait_seconds: int, read_timeout: float | None) -> int:
        # A create that times out cannot be re-sent (it may be running and billed) and its id
        # is lost, so Replicate must answer before our read timeout does.
        if read_timeout is None:
            return max(1, min(60, wait_seconds))
        fitting = math.floor(read_timeout - WAIT_MARGIN_SECONDS)
        return max(1, min(60, wait_seconds, fitting))

    async def render(self, request: RenderRequest) -> RenderResult:
        """Render ``request`` on Replicate.

        Raises:
            InvalidInput: A parameter is missing.
            UpstreamError: The prediction failed or was canceled (code ``generation_failed``),
                the token was refused (``upstream_auth``), or another upstream failure;
                ``UpstreamTimeout`` past the deadline; ``RateLimited`` when Replicate keeps
                refusing.
        """
        deadline = self._clock() + self._deadline_seconds
        prediction = await self._create(request, deadline)
        prediction_id = prediction.get("id")
        if not isinstance(prediction_id, str):
            raise UpstreamError("replicate answered a prediction without an id", upstream=UPSTREAM)
        if prediction.get("status") not in TERMINAL:
            try:
                prediction = await self._wait_until_terminal(prediction_id, deadline)
            except LatinaError:
                await self._cancel(prediction_id)
                raise
        if prediction.get("status") != "succeeded":
            error = prediction.get("error")
            raise UpstreamError(
                f"replicate prediction {prediction.get('status')}: {error or 'no reason given'}",
                upstream=UPSTREAM,
                code="generation_failed",
                details={"prediction_id": prediction_id},
            )
        data = await self._fetch_output(prediction.get("output"), deadline)
        image = decode_image(data, UPSTREAM, max_pixels=self._max_pixels)
        metrics = prediction.get("metrics")
        predict_time = metrics.get("predict_time") if isinstance(metrics, dict) else None
        return RenderResult(
            image=data,
            content_type=image.content_type,
            width=image.width,
            height=image.height,
            provider="replicate",
            metadata={
                "prediction_id": prediction_id,
                "model": self._model,
                "predict_time": predict_time,
            },
        )

    def _inputs(self, request: RenderRequest) -> dict[str, Any]:
        inputs: dict[str, Any] = {
            "image": to_data_uri(request.image, request.content_type),
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "prompt_strength": _parameter(request, "prompt_strength"),
            "guidance_scale": _parameter(request, "guidance_scale"),
            "num_inference_steps": round(_parameter(request, "num_inference_steps")),
            "seed": request.seed,
        }
        if self._controlnet_input:
            inputs[self._controlnet_input] = _parameter(request, "controlnet_conditioning_scale")
        return inputs

    async def _create(self, request: RenderRequest, deadline: float) -> dict[str, Any]:
        body: dict[str, Any] = {"input": self._inputs(request)}
        if self._version:
            body["version"] = self._version
        response = await self._http.create(
            self._api,
            self._create_path,
            json=body,
            headers={"Prefer": f"wait={self._wait_seconds}"},
            deadline=deadline,
        )
        return json_object(response, UPSTREAM)

    async def _wait_until_terminal(self, prediction_id: str, deadline: float) -> dict[str, Any]:
        path = f"/v1/predictions/{quote(prediction_id, safe='')}"
        async for _ in poll_schedule(
            self._poll_interval, deadline, sleep=self._sleep, clock=self._clock
        ):
            response = await self._http.request(self._api, "GET", path, deadline=deadline)
            prediction = json_object(response, UPSTREAM)
            if prediction.get("status") in TERMINAL:
                return prediction
        raise UpstreamTimeout(
            f"replicate prediction not finished after {self._deadline_seconds:g} s",
            upstream=UPSTREAM,
            details={"prediction_id": prediction_id},
        )

    async def _cancel(self, prediction_id: str) -> None:
        """Best effort: the caller's error matters more than a failed cancel."""
        path = f"/v1/predictions/{quote(prediction_id, safe='')}/cancel"
        try:
            response = await self._api.post(path, timeout=CANCEL_TIMEOUT_SECONDS)
        except httpx.HTTPError as exc:
            log.warning(
                "replicate cancel failed", extra={"prediction_id": prediction_id, "error": str(exc)}
            )
            return
        if response.status_code >= 400:
            log.warning(
                "replicate cancel refused",
                extra={"prediction_id": prediction_id, "status": response.status_code},
            )

    async def _fetch_output(self, output: Any, deadline: float) -> bytes:
        uri = output[0] if isinstance(output, list) and output else output
        if not isinstance(uri, str) or not uri:
            raise UpstreamError(
                "replicate prediction succeeded without an output", upstream=UPSTREAM
            )
        if is_data_uri(uri):
            data = from_data_uri(uri, UPSTREAM)
            if len(data) > self._max_download_bytes:
                raise UpstreamError(
                    f"replicate returned more than {self._max_download_bytes} bytes",
                    upstream=UPSTREAM,
                    code="upstream_too_large",
                )
            return data
        if not uri.lower().startswith(("https://", "http://")):
            raise UpstreamError(
                "replicate output is neither a URL nor a data URI", upstream=UPSTREAM
            )
        return await download(
            self._downloads,
            uri,
            guard=self._guard,
            max_bytes=self._max_download_bytes,
            deadline=deadline,
            clock=self._clock,
        )
