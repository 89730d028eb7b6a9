"""A fake Replicate HTTP API (``shared/REFERENCE.md``, "Replicate").

Routes: ``POST /v1/models/{owner}/{name}/predictions``, ``POST /v1/predictions`` (with
``version``), ``GET /v1/predictions/{id}``, ``POST /v1/predictions/{id}/cancel`` and, for output
URLs, ``GET /files/{name}`` (no credentials, like Replicate's delivery host). Errors are
RFC 7807 bodies. The "model" returns ``derived_image`` of the input image.

How a prediction runs: the model takes ``processing_seconds``. When that fits in the create's
``Prefer: wait=N``, the create holds for it and answers ``succeeded``; otherwise it answers
``starting`` at once (the fake does not hold the full wait, to keep tests fast) and the next
``polls_before_success`` GETs answer ``processing`` before one answers ``succeeded``. With
``fail_with`` set, the prediction ends ``failed`` with that error instead.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes import FakeApi, derived_image

API_TOKEN = "r8_test_token"  # the bearer token the fake requires by default
_DATA_URI = re.compile(r"^data:image/[\w.+-]+;base64,(.*)$", re.DOTALL)
_PREFER_WAIT = re.compile(r"\bwait(?:=(\d+))?\b")


@dataclass
class Prediction:
    id: str
    model: str
    version: str | None
    input: dict[str, Any]
    status: str
    image: bytes
    polls: int = 0
    error: str | None = None


class FakeReplicate(FakeApi):
    """Replicate's predictions API with configurable behaviour (see the module docstring).

    Attributes:
        processing_seconds: How long the model runs, compared with ``Prefer: wait``.
        polls_before_success: GETs answering ``processing`` after a create that did not finish.
        output_as: ``"url"`` (served from ``/files``) or ``"data_uri"``.
        output_list: Output is a list of URIs (image models) rather than one URI.
        fail_with: When set, predictions end ``failed`` with this error message.
        predictions: Prediction id → its state, input and generated image.
    """

    def __init__(
        self,
        *,
        token: str | None = API_TOKEN,
        processing_seconds: float = 0.0,
        polls_before_success: int = 1,
        output_as: Literal["url", "data_uri"] = "url",
        output_list: bool = True,
        fail_with: str | None = None,
    ) -> None:
        super().__init__(token)
        self.processing_seconds = processing_seconds
        self.polls_before_success = polls_before_success
        self.output_as = output_as
        self.output_base: str | None = None  # where output URLs point (default: this fake)
        self.output_list = output_list
        self.fail_with = fail_with
        self.predictions: dict[str, Prediction] = {}
        self.app = Starlette(
            routes=[
                Route("/v1/models/{owner}/{name}/predictions", self._create, methods=["POST"]),
                Route("/v1/predictions", self._create, methods=["POST"]),
                Route("/v1/predictions/{id}", self._get, methods=["GET"]),
                Route("/v1/predictions/{id}/cancel", self._cancel, methods=["POST"]),
                Route("/files/{name}", self._file, methods=["GET"]),
            ]
        )

    def refusal(self, status: int, retry_after: str | None) -> str:
        if status == 429:
            return f"Request was throttled. Expected available in {retry_after or 1} second."
        return super().refusal(status, retry_after)

    def error(self, status: int, message: str) -> Response:
        titles = {401: "Unauthenticated", 404: "Not found", 422: "Input validation failed"}
        title = "Request was throttled." if status == 429 else titles.get(status, "Error")
        return JSONResponse(
            {"type": "about:blank", "title": title, "status": status, "detail": message},
            status_code=status,
            media_type="application/problem+json",
        )

    async def _create(self, request: Request) -> Response:
        by_model = "owner" in request.path_params
        route = "POST /v1/models/{owner}/{name}/predictions" if by_model else "POST /v1/predictions"
        if early := await self.gate(request, route):
            return early
        body = await request.json()
        version = body.get("version")
        if not by_model and not isinstance(version, str):
            return self.error(422, "version is required")
        inputs = body.get("input")
        if not isinstance(inputs, dict) or not isinstance(inputs.get("prompt"), str):
            return self.error(422, "input.prompt is required")
        match = _DATA_URI.match(str(inputs.get("image", "")))
        if match is None:
            return self.error(422, "input.image must be an image data URI")
        try:
            source = base64.b64decode(match.group(1), validate=True)
        except binascii.Error:
            return self.error(422, "input.image is not valid base64")
        model = (
            f"{request.path_params['owner']}/{request.path_params['name']}"
            if by_model
            else "fake/versioned"
        )
        image = await asyncio.to_thread(derived_image, source)
        prediction = Prediction(uuid.uuid4().hex, model, version, inputs, "starting", image)
        self.predictions[prediction.id] = prediction
        wait = _prefer_wait(request.headers.get("prefer"))
        if wait is not None and self.processing_seconds <= wait:
            await asyncio.sleep(self.processing_seconds)
            self._finish(prediction)
        return JSONResponse(self._body(prediction, request), status_code=201)

    async def _get(self, request: Request) -> Response:
        if early := await self.gate(request, "GET /v1/predictions/{id}"):
            return early
        prediction = self.predictions.get(request.path_params["id"])
        if prediction is None:
            return self.error(404, "prediction not found")
        if prediction.status in ("starting", "processing"):
            prediction.polls += 1
            if prediction.polls > self.polls_before_success:
                self._finish(prediction)
            else:
                prediction.status = "processing"
        return JSONResponse(self._body(prediction, request))

    async def _cancel(self, request: Request) -> Response:
        if early := await self.gate(request, "POST /v1/predictions/{id}/cancel"):
            return early
        prediction = self.predictions.get(request.path_params["id"])
        if prediction is None:
            return self.error(404, "prediction not found")
        if prediction.status in ("starting", "processing"):
            prediction.status = "canceled"
        return JSONResponse(self._body(prediction, request))

    async def _file(self, request: Request) -> Response:
        if early := await self.gate(request, "GET /files/{name}", auth=False):
            return early
        prediction = self.predictions.get(request.path_params["name"].removesuffix(".png"))
        if prediction is None or prediction.status != "succeeded":
            return Response(status_code=404)
        return Response(prediction.image, media_type="image/png")

    def _finish(self, prediction: Prediction) -> None:
        if self.fail_with is not None:
            prediction.status, prediction.error = "failed", self.fail_with
        else:
            prediction.status = "succeeded"

    def _body(self, prediction: Prediction, request: Request) -> dict[str, Any]:
        base = str(request.base_url).rstrip("/")
        output: Any = None
        if prediction.status == "succeeded":
            if self.output_as == "url":
                uri = f"{self.output_base or base}/files/{prediction.id}.png"
            else:
                uri = "data:image/png;base64," + base64.b64encode(prediction.image).decode()
            output = [uri] if self.output_list else uri
        done = prediction.status in ("succeeded", "failed", "canceled")
        return {
            "id": prediction.id,
            "model": prediction.model,
            "version": prediction.version or "fake-latest",
            "input": prediction.input,
            "status": prediction.status,
            "output": output,
            "error": prediction.error,
            "logs": "",
            "created_at": "2026-11-26T12:00:00.000Z",
            "completed_at": "2026-11-26T12:00:03.000Z" if done else None,
            "metrics": {"predict_time": 2.5} if done else {},
            "urls": {
                "get": f"{base}/v1/predictions/{prediction.id}",
                "cancel": f"{base}/v1/predictions/{prediction.id}/cancel",
            },
        }


def _prefer_wait(header: str | None) -> float | None:
    """Seconds asked for by ``Prefer: wait[=N]`` (bare ``wait`` means Replicate's 60)."""
    if header is None:
        return None
    match = _PREFER_WAIT.search(header)
    if match is None:
        return None
    return float(match.group(1)) if match.group(1) else 60.0
