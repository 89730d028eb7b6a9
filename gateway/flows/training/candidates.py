"""Active learning (phase 2): K candidates rendered over both APIs, scored by the reward model,
two of them shown (``gateway.domain.selection``); and the reward-model scoring that
``POST /api/enhance`` uses to keep its best render."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.adapters.ml_client import MLClient
from gateway.domain.arms import AB_ARMS, OPTIONS
from gateway.domain.images import ValidatedImage, downscaled_jpeg
from gateway.domain.selection import choose_two
from gateway.errors import LatinaError, UpstreamError
from gateway.flows.training.deps import ActivePolicy, TrainingDeps
from gateway.flows.training.rendering import (
    Pick,
    new_seed,
    render,
    render_request,
    suggestions,
    within_cost_guard,
)
from gateway.providers.base import ImageProvider, RenderResult
from gateway.repositories.prompts import PromptVersion
from shared.wire.ml import MAX_SUGGESTIONS_PER_API, RewardScore, Suggestion

log = logging.getLogger("latina.training")


@dataclass(frozen=True)
class Candidate:
    api: str
    suggestion: Suggestion
    result: RenderResult | LatinaError
    predicted: float | None = None
    uncertainty: float | None = None
    shown_as: str | None = None

    @property
    def rendered(self) -> bool:
        return isinstance(self.result, RenderResult)


@dataclass(frozen=True)
class ToScore:
    """One render for the reward model, under the id its score comes back with."""

    id: str
    api: str
    parameters: Mapping[str, Any]
    result: RenderResult


async def reward_scores(
    ml: MLClient, image: ValidatedImage, renders: Sequence[ToScore]
) -> dict[str, RewardScore] | None:
    """The reward model's score of each render by id (each image and the original downscaled,
    off the event loop); None when the reward model cannot answer."""
    original = base64.b64encode(await asyncio.to_thread(downscaled_jpeg, image.data)).decode()
    payload = []
    for r in renders:
        small = await asyncio.to_thread(downscaled_jpeg, r.result.image)
        payload.append(
            {
                "id": r.id,
                "api": r.api,
                "parameters": dict(r.parameters),
                "image_b64": base64.b64encode(small).decode(),
                "original_b64": original,
            }
        )
    try:
        return {s.id: s for s in (await ml.reward_score(payload)).scores}
    except UpstreamError as exc:
        log.warning("reward model unavailable: %s", exc.message)
        return None


def candidates_per_api(
    providers: Mapping[str, ImageProvider], active: ActivePolicy
) -> dict[str, int]:
    """K split over the APIs, each capped by the ML service's batch size and the cost guard."""
    apis: list[str] = [api for _, api in AB_ARMS]
    return {
        api: min(
            within_cost_guard(
                providers[api], max(1, active.candidates // len(apis)), active.max_paid
            ),
            MAX_SUGGESTIONS_PER_API,
        )
        for api in apis
    }


async def _candidates(
    deps: TrainingDeps, image: ValidatedImage, prompt: PromptVersion
) -> list[Candidate]:
    """K candidates over both APIs (one batch of distinct suggestions per API), rendered under
    a concurrency limit per API, with at most ``max_paid`` per paid API, then scored."""
    # one batch per API: distinct points from one computation, not one round trip each
    suggested = await suggestions(
        deps.ml, deps.space, candidates_per_api(deps.providers, deps.active)
    )
    # the limit is each image API's (its rate limits): the two APIs render side by side
    gates: dict[str, asyncio.Semaphore] = {
        api: asyncio.Semaphore(deps.active.concurrency) for _, api in AB_ARMS
    }
    seed = new_seed()

    async def render_one(s: Suggestion) -> RenderResult | LatinaError:
        async with gates[s.api]:
            request = render_request(s.api, image, prompt, s.parameters, seed)
            return await render(deps.providers[s.api], request)

    results = await asyncio.gather(*(render_one(s) for s in suggested))
    candidates = [Candidate(s.api, s, r) for s, r in zip(suggested, results, strict=True)]
    return await _scored(deps.ml, image, candidates)


async def _scored(
    ml: MLClient, image: ValidatedImage, candidates: list[Candidate]
) -> list[Candidate]:
    renders = [
        ToScore(str(i), c.api, c.suggestion.parameters, c.result)
        for i, c in enumerate(candidates)
        if isinstance(c.result, RenderResult)
    ]
    if not renders:
        return candidates
    scores = await reward_scores(ml, image, renders)
    if scores is None:  # shown unranked
        return candidates
    return [
        dataclasses.replace(
            c,
            predicted=scores[str(i)].predicted_rating,
            uncertainty=scores[str(i)].uncertainty,
        )
        if str(i) in scores
        else c
        for i, c in enumerate(candidates)
    ]


async def active_picks(
    deps: TrainingDeps, image: ValidatedImage, prompt: PromptVersion
) -> tuple[list[Pick], list[Candidate]]:
    """The two shown options, and every candidate marked with the option it is shown as."""
    candidates = await _candidates(deps, image, prompt)
    shown = choose_two(candidates, deps.active.selection)
    if not shown:
        failed = [c for c in candidates if isinstance(c.result, LatinaError)]
        raise UpstreamError(
            "every candidate failed to render",
            upstream="image_providers",
            code="all_providers_failed",
            details={"errors": [c.result.to_body()["error"] for c in failed[:4]]},  # type: ignore[union-attr]
        )
    picks = [
        Pick(option, c.api, c.suggestion, c.result, c.predicted, c.uncertainty)
        for option, c in zip(OPTIONS, shown, strict=False)
    ]
    marked = [
        dataclasses.replace(
            c, shown_as=next((p.option for p in picks if p.suggestion is c.suggestion), None)
        )
        for c in candidates
    ]
    return picks, marked
