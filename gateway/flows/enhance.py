"""``POST /api/enhance``: production enhancement with everything learned so far.

The API with the higher predicted best rating, its best parameters (the ML service's posterior
best) and the current prompt. Once a reward model is trained, several candidates are rendered
(different seeds; fewer on paid APIs, ``ENHANCE_MAX_PAID_CANDIDATES``), scored by the reward
model, and the best is kept; otherwise one render. The answer says which API, parameters,
prompt version and predicted rating produced the image.

The upload checks, render requests, cost guard, reward scoring, stored objects and image rows
are the training flow's (``gateway.flows.training``).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from gateway.adapters.ml_client import MLClient, fallback_suggestion
from gateway.domain.arms import APIS
from gateway.domain.images import ValidatedImage
from gateway.errors import LatinaError, UpstreamError
from gateway.flows.limits import paid_calls, reserve_renders
from gateway.flows.training.candidates import ToScore, reward_scores
from gateway.flows.training.deps import TrainingDeps
from gateway.flows.training.records import all_or_nothing, original_row, rendered_row
from gateway.flows.training.rendering import (
    new_seed,
    render,
    render_request,
    within_cost_guard,
)
from gateway.flows.training.uploads import check_project, decode
from gateway.providers.base import RenderResult
from gateway.repositories.users import User
from shared.wire.gateway import EnhanceResponse, ImageRef

log = logging.getLogger("latina.enhance")


@dataclass(frozen=True)
class EnhancePolicy:
    candidates: int
    max_paid_candidates: int
    concurrency: int


async def _choice(ml: MLClient, deps: TrainingDeps) -> tuple[str, dict[str, Any], float | None]:
    """The API and parameters to use: the higher predicted best, else a space-filling guess."""
    try:
        best = (await ml.best()).best
    except UpstreamError as exc:
        log.warning("ML service unavailable, enhancing with fallback parameters: %s", exc.message)
        best = {}
    learned = [
        (api, found.parameters, found.predicted_rating)
        for api in APIS
        if (found := best.get(api)) is not None and found.parameters
    ]
    if not learned:
        api = APIS[0]
        return api, dict(fallback_suggestion(deps.space, api).parameters), None
    api, parameters, predicted = max(learned, key=lambda item: item[2] or 0.0)
    return api, dict(parameters), predicted


async def _reward_ready(ml: MLClient) -> bool:
    try:
        return (await ml.reward_status()).trained
    except UpstreamError:
        return False


async def enhance(
    deps: TrainingDeps,
    policy: EnhancePolicy,
    upload: bytes,
    project_id: str | None,
    user: User,
) -> EnhanceResponse:
    project = check_project(project_id)
    image = await decode(upload, max_bytes=deps.max_bytes, max_pixels=deps.max_pixels)
    async with deps.uows.read() as uow:
        prompt = await uow.prompts.current()
    if prompt is None:
        raise LatinaError("no current prompt version", code="no_prompt_version")
    api, parameters, predicted = await _choice(deps.ml, deps)
    provider = deps.providers[api]
    ranked = await _reward_ready(deps.ml)
    count = within_cost_guard(
        provider, policy.candidates if ranked else 1, policy.max_paid_candidates
    )
    await reserve_renders(deps.uows, user, paid_calls([(provider, count)]), deps.limits)
    gate = asyncio.Semaphore(policy.concurrency)

    async def render_one(seed: int) -> RenderResult | LatinaError:
        async with gate:
            return await render(provider, render_request(api, image, prompt, parameters, seed))

    results = await asyncio.gather(*(render_one(new_seed()) for _ in range(count)))
    rendered = [r for r in results if isinstance(r, RenderResult)]
    if not rendered:
        first = next(r for r in results if isinstance(r, LatinaError))
        raise UpstreamError(
            f"the {api} provider failed: {first.message}",
            upstream=provider.name,
            code="enhance_failed",
            details={"api": api, "error": first.to_body()["error"]},
        )
    chosen, uncertainty = rendered[0], None
    if ranked and len(rendered) > 1:
        chosen, predicted, uncertainty = await _rank(deps.ml, api, parameters, image, rendered)
    async with all_or_nothing(deps.store) as objects:
        original_key = await objects.original(deps.uploads_bucket, image)
        key = await objects.rendered(deps.enhanced_bucket, chosen)
        async with deps.uows() as uow:
            original_id = await uow.experiments.insert_image(
                original_row(project, deps.uploads_bucket, original_key, image, purpose="enhance"),
                None,
                user.id,
            )
            image_id = await uow.experiments.insert_image(
                rendered_row(
                    project,
                    deps.enhanced_bucket,
                    key,
                    chosen,
                    api=api,
                    parameters=parameters,
                    prompt_version=prompt.version,
                    predicted_rating=predicted,
                    purpose="enhance",
                ),
                original_id,
                user.id,
            )
    return EnhanceResponse(
        image_id=image_id,
        url=await deps.store.url(deps.enhanced_bucket, key, deps.url_ttl),
        original=ImageRef(
            image_id=original_id,
            url=await deps.store.url(deps.uploads_bucket, original_key, deps.url_ttl),
        ),
        project_id=project,
        api=api,
        provider=chosen.provider,
        parameters=parameters,
        prompt_version=prompt.version,
        predicted_rating=round(predicted, 3) if predicted is not None else None,
        uncertainty=round(uncertainty, 3) if uncertainty is not None else None,
        candidates=len(rendered),
        ranked_by="reward_model" if ranked and len(rendered) > 1 else "optimizer",
    )


async def _rank(
    ml: MLClient,
    api: str,
    parameters: dict[str, Any],
    image: ValidatedImage,
    rendered: list[RenderResult],
) -> tuple[RenderResult, float | None, float | None]:
    """The render the reward model rates best; the first when it cannot answer."""
    scores = await reward_scores(
        ml, image, [ToScore(str(i), api, parameters, r) for i, r in enumerate(rendered)]
    )
    if not scores:
        return rendered[0], None, None
    best = max(scores.values(), key=lambda s: s.predicted_rating)
    return rendered[int(best.id)], best.predicted_rating, best.uncertainty
