"""``POST /api/enhance/train``: one upload, two variants rendered at once, one experiment."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from gateway.adapters.ml_client import MLClient, fallback_suggestion
from gateway.errors import InvalidInput, LatinaError, UnsupportedMediaType, UpstreamError
from gateway.images import ValidatedImage, decode_upload
from gateway.providers.base import ImageProvider, RenderRequest, RenderResult
from gateway.repositories import ab_tests, prompts
from gateway.repositories import experiments as repo
from gateway.repositories.users import User
from shared.search_space import SearchSpace
from shared.storage import ObjectStore, new_object_key
from shared.wire.ml import Suggestion

log = logging.getLogger("latina.training")

ARMS: tuple[tuple[str, str], ...] = (("A", "leonardo"), ("B", "stable_diffusion"))
_PROJECT_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


@dataclass(frozen=True)
class TrainingDeps:
    pool: asyncpg.Pool[Any]
    store: ObjectStore
    ml: MLClient
    providers: Mapping[str, ImageProvider]  # by api
    space: SearchSpace
    uploads_bucket: str
    enhanced_bucket: str
    max_bytes: int
    max_pixels: int
    url_ttl: int
    ab_slot_ttl: float = 3600.0


def new_experiment_id() -> str:
    # time-ordered prefix (ms, base 36) then randomness: sortable and unguessable
    return f"exp_{_base36(int(time.time() * 1000))}{secrets.token_hex(8)}"


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = digits[r] + out
    return out or "0"


def check_project(project_id: str | None) -> str:
    project = project_id or "default"
    if not _PROJECT_RE.match(project):
        raise InvalidInput(
            "project_id must be 1-64 letters, digits, '.', '_' or '-'", code="invalid_project_id"
        )
    return project


_NAMED_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
}


def check_declared_type(actual: str, filename: str | None, declared: str | None) -> None:
    """A file whose name or declared type says one image format but whose bytes are another is
    refused: the client is confused about what it sends (the bytes decide, never the name)."""
    claims = {
        _NAMED_TYPES.get("." + (filename or "").rsplit(".", 1)[-1].lower())
        if filename and "." in filename
        else None,
        declared if declared in _EXTENSIONS else None,
    } - {None}
    if claims and claims != {actual}:
        raise UnsupportedMediaType(
            f"the file is {actual} but was sent as {', '.join(sorted(c for c in claims if c))}",
            code="image_type_mismatch",
            details={"actual": actual, "filename": filename, "declared": declared},
        )


async def _suggestions(deps: TrainingDeps) -> dict[str, Suggestion]:
    apis = [api for _, api in ARMS]
    try:
        return {s.api: s for s in await deps.ml.suggest(apis)}
    except UpstreamError as exc:
        log.warning("ML service unavailable, using fallback parameters: %s", exc.message)
        return {api: fallback_suggestion(deps.space, api) for api in apis}


async def _render(provider: ImageProvider, request: RenderRequest) -> RenderResult | LatinaError:
    try:
        return await provider.render(request)
    except LatinaError as exc:
        log.warning("render failed", extra={"api": request.api, "code": exc.code})
        return exc


async def train(
    deps: TrainingDeps,
    upload: bytes,
    project_id: str | None,
    mode: str | None,
    user: User,
    *,
    filename: str | None = None,
    declared_type: str | None = None,
) -> dict[str, Any]:
    """Validate and store the upload, render both arms concurrently, record the experiment.

    One arm failing still records the experiment (its option carries ``error``); both failing
    raises ``UpstreamError`` and leaves nothing behind.
    """
    project = check_project(project_id)
    if mode not in (None, "", "ab"):
        raise InvalidInput(
            "mode must be 'ab' (active learning arrives with the reward model)",
            code="unsupported_mode",
        )
    image = await asyncio.to_thread(
        decode_upload, upload, max_bytes=deps.max_bytes, max_pixels=deps.max_pixels
    )
    check_declared_type(image.content_type, filename, declared_type)
    experiment_id = new_experiment_id()
    prompt, claim = await _choose_prompt(deps, experiment_id)
    try:
        return await _train(deps, image, project, user, experiment_id, prompt, claim)
    except BaseException:
        if claim is not None:  # no experiment came of it: the A/B slot goes to the next upload
            async with deps.pool.acquire() as conn:
                await ab_tests.release_slot(conn, experiment_id)
        raise


async def _choose_prompt(
    deps: TrainingDeps, experiment_id: str
) -> tuple[prompts.PromptVersion, ab_tests.SlotClaim | None]:
    """The current version, or the version an A/B test's next slot fixes for this upload."""
    async with deps.pool.acquire() as conn, conn.transaction():
        claim = await ab_tests.claim_slot(conn, experiment_id, deps.ab_slot_ttl)
        if claim is not None:
            return claim.version, claim
        prompt = await prompts.current(conn)
    if prompt is None:
        raise LatinaError("no current prompt version", code="no_prompt_version")
    return prompt, None


async def _train(
    deps: TrainingDeps,
    image: ValidatedImage,
    project: str,
    user: User,
    experiment_id: str,
    prompt: prompts.PromptVersion,
    claim: ab_tests.SlotClaim | None,
) -> dict[str, Any]:
    suggestions = await _suggestions(deps)
    seed = secrets.randbelow(2**31)
    requests = {
        api: RenderRequest(
            api=api,  # type: ignore[arg-type]
            image=image.data,
            content_type=image.content_type,
            width=image.width,
            height=image.height,
            prompt=prompt.prompt,
            negative_prompt=prompt.negative_prompt,
            parameters=dict(suggestions[api].parameters),
            seed=seed,
        )
        for _, api in ARMS
    }
    results = await asyncio.gather(
        *(_render(deps.providers[api], requests[api]) for _, api in ARMS)
    )
    if all(isinstance(r, LatinaError) for r in results):
        raise UpstreamError(
            "both image providers failed",
            upstream="image_providers",
            code="all_providers_failed",
            details={
                api: r.to_body()["error"]
                for (_, api), r in zip(ARMS, results, strict=True)
                if isinstance(r, LatinaError)
            },
        )
    written: list[tuple[str, str]] = []
    try:
        original_key = new_object_key("originals", image.extension)
        await deps.store.put(deps.uploads_bucket, original_key, image.data, image.content_type)
        written.append((deps.uploads_bucket, original_key))
        rendered: dict[str, repo.RenderedOption] = {}
        for (option, api), result in zip(ARMS, results, strict=True):
            if isinstance(result, LatinaError):
                continue
            key = new_object_key("enhanced", _EXTENSIONS.get(result.content_type, "png"))
            await deps.store.put(deps.enhanced_bucket, key, result.image, result.content_type)
            written.append((deps.enhanced_bucket, key))
            rendered[option] = repo.RenderedOption(
                option=option,
                api=api,
                provider=result.provider,
                image=repo.NewImage(
                    project,
                    "enhanced",
                    deps.enhanced_bucket,
                    key,
                    result.content_type,
                    len(result.image),
                    result.width,
                    result.height,
                    {"provider": result.metadata},
                ),
                parameters=dict(suggestions[api].parameters),
                suggestion_id=suggestions[api].suggestion_id,
                strategy=suggestions[api].strategy,
            )
        image_ids: dict[str, int] = {}
        async with deps.pool.acquire() as conn, conn.transaction():
            original_id = await repo.insert_image(
                conn,
                repo.NewImage(
                    project,
                    "original",
                    deps.uploads_bucket,
                    original_key,
                    image.content_type,
                    len(image.data),
                    image.width,
                    image.height,
                    {"format": image.format},
                ),
                None,
                user.id,
            )
            await repo.insert_experiment(
                conn, experiment_id, project, "ab", original_id, prompt.id, user.id
            )
            for option, chosen in rendered.items():
                image_ids[option] = await repo.insert_image(
                    conn, chosen.image, original_id, user.id
                )
                await repo.insert_option(conn, experiment_id, image_ids[option], chosen, prompt.id)
    except BaseException:
        # nothing half-written: objects stored for a failed experiment are removed again
        for bucket, key in written:
            try:
                await deps.store.delete(bucket, key)
            except LatinaError:
                log.warning("could not remove orphan object", extra={"key": key})
        raise
    options = []
    for (option, api), result in zip(ARMS, results, strict=True):
        entry: dict[str, Any] = {
            "option": option,
            "api": api,
            "prompt_version": prompt.version,
            "parameters": suggestions[api].parameters,
            "strategy": suggestions[api].strategy,
        }
        if isinstance(result, LatinaError):
            entry["provider"] = deps.providers[api].name
            entry["error"] = result.to_body()["error"]
        else:
            chosen = rendered[option]
            entry["image_id"] = image_ids[option]
            entry["provider"] = result.provider
            entry["url"] = await deps.store.url(
                deps.enhanced_bucket, chosen.image.key, deps.url_ttl
            )
        options.append(entry)
    return {
        "experiment_id": experiment_id,
        "project_id": project,
        "mode": "ab",
        "prompt_version": prompt.version,
        "ab_test": (
            {"id": claim.ab_test_id, "slot": claim.slot, "arm": claim.arm} if claim else None
        ),
        "original": {
            "image_id": original_id,
            "url": await deps.store.url(deps.uploads_bucket, original_key, deps.url_ttl),
        },
        "options": options,
    }
