"""``POST /api/train/rate``: record a sample, then teach the ML service."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from pydantic import ValidationError

from gateway.adapters.ml_client import MLClient
from gateway.adapters.prompt_export import PromptExporter
from gateway.domain.ratings import GivenRating, check_against, check_ratings
from gateway.domain.schedule import (
    CURRENT_WINDOW,
    current_best_rating,
    evolution_due,
    phase_1_complete,
    reward_retrain_due,
)
from gateway.errors import Conflict, Forbidden, NotFound, UpstreamError
from gateway.flows.evolution import (
    WAITING,
    decide_ab_test,
    on_sample,
    release_waiting,
    supersede_waiting,
)
from gateway.flows.prompts import export_after_change
from gateway.flows.unit_of_work import UnitOfWork, UnitOfWorkFactory
from gateway.repositories.experiments import ExperimentRow, OptionRow
from gateway.repositories.users import User
from shared.wire.gateway import (
    ABTestView,
    RatePromptEvolution,
    RateRequest,
    RateResponse,
    response_json,
)
from shared.wire.ml import ObservationIn

# How long an identical resubmission waits, beyond the delivery timeout, for the first
# submission's answer, and how often it looks.
ANSWER_GRACE_SECONDS = 5.0
ANSWER_POLL_SECONDS = 0.05

log = logging.getLogger("latina.rating")


@dataclass(frozen=True)
class RatingPolicy:
    phase_1_target: int
    delivery_timeout: float
    retry_delay: float
    evolution_every: int = 10
    reward_retrain_every: int = 25


async def record_ratings(
    uows: UnitOfWorkFactory,
    ml: MLClient,
    request: RateRequest,
    user: User,
    policy: RatingPolicy,
    exporter: PromptExporter | None = None,
    *,
    send_images: bool = False,
) -> RateResponse:
    """Store the ratings, the ML update (and, with ``send_images``, a job that sends the images
    for their features), any A/B decision and any evolution trigger in one transaction; then
    try to deliver the update at once. Identical resubmissions, concurrent or later, get the
    first answer's body (``_first_answer``)."""
    given = check_ratings(request.ratings)
    resubmitted: int | None = None  # the sample number, when this repeats a rating
    async with uows() as uow:
        experiment = await uow.experiments.lock_experiment(request.experiment_id)
        if experiment is None:
            raise NotFound(f"no experiment {request.experiment_id!r}", code="experiment_not_found")
        if experiment.created_by != user.id and not user.has_role("admin"):
            # one trainer cannot rate, and so steer the A/B test with, another's samples
            raise Forbidden(
                "only the trainer who uploaded this image (or an admin) can rate it",
                code="not_your_experiment",
            )
        options = await uow.experiments.options_of(experiment.id)
        check_against(given, {o.option: o.image_id for o in options})
        if experiment.sample_number is not None:
            stored = await uow.experiments.ratings_of(experiment.id)
            if {k: (v.rating, v.comments) for k, v in given.items()} != stored:
                raise Conflict(
                    "this experiment was already rated with other values",
                    code="already_rated",
                    details={"sample_number": experiment.sample_number},
                )
            resubmitted = experiment.sample_number
        else:
            sample, job_id, observations, decided, test_id = await _record(
                uow, experiment, options, given, user, policy, send_images=send_images
            )
    if resubmitted is not None:
        return await _first_answer(uows, experiment.id, resubmitted, policy)
    # No connection is held while the ML service is asked: a hanging ML service must not
    # use up the pool for every other endpoint.
    delivered = await _deliver(ml, observations, policy.delivery_timeout)
    async with uows() as uow:
        if delivered:
            await uow.jobs.forget_job(job_id)
        body = await _response(uow, sample, delivered, policy, decided or test_id)
        stored = await uow.experiments.keep_first_rate_response(experiment.id, response_json(body))
        if decided is not None and exporter is not None:
            await export_after_change(uow, exporter, ab_test_id=decided)
    return RateResponse.model_validate(stored)


async def _record(
    uow: UnitOfWork,
    experiment: ExperimentRow,
    options: list[OptionRow],
    given: dict[str, GivenRating],
    user: User,
    policy: RatingPolicy,
    *,
    send_images: bool,
) -> tuple[int, int, list[ObservationIn], int | None, int | None]:
    """The first rating of ``experiment``, inside the caller's transaction: the sample number,
    the ML update's job, its observations, the A/B test this sample decided and its test."""
    for option in options:
        rated = given[option.option]
        await uow.experiments.insert_rating(
            experiment.id, option, rated.rating, rated.comments, user.id
        )
    observations = [
        ObservationIn(
            observation_id=f"{experiment.id}:{o.option}",
            suggestion_id=o.suggestion_id,
            api=o.api,
            parameters=o.parameters,
            rating=given[o.option].rating,
            prompt_version=experiment.prompt_version,
        )
        for o in options
    ]
    job_id = await uow.jobs.enqueue_ml_update(
        experiment.id, observations, delay_seconds=policy.retry_delay
    )
    if send_images:  # the worker sends them (gateway.flows.pictures): nobody waits for that
        await uow.jobs.enqueue_ml_features(experiment.id, observations)
    decided: int | None = None
    test_id = await uow.ab_tests.test_of(experiment.id)
    if test_id is not None and await decide_ab_test(uow, test_id):
        decided = test_id
    # The rows every rating updates come last, one statement each: their locks are held
    # until the commit, and concurrent ratings queue on them.
    await uow.experiments.add_to_prompt_score(
        experiment.prompt_version_id, [given[o.option].rating for o in options]
    )
    sample = await uow.experiments.number_as_rated(experiment.id, user.id)
    status = await on_sample(uow, sample, experiment.id, policy.evolution_every)
    if reward_retrain_due(sample, policy.phase_1_target, policy.reward_retrain_every):
        await uow.jobs.enqueue_reward_training(sample)
    if decided is not None:
        if status == "triggered":
            await supersede_waiting(uow, sample)
        else:
            await release_waiting(uow)
    return sample, job_id, observations, decided, test_id


async def _first_answer(
    uows: UnitOfWorkFactory, experiment_id: str, sample: int, policy: RatingPolicy
) -> RateResponse:
    """The answer of the first submission of these ratings. While that one still delivers its
    ML update, its answer is not stored yet: wait for it (about the delivery timeout). If it
    never comes (the first request failed after its commit), this answer becomes the first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + policy.delivery_timeout + ANSWER_GRACE_SECONDS
    while True:
        async with uows.read() as uow:
            stored = await uow.experiments.rate_response_of(experiment_id)
        if stored is not None:
            try:
                return RateResponse.model_validate(stored)
            except ValidationError:  # stored by an older release in another shape
                log.warning("stored rate answer of %s recomputed", experiment_id)
                async with uows() as uow:
                    body = await _response(uow, sample, False, policy)
                    await uow.experiments.store_rate_response(experiment_id, response_json(body))
                return body
        if loop.time() >= deadline:
            break
        await asyncio.sleep(ANSWER_POLL_SECONDS)
    async with uows() as uow:
        body = await _response(uow, sample, False, policy)
        first = await uow.experiments.keep_first_rate_response(experiment_id, response_json(body))
    return RateResponse.model_validate(first)


async def _deliver(ml: MLClient, observations: list[ObservationIn], timeout: float) -> bool:
    try:
        await ml.update(observations, timeout=timeout)
    except UpstreamError as exc:
        log.warning("ml update kept for the worker: %s", exc.message)
        return False
    return True


async def _response(
    uow: UnitOfWork, sample: int, ml_updated: bool, policy: RatingPolicy, test_id: int | None = None
) -> RateResponse:
    """The rate response. ``ab_test`` is the test this sample belonged to (as it stands now:
    running, or decided by this or a concurrent sample), else the running test, else null."""
    means = await uow.experiments.api_means_over_last(CURRENT_WINDOW)
    triggered = evolution_due(sample, policy.evolution_every)
    round_status = await uow.evolution.round_status(sample) if triggered else None
    ab_test: ABTestView | None
    if test_id is not None:
        ab_test = await uow.ab_tests.view(test_id)
    else:
        ab_test = await uow.ab_tests.running_view()
    return RateResponse(
        success=True,
        ml_updated=ml_updated,
        sample_number=sample,
        current_best_rating=current_best_rating(means),
        samples_collected=sample,
        phase_1_complete=phase_1_complete(sample, policy.phase_1_target),
        prompt_evolution=RatePromptEvolution(
            triggered=triggered,
            waiting_for_ab_test=round_status == WAITING,
            new_version=await uow.evolution.version_created_between(sample),
            ab_test=ab_test,
        ),
    )
