"""Rendering: suggestions (or the fallback's), render requests, the paid-call guard, and the
A/B arms rendered side by side."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.adapters.ml_client import MLClient, fallback_suggestion
from gateway.domain.arms import AB_ARMS
from gateway.domain.images import ValidatedImage
from gateway.errors import LatinaError, UpstreamError
from gateway.flows.training.deps import TrainingDeps
from gateway.providers.base import ImageProvider, RenderRequest, RenderResult
from gateway.repositories.prompts import PromptVersion
from shared.search_space import SearchSpace
from shared.wire.ml import Suggestion

log = logging.getLogger("latina.training")


@dataclass(frozen=True)
class Pick:
    """One shown option: which API and suggestion, what rendering gave, what the model said."""

    option: str
    api: str
    suggestion: Suggestion
    result: RenderResult | LatinaError
    predicted: float | None = None
    uncertainty: float | None = None


def new_seed() -> int:
    """One seed per upload: the renders of one upload differ by their parameters only."""
    return secrets.randbelow(2**31)


def render_request(
    api: str,
    image: ValidatedImage,
    prompt: PromptVersion,
    parameters: Mapping[str, Any],
    seed: int,
) -> RenderRequest:
    """What an image provider is asked to render for this upload."""
    return RenderRequest(
        api=api,  # type: ignore[arg-type]
        image=image.data,
        content_type=image.content_type,
        width=image.width,
        height=image.height,
        prompt=prompt.prompt,
        negative_prompt=prompt.negative_prompt,
        parameters=dict(parameters),
        seed=seed,
    )


def within_cost_guard(provider: ImageProvider, wanted: int, max_paid: int) -> int:
    """How many renders to ask of ``provider``: a paid API renders at most ``max_paid``."""
    return wanted if provider.name == "local" else min(wanted, max_paid)


async def render(provider: ImageProvider, request: RenderRequest) -> RenderResult | LatinaError:
    """The rendered image, or the error that stopped it (one failed render is not fatal)."""
    try:
        return await provider.render(request)
    except LatinaError as exc:
        log.warning("render failed", extra={"api": request.api, "code": exc.code})
        return exc


async def suggestions(
    ml: MLClient, space: SearchSpace, count: dict[str, int] | None = None
) -> list[Suggestion]:
    """One suggestion per arm's API (``count[api]`` with ``count``), grouped by API; the
    fallback's when the ML service cannot answer."""
    apis: list[str] = [api for _, api in AB_ARMS]
    try:
        return await ml.suggest(apis, count=count)
    except UpstreamError as exc:
        log.warning("ML service unavailable, using fallback parameters: %s", exc.message)
        wanted = count or dict.fromkeys(apis, 1)
        return [fallback_suggestion(space, api) for api in apis for _ in range(wanted[api])]


async def ab_picks(deps: TrainingDeps, image: ValidatedImage, prompt: PromptVersion) -> list[Pick]:
    """Phase 1: one option per arm, both rendered at once."""
    suggested = {s.api: s for s in await suggestions(deps.ml, deps.space)}
    seed = new_seed()
    results = await asyncio.gather(
        *(
            render(
                deps.providers[api],
                render_request(api, image, prompt, suggested[api].parameters, seed),
            )
            for _, api in AB_ARMS
        )
    )
    return [
        Pick(option, api, suggested[api], result)
        for (option, api), result in zip(AB_ARMS, results, strict=True)
    ]
