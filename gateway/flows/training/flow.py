"""``POST /api/enhance/train``: one upload, two variants rendered at once, one experiment.

The steps, each in its module of this package: the upload checks (``uploads``), the prompt
(the current version or an A/B test's slot), rendering the arms (``rendering``) or the active
learning candidates (``candidates``), storing and recording them (``records``), the answer
(``reply``).
"""

from __future__ import annotations

import secrets
import time

from gateway.domain.arms import AB_ARMS
from gateway.domain.images import ValidatedImage
from gateway.domain.schedule import phase_1_complete
from gateway.errors import LatinaError, UpstreamError
from gateway.flows.limits import paid_calls, reserve_renders
from gateway.flows.training.candidates import Candidate, active_picks, candidates_per_api
from gateway.flows.training.deps import TrainingDeps
from gateway.flows.training.records import (
    all_or_nothing,
    original_row,
    record_experiment,
    rendered_option,
    rendered_row,
)
from gateway.flows.training.rendering import ab_picks
from gateway.flows.training.reply import Recorded, training_reply
from gateway.flows.training.uploads import (
    check_declared_type,
    check_mode,
    check_project,
    decode,
)
from gateway.repositories.ab_tests import SlotClaim
from gateway.repositories.experiments import RenderedOption
from gateway.repositories.prompts import PromptVersion
from gateway.repositories.users import User
from shared.wire.gateway import TrainResponse


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


async def train(
    deps: TrainingDeps,
    upload: bytes,
    project_id: str | None,
    mode: str | None,
    user: User,
    *,
    filename: str | None = None,
    declared_type: str | None = None,
) -> TrainResponse:
    """Validate and store the upload, render both arms concurrently, record the experiment.

    One arm failing still records the experiment (its option carries ``error``); both failing
    raises ``UpstreamError`` and leaves nothing behind.
    """
    project = check_project(project_id)
    wanted_mode = check_mode(mode)
    image = await decode(upload, max_bytes=deps.max_bytes, max_pixels=deps.max_pixels)
    check_declared_type(image.content_type, filename, declared_type)
    chosen_mode = await choose_mode(deps, wanted_mode)
    if chosen_mode == "active":
        counts = candidates_per_api(deps.providers, deps.active)
        paid = paid_calls((deps.providers[api], n) for api, n in counts.items())
    else:
        paid = paid_calls((deps.providers[api], 1) for _, api in AB_ARMS)
    await reserve_renders(deps.uows, user, paid, deps.limits)
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
) -> tuple[PromptVersion, SlotClaim | None]:
    """The current version, or the version an A/B test's next slot fixes for this upload."""
    async with deps.uows() as uow:
        claim = await uow.ab_tests.claim_slot(experiment_id, deps.ab_slot_ttl)
        if claim is not None:
            return claim.version, claim
        prompt = await uow.prompts.current()
    if prompt is None:
        raise LatinaError("no current prompt version", code="no_prompt_version")
    return prompt, None


async def choose_mode(deps: TrainingDeps, mode: str | None) -> str:
    """``ab`` or ``active``; unset means active once phase 1 is over and a model exists."""
    if mode in ("ab", "active"):
        return mode
    async with deps.uows.read() as uow:
        samples = await uow.training.samples_rated()
    if not phase_1_complete(samples, deps.active.phase_1_target):
        return "ab"
    try:
        return "active" if (await deps.ml.reward_status()).trained else "ab"
    except UpstreamError:
        return "ab"


async def _train(
    deps: TrainingDeps,
    image: ValidatedImage,
    project: str,
    user: User,
    experiment_id: str,
    prompt: PromptVersion,
    claim: SlotClaim | None,
    mode: str,
) -> TrainResponse:
    candidates: list[Candidate] = []
    if mode == "active":
        picks, candidates = await active_picks(deps, image, prompt)
    else:
        picks = await ab_picks(deps, image, prompt)
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
    # No connection is held while the images are stored; the rows go in one transaction.
    async with all_or_nothing(deps.store) as objects:
        original_key = await objects.original(deps.uploads_bucket, image)
        rendered: dict[str, RenderedOption] = {}
        for pick in picks:
            if isinstance(pick.result, LatinaError):
                continue
            key = await objects.rendered(deps.enhanced_bucket, pick.result)
            row = rendered_row(project, deps.enhanced_bucket, key, pick.result)
            rendered[pick.option] = rendered_option(pick, pick.result, row)
        async with deps.uows() as uow:
            original_id, image_ids = await record_experiment(
                uow,
                experiment_id=experiment_id,
                project=project,
                mode=mode,
                prompt_version_id=prompt.id,
                user_id=user.id,
                original=original_row(project, deps.uploads_bucket, original_key, image),
                rendered=rendered,
                candidates=candidates,
            )
    recorded = Recorded(
        experiment_id,
        project,
        mode,
        original_key,
        original_id,
        rendered,
        image_ids,
        len(candidates),
    )
    return await training_reply(deps, recorded, picks, prompt, claim)
