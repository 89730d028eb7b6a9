"""``POST /api/enhance``: production enhancement with everything learned so far.

The API with the higher predicted best rating, its best parameters (the ML service's posterior
best) and the current prompt. Once a reward model is trained, several candidates are rendered
(different seeds; fewer on paid APIs, ``ENHANCE_MAX_PAID_CANDIDATES``), scored by the reward
model, and the best is kept; otherwise one render. The answer says which API, parameters,
prompt version and predicted rating produced the image.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
from dataclasses import dataclass
from typing import Any

from gateway.adapters.ml_client import MLClient, fallback_suggestion
from gateway.domain.arms import APIS
from gateway.domain.images import ValidatedImage, decode_upload, downscaled_jpeg
from gateway.errors import LatinaError, UpstreamError
from gateway.flows.training import TrainingDeps, check_project
from gateway.providers.base import RenderRequest, RenderResult
from gateway.repositories import experiments as repo
from gateway.repositories.users import User
from shared.storage import new_object_key

log = logging.getLogger("latina.enhance")
_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


@dataclass(frozen=True)
class EnhancePolicy:
    candidates: int
    max_paid_candidates: int
    concurrency: int


async def _choice(ml: MLClient, deps: TrainingDeps) -> tuple[str, dict[str, Any], float | None]:
    """The API and parameters to use: the higher predicted best, else a space-filling guess."""
    try:
        best = await ml.best()
    except UpstreamError as exc:
        log.warning("ML service unavailable, enhancing with fallback parameters: %s", exc.message)
        best = {}
    learned = [(api, best[api]) for api in APIS if best.get(api) and best[api].get("parameters")]
    if not learned:
        api = APIS[0]
        return api, dict(fallback_suggestion(deps.space, api).parameters), None
    api, found = max(learned, key=lambda item: item[1].get("predicted_rating") or 0.0)
    return api, dict(found["parameters"]), found.get("predicted_rating")


async def _reward_ready(ml: MLClient) -> bool:
    try:
        return bool((await ml.reward_status()).get("trained"))
    except UpstreamError:
        return False


async def enhance(
    deps: TrainingDeps,
    policy: EnhancePolicy,
    upload: bytes,
    project_id: str | None,
    user: User,
) -> dict[str, Any]:
    project = check_project(project_id)
    image: ValidatedImage = await asyncio.to_thread(
        decode_upload, upload, max_bytes=deps.max_bytes, max_pixels=deps.max_pixels
    )
    async with deps.uows.read() as uow:
        prompt = await uow.prompts.current()
    if prompt is None:
        raise LatinaError("no current prompt version", code="no_prompt_version")
    api, parameters, predicted = await _choice(deps.ml, deps)
    provider = deps.providers[api]
    ranked = await _reward_ready(deps.ml)
    count = policy.candidates if ranked else 1
    if provider.name != "local":
        count = min(count, policy.max_paid_candidates)  # the cost guard for paid APIs
    gate = asyncio.Semaphore(policy.concurrency)

    async def render(seed: int) -> RenderResult | LatinaError:
        async with gate:
            try:
                return await provider.render(
                    RenderRequest(
                        api=api,  # type: ignore[arg-type]
                        image=image.data,
                        content_type=image.content_type,
                        width=image.width,
                        height=image.height,
                        prompt=prompt.prompt,
                        negative_prompt=prompt.negative_prompt,
                        parameters=parameters,
                        seed=seed,
                    )
                )
            except LatinaError as exc:
                return exc

    results = await asyncio.gather(*(render(secrets.randbelow(2**31)) for _ in range(count)))
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
    original_key = new_object_key("originals", image.extension)
    key = new_object_key("enhanced", _EXTENSIONS.get(chosen.content_type, "png"))
    await deps.store.put(deps.uploads_bucket, original_key, image.data, image.content_type)
    await deps.store.put(deps.enhanced_bucket, key, chosen.image, chosen.content_type)
    async with deps.uows() as uow:
        original_id = await uow.experiments.insert_image(
            repo.NewImage(
                project,
                "original",
                deps.uploads_bucket,
                original_key,
                image.content_type,
                len(image.data),
                image.width,
                image.height,
                {"format": image.format, "purpose": "enhance"},
            ),
            None,
            user.id,
        )
        image_id = await uow.experiments.insert_image(
            repo.NewImage(
                project,
                "enhanced",
                deps.enhanced_bucket,
                key,
                chosen.content_type,
                len(chosen.image),
                chosen.width,
                chosen.height,
                {
                    "provider": chosen.metadata,
                    "api": api,
                    "parameters": parameters,
                    "prompt_version": prompt.version,
                    "predicted_rating": predicted,
                    "purpose": "enhance",
                },
            ),
            original_id,
            user.id,
        )
    return {
        "image_id": image_id,
        "url": await deps.store.url(deps.enhanced_bucket, key, deps.url_ttl),
        "original": {
            "image_id": original_id,
            "url": await deps.store.url(deps.uploads_bucket, original_key, deps.url_ttl),
        },
        "project_id": project,
        "api": api,
        "provider": chosen.provider,
        "parameters": parameters,
        "prompt_version": prompt.version,
        "predicted_rating": round(predicted, 3) if predicted is not None else None,
        "uncertainty": round(uncertainty, 3) if uncertainty is not None else None,
        "candidates": len(rendered),
        "ranked_by": "reward_model" if ranked and len(rendered) > 1 else "optimizer",
    }


async def _rank(
    ml: MLClient,
    api: str,
    parameters: dict[str, Any],
    image: ValidatedImage,
    rendered: list[RenderResult],
) -> tuple[RenderResult, float | None, float | None]:
    original = base64.b64encode(await asyncio.to_thread(downscaled_jpeg, image.data)).decode()
    candidates = []
    for index, result in enumerate(rendered):
        small = await asyncio.to_thread(downscaled_jpeg, result.image)
        candidates.append(
            {
                "id": str(index),
                "api": api,
                "parameters": parameters,
                "image_b64": base64.b64encode(small).decode(),
                "original_b64": original,
            }
        )
    try:
        scores = (await ml.reward_score(candidates))["scores"]
    except UpstreamError as exc:
        log.warning("reward model unavailable, keeping the first render: %s", exc.message)
        return rendered[0], None, None
    best = max(scores, key=lambda s: s["predicted_rating"])
    return rendered[int(best["id"])], best["predicted_rating"], best["uncertainty"]
