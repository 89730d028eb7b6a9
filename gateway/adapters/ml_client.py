"""The gateway's client of the ML service (``../shared/API.md``, "ML service")."""

from __future__ import annotations

from typing import Any, Protocol

import httpx

from gateway.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable

HEALTH_TIMEOUT = 2.0


class MLClient(Protocol):
    async def health(self) -> dict[str, Any]:
        """The ML service's ``/ml/health`` body; raise an ``UpstreamError`` when unreachable."""
        ...


class HttpMLClient:
    """Over the gateway's long-lived client for the ML service (auth header already set)."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def health(self) -> dict[str, Any]:
        try:
            response = await self._http.get("/ml/health", timeout=HEALTH_TIMEOUT)
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout("ML service timed out", upstream="ml_service") from exc
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(
                f"ML service unreachable: {exc}", upstream="ml_service"
            ) from exc
        if response.status_code != 200:
            raise UpstreamError(
                f"ML service answered {response.status_code}", upstream="ml_service"
            )
        body: dict[str, Any] = response.json()
        return body
