"""The gateway's client of the ML service (``../shared/API.md``, "ML service")."""

from __future__ import annotations

import secrets
from typing import Any, Protocol, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from gateway.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from shared.search_space import SearchSpace
from shared.wire.ml import (
    DEADLINE_HEADER,
    BestResponse,
    HealthResponse,
    ObservationIn,
    RewardScoreResponse,
    RewardStatusResponse,
    RewardTrainResponse,
    Suggestion,
)

HEALTH_TIMEOUT = 2.0
UPSTREAM = "ml_service"

Model = TypeVar("Model", bound=BaseModel)


class MLClient(Protocol):
    async def health(self) -> HealthResponse:
        """``/ml/health``; raise an ``UpstreamError`` when unreachable."""
        ...

    async def suggest(
        self, apis: list[str], count: dict[str, int] | None = None
    ) -> list[Suggestion]: ...

    async def update(self, observations: list[ObservationIn], *, timeout: float) -> None: ...

    async def best(self) -> BestResponse: ...

    async def reward_train(self, *, timeout: float = 600.0) -> RewardTrainResponse: ...

    async def reward_score(self, candidates: list[dict[str, Any]]) -> RewardScoreResponse: ...

    async def reward_status(self) -> RewardStatusResponse: ...


class HttpMLClient:
    """Over the gateway's long-lived client for the ML service (auth header already set)."""

    def __init__(self, http: httpx.AsyncClient, *, study: str = "default") -> None:
        self._http = http
        self._study = study

    async def _call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        try:
            response = await self._http.request(method, path, **kw)
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout("ML service timed out", upstream=UPSTREAM) from exc
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(f"ML service unreachable: {exc}", upstream=UPSTREAM) from exc
        if response.status_code != 200:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:200]
            raise UpstreamError(
                f"ML service answered {response.status_code}: {message}",
                upstream=UPSTREAM,
                details={"status": response.status_code},
            )
        body: dict[str, Any] = response.json()
        return body

    async def _answer(self, model: type[Model], method: str, path: str, **kw: Any) -> Model:
        """``_call``'s body as ``model``; a body that is not one is a malformed answer."""
        body = await self._call(method, path, **kw)
        try:
            return model.model_validate(body)
        except ValidationError as exc:
            raise UpstreamError(
                f"ML service answered {path} with a malformed body: "
                f"{exc.error_count()} error(s), first: {exc.errors()[0]['msg']}",
                upstream=UPSTREAM,
            ) from exc

    async def health(self) -> HealthResponse:
        return await self._answer(HealthResponse, "GET", "/ml/health", timeout=HEALTH_TIMEOUT)

    async def suggest(
        self, apis: list[str], count: dict[str, int] | None = None
    ) -> list[Suggestion]:
        """One suggestion per API, or ``count[api]`` distinct ones (one batch), grouped by API."""
        # The ML service drops the GP work still queued when this deadline passes.
        wait = self._http.timeout.read or 60.0
        request: dict[str, Any] = {"apis": apis, "study": self._study}
        if count:
            request["count"] = count
        body = await self._call(
            "POST",
            "/ml/suggest_parameters",
            json=request,
            headers={DEADLINE_HEADER: f"{wait:.3f}"},
        )
        return [Suggestion.model_validate(s) for s in body["suggestions"]]

    async def update(self, observations: list[ObservationIn], *, timeout: float) -> None:
        payload = {
            "study": self._study,
            "observations": [o.model_dump(exclude_none=True) for o in observations],
        }
        await self._call("POST", "/ml/update_model", json=payload, timeout=timeout)

    async def best(self) -> BestResponse:
        return await self._answer(BestResponse, "GET", "/ml/best", params={"study": self._study})

    async def reward_train(self, *, timeout: float = 600.0) -> RewardTrainResponse:
        return await self._answer(
            RewardTrainResponse,
            "POST",
            "/ml/reward/train",
            json={"study": self._study},
            timeout=timeout,
        )

    async def reward_score(self, candidates: list[dict[str, Any]]) -> RewardScoreResponse:
        return await self._answer(
            RewardScoreResponse,
            "POST",
            "/ml/reward/score",
            json={"study": self._study, "candidates": candidates},
            timeout=120.0,
        )

    async def reward_status(self) -> RewardStatusResponse:
        return await self._answer(
            RewardStatusResponse, "GET", "/ml/reward/status", params={"study": self._study}
        )


def fallback_suggestion(space: SearchSpace, api: str) -> Suggestion:
    """A uniformly random point when the ML service cannot be asked (``strategy: fallback``).

    Each call is independent (gateways share no sequence), so a space-filling sequence would
    give no more than one uniform draw per call does.
    """
    draw = secrets.SystemRandom()
    values: dict[str, float | int] = {}
    for p in space.parameters(api):
        value = p.low + draw.random() * (p.high - p.low)
        values[p.name] = round(value) if p.type == "int" else round(value, 4)
    return Suggestion(
        suggestion_id=f"fallback_{secrets.token_hex(8)}",
        api=api,
        strategy="fallback",
        parameters=values,
    )
