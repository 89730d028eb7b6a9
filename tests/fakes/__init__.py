"""Fake upstream APIs served over real HTTP on loopback (run them with ``tests.servers.serve``).

Each fake is a class whose attributes are its behaviour (change them between requests) and
whose ``requests`` list records what arrived, so a test can assert what the client sent.
Behaviour shared by every fake lives in ``FakeApi``:

* ``token``: the bearer token required on API routes (None accepts anything);
* ``throttle(route, times, retry_after, status)``: answer the next ``times`` requests to
  ``route`` with ``status`` (429 by default) and a ``Retry-After`` header;
* ``delay(route, seconds)``: hold every answer on ``route`` (to provoke client timeouts);
* ``seen(route)`` / ``count(route)``: the recorded requests to ``route``.

Routes are named ``"METHOD /template"``, e.g. ``"POST /generations"`` or
``"GET /v1/predictions/{id}"``; each fake's module lists its routes.
"""

from __future__ import annotations

import asyncio
import io
import json
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageOps
from starlette.requests import Request
from starlette.responses import JSONResponse, Response


@dataclass(frozen=True)
class Recorded:
    """One request as it arrived (recorded before any delay, throttle or auth check)."""

    route: str
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        """The body decoded as JSON."""
        return json.loads(self.body)


@dataclass
class _Throttle:
    times: int
    retry_after: str | None
    status: int


class FakeApi:
    """Recording, bearer check, throttling and delays for one fake API."""

    def __init__(self, token: str | None) -> None:
        self.token = token
        self.requests: list[Recorded] = []
        self.delays: dict[str, float] = {}
        self.throttles: dict[str, _Throttle] = {}

    def throttle(
        self, route: str, times: int = 1, retry_after: str | None = "1", status: int = 429
    ) -> None:
        """Refuse the next ``times`` requests to ``route`` (``Retry-After: retry_after``)."""
        self.throttles[route] = _Throttle(times, retry_after, status)

    def delay(self, route: str, seconds: float) -> None:
        """Hold every answer on ``route`` for ``seconds`` before handling it."""
        self.delays[route] = seconds

    def seen(self, route: str) -> list[Recorded]:
        """The requests recorded for ``route``, in arrival order."""
        return [r for r in self.requests if r.route == route]

    def count(self, route: str) -> int:
        """How many requests arrived for ``route`` (refused ones included)."""
        return len(self.seen(route))

    async def gate(self, request: Request, route: str, *, auth: bool = True) -> Response | None:
        """Record ``request``; an early answer (401, throttle) or None to carry on."""
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append(Recorded(route, request.method, request.url.path, headers, body))
        if route in self.delays:
            await asyncio.sleep(self.delays[route])
        wanted = f"Bearer {self.token}"
        if auth and self.token is not None and headers.get("authorization") != wanted:
            return self.error(401, "Invalid or missing API token")
        throttle = self.throttles.get(route)
        if throttle is not None and throttle.times > 0:
            throttle.times -= 1
            response = self.error(
                throttle.status, self.refusal(throttle.status, throttle.retry_after)
            )
            if throttle.retry_after is not None:
                response.headers["Retry-After"] = throttle.retry_after
            return response
        return None

    def refusal(self, status: int, retry_after: str | None) -> str:
        """The message of a throttled answer."""
        return "Too many requests, slow down" if status == 429 else "Service unavailable"

    def error(self, status: int, message: str) -> Response:
        """The upstream's error body; each fake speaks its API's format."""
        return JSONResponse({"error": message}, status_code=status)


def derived_image(source: bytes, size: tuple[int, int] | None = None) -> bytes:
    """What the fakes "generate" from ``source``: mirrored, inverted, resized, as PNG.

    Deterministic, so a test can compute the expected bytes from the image it sent.
    """
    with Image.open(io.BytesIO(source)) as original:
        image = original.convert("RGB")
    if size is not None and image.size != size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    out = io.BytesIO()
    ImageOps.invert(ImageOps.mirror(image)).save(out, "PNG")
    return out.getvalue()


class FakeClock:
    """A monotonic clock that only moves when ``sleep`` is awaited; records every wait.

    Pass ``clock=fake`` and ``sleep=fake.sleep`` to a provider: deadlines and backoff run
    instantly, and ``sleeps`` shows what the provider asked to wait.
    """

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)
