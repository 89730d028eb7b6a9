"""(Over 300 lines: its split by concern - upload checks, rendering, recording - comes next.)

``POST /api/enhance/train``: one upload, two variants rendered at once, one experiment.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.adapters.ml_client import MLClient, fallback_suggestion
from gateway.domain.arms import AB_ARMS, OPTIONS
from gateway.domain.images import ValidatedImage, decode_upload, downscaled_jpeg
from gateway.domain.schedule import phase_1_complete
from gateway.domain.selection import Selection, choose_two
from gateway.errors import InvalidInput, LatinaError, UnsupportedMediaType, UpstreamError
from gateway.flows.unit_of_work import UnitOfWorkFactory
from gateway.providers.base import ImageProvider, RenderRequest, RenderResult
from gateway.repositories import ab_tests, prompts
from gateway.repositories import experiments as repo
from gateway.repositories.users import User
from shared.search_space import SearchSpace
from shared.storage import ObjectStore, new_object_key
from shared.wire.ml import MAX_SUGGESTIONS_PER_API, Suggestion

log = logging.getLogger("latina.training")

_PROJECT_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


@dataclass(frozen=True)
class ActivePolicy:
    """Active learning (phase 2): how many candidates, the cost guard, what to show."""

    candidates: int = 10
    max_paid: int = 2
    concurrency: int = 2
    selection: Selection = "best_and_uncertain"
    phase_1_target: int = 50


@dataclass(frozen=True)
class TrainingDeps:
    uows: UnitOfWorkFactory
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
    active: ActivePolicy = ActivePolicy()


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


async def _suggestions(deps: TrainingDeps, count: dict[str, int] | None = None) -> list[Suggestion]:
    """One suggestion per arm's API (``count[api]`` with ``count``), grouped by API; the
    fallback's when the ML service cannot answer."""
    apis: list[str] = [api for _, api in AB_ARMS]
    try:
        return await deps.ml.suggest(apis, count=count)
    except UpstreamError as exc:
        log.warning("ML service unavailable, using fallback parameters: %s", exc.message)
        wanted = count or dict.fromkeys(apis, 1)
        return [fallback_suggestion(deps.space, api) for api in apis for _ in range(wanted[api])]


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
    if mode not in (None, "", "ab", "active"):
        raise InvalidInput(
            "mode must be 'ab' (one option per API) or 'active' (K candidates, the reward"
            " model shows two)",
            code="unsupported_mode",
        )
    image = await asyncio.to_thread(
        decode_upload, upload, max_bytes=deps.max_bytes, max_pixels=deps.max_pixels
    )
    check_declared_type(image.content_type, filename, declared_type)
    chosen_mode = await choose_mode(deps, mode or None)
    experiment_id = new_experiment_id()
    prompt, claim = await _choose_prompt(deps, experiment_id)
    try:
        return await _train(deps, image, project, user, experiment_id, prompt, claim, chosen_mode)
    except BaseException:
        if claim is not None:  # no experiment came of it: the A/B slot goes to the next upload
            async with deps.uows() as uow:
                await uow.ab_tests.release_slot(experiment_id)
        raise


async def _choose_prompt(
    deps: TrainingDeps, experiment_id: str
) -> tuple[prompts.PromptVersion, ab_tests.SlotClaim | None]:
    """The current version, or the version an A/B test's next slot fixes for this upload."""
    async with deps.uows() as uow:
        claim = await uow.ab_tests.claim_slot(experiment_id, deps.ab_slot_ttl)
        if claim is not None:
            return claim.version, claim
        prompt = await uow.prompts.current()
    if prompt is None:
        raise LatinaError("no current prompt version", code="no_prompt_version")
    return prompt, None


@dataclass(frozen=True)
class Pick:
    """One shown option: which API and suggestion, what rendering gave, what the model said."""

    option: str
    api: str
    suggestion: Suggestion
    result: RenderResult | LatinaError
    predicted: float | None = None
    uncertainty: float | None = None


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


def _request(
    api: str, image: ValidatedImage, prompt: prompts.PromptVersion, s: Suggestion, seed: int
) -> RenderRequest:
    return RenderRequest(
        api=api,  # type: ignore[arg-type]
        image=image.data,
        content_type=image.content_type,
        width=image.width,
        height=image.height,
        prompt=prompt.prompt,
        negative_prompt=prompt.negative_prompt,
        parameters=dict(s.parameters),
        seed=seed,
    )


async def _ab_picks(
    deps: TrainingDeps, image: ValidatedImage, prompt: prompts.PromptVersion
) -> list[Pick]:
    suggestions = {s.api: s for s in await _suggestions(deps)}
    seed = secrets.randbelow(2**31)
    results = await asyncio.gather(
        *(
            _render(deps.providers[api], _request(api, image, prompt, suggestions[api], seed))
            for _, api in AB_ARMS
        )
    )
    return [
        Pick(option, api, suggestions[api], result)
        for (option, api), result in zip(AB_ARMS, results, strict=True)
    ]


async def _active_candidates(
    deps: TrainingDeps, image: ValidatedImage, prompt: prompts.PromptVersion
) -> list[Candidate]:
    """K candidates over both APIs (one batch of distinct suggestions per API), rendered under
    a concurrency limit per API, with at most ``max_paid`` per paid API, then scored."""
    active = deps.active
    apis: list[str] = [api for _, api in AB_ARMS]
    per_api = {
        api: min(
            max(1, active.candidates // len(apis)),
            MAX_SUGGESTIONS_PER_API,
            active.max_paid if deps.providers[api].name != "local" else active.candidates,
        )
        for api in apis
    }
    # one batch per API: distinct points from one computation, not one round trip each
    suggestions = await _suggestions(deps, per_api)
    # the limit is each image API's (its rate limits): the two APIs render side by side
    gates = {api: asyncio.Semaphore(active.concurrency) for api in apis}
    seed = secrets.randbelow(2**31)

    async def render(s: Suggestion) -> RenderResult | LatinaError:
        async with gates[s.api]:
            return await _render(deps.providers[s.api], _request(s.api, image, prompt, s, seed))

    results = await asyncio.gather(*(render(s) for s in suggestions))
    candidates = [Candidate(s.api, s, r) for s, r in zip(suggestions, results, strict=True)]
    return await _score(deps, image, candidates)


async def _score(
    deps: TrainingDeps, image: ValidatedImage, candidates: list[Candidate]
) -> list[Candidate]:
    scorable = [c for c in candidates if isinstance(c.result, RenderResult)]
    if not scorable:
        return candidates
    original = base64.b64encode(await asyncio.to_thread(downscaled_jpeg, image.data)).decode()
    payload = []
    for index, c in enumerate(candidates):
        if isinstance(c.result, RenderResult):
            small = await asyncio.to_thread(downscaled_jpeg, c.result.image)
            payload.append(
                {
                    "id": str(index),
                    "api": c.api,
                    "parameters": dict(c.suggestion.parameters),
                    "image_b64": base64.b64encode(small).decode(),
                    "original_b64": original,
                }
            )
    try:
        scores = {s["id"]: s for s in (await deps.ml.reward_score(payload))["scores"]}
    except UpstreamError as exc:
        log.warning("reward model unavailable: candidates shown unranked: %s", exc.message)
        return candidates
    return [
        dataclasses.replace(
            c,
            predicted=scores[str(i)]["predicted_rating"],
            uncertainty=scores[str(i)]["uncertainty"],
        )
        if str(i) in scores
        else c
        for i, c in enumerate(candidates)
    ]


async def _active_picks(
    deps: TrainingDeps, image: ValidatedImage, prompt: prompts.PromptVersion
) -> tuple[list[Pick], list[Candidate]]:
    candidates = await _active_candidates(deps, image, prompt)
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


async def choose_mode(deps: TrainingDeps, mode: str | None) -> str:
    """``ab`` or ``active``; unset means active once phase 1 is over and a model exists."""
    if mode in ("ab", "active"):
        return mode
    async with deps.uows.read() as uow:
        samples = await uow.training.samples_rated()
    if not phase_1_complete(samples, deps.active.phase_1_target):
        return "ab"
    try:
        return "active" if (await deps.ml.reward_status()).get("trained") else "ab"
    except UpstreamError:
        return "ab"


async def _train(
    deps: TrainingDeps,
    image: ValidatedImage,
    project: str,
    user: User,
    experiment_id: str,
    prompt: prompts.PromptVersion,
    claim: ab_tests.SlotClaim | None,
    mode: str,
) -> dict[str, Any]:
    candidates: list[Candidate] = []
    if mode == "active":
        picks, candidates = await _active_picks(deps, image, prompt)
    else:
        picks = await _ab_picks(deps, image, prompt)
    if all(isinstance(p.result, LatinaError) for p in picks):
        raise UpstreamError(
            "both image providers failed",
            upstream="image_providers",
            code="all_providers_failed",
            details={
                p.api: p.result.to_body()["error"]
                for p in picks
                if isinstance(p.result, LatinaError)
            },
        )
    written: list[tuple[str, str]] = []
    try:
        original_key = new_object_key("originals", image.extension)
        await deps.store.put(deps.uploads_bucket, original_key, image.data, image.content_type)
        written.append((deps.uploads_bucket, original_key))
        rendered: dict[str, repo.RenderedOption] = {}
        for pick in picks:
            result = pick.result
            if isinstance(result, LatinaError):
                continue
            key = new_object_key("enhanced", _EXTENSIONS.get(result.content_type, "png"))
            await deps.store.put(deps.enhanced_bucket, key, result.image, result.content_type)
            written.append((deps.enhanced_bucket, key))
            rendered[pick.option] = repo.RenderedOption(
                option=pick.option,
                api=pick.api,
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
                parameters=dict(pick.suggestion.parameters),
                suggestion_id=pick.suggestion.suggestion_id,
                strategy=pick.suggestion.strategy,
            )
        image_ids: dict[str, int] = {}
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
                    {"format": image.format},
                ),
                None,
                user.id,
            )
            await uow.experiments.insert_experiment(
                experiment_id, project, mode, original_id, prompt.id, user.id
            )
            for option, chosen in rendered.items():
                image_ids[option] = await uow.experiments.insert_image(
                    chosen.image, original_id, user.id
                )
                await uow.experiments.insert_option(
                    experiment_id, image_ids[option], chosen, prompt.id
                )
            for c in candidates:
                await uow.experiments.insert_candidate(
                    experiment_id,
                    api=c.api,
                    parameters=dict(c.suggestion.parameters),
                    suggestion_id=c.suggestion.suggestion_id,
                    predicted=c.predicted,
                    uncertainty=c.uncertainty,
                    shown_as=c.shown_as,
                    error=c.result.code if isinstance(c.result, LatinaError) else None,
                )
    except BaseException:
        # nothing half-written: objects stored for a failed experiment are removed again
        for bucket, key in written:
            try:
                await deps.store.delete(bucket, key)
            except LatinaError:
                log.warning("could not remove orphan object", extra={"key": key})
        raise
    options = []
    for pick in picks:
        entry: dict[str, Any] = {
            "option": pick.option,
            "api": pick.api,
            "prompt_version": prompt.version,
            "parameters": pick.suggestion.parameters,
            "strategy": pick.suggestion.strategy,
        }
        if mode == "active":
            entry["predicted_rating"] = pick.predicted
            entry["uncertainty"] = pick.uncertainty
        if isinstance(pick.result, LatinaError):
            entry["provider"] = deps.providers[pick.api].name
            entry["error"] = pick.result.to_body()["error"]
        else:
            chosen = rendered[pick.option]
            entry["image_id"] = image_ids[pick.option]
            entry["provider"] = pick.result.provider
            entry["url"] = await deps.store.url(
                deps.enhanced_bucket, chosen.image.key, deps.url_ttl
            )
        options.append(entry)
    body: dict[str, Any] = {
        "experiment_id": experiment_id,
        "project_id": project,
        "mode": mode,
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
    if mode == "active":
        body["candidates"] = len(candidates)
    return body
