"""``POST /api/train/rate``: record a sample, then teach the ML service."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pydantic import ValidationError

from gateway.adapters.ml_client import MLClient
from gateway.adapters.prompt_export import PromptExporter
from gateway.domain.ratings import check_against, check_ratings
from gateway.domain.schedule import (
    CURRENT_WINDOW,
    current_best_rating,
    evolution_due,
    phase_1_complete,
    reward_retrain_due,
)
from gateway.errors import Conflict, NotFound, UpstreamError
from gateway.flows.evolution import (
    WAITING,
    decide_ab_test,
    on_sample,
    release_waiting,
    supersede_waiting,
)
from gateway.flows.prompts import export_after_change
from gateway.flows.unit_of_work import UnitOfWork, UnitOfWorkFactory
from gateway.repositories.users import User
from shared.wire.gateway import (
    ABTestView,
    RatePromptEvolution,
    RateRequest,
    RateResponse,
    response_json,
)
from shared.wire.ml import ObservationIn

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
    try to deliver the update at once. Identical resubmissions get the first answer again."""
    given = check_ratings(request.ratings)
    async with uows() as uow:
        experiment = await uow.experiments.lock_experiment(request.experiment_id)
        if experiment is None:
            raise NotFound(f"no experiment {request.experiment_id!r}", code="experiment_not_found")
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
            if experiment.rate_response is not None:
                try:
                    return RateResponse.model_validate(experiment.rate_response)
                except ValidationError:  # stored by an older release in another shape
                    log.warning("stored rate answer of %s recomputed", experiment.id)
            return await _response(uow, experiment.sample_number, False, policy)
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
    # No connection is held while the ML service is asked: a hanging ML service must not
    # use up the pool for every other endpoint.
    delivered = await _deliver(ml, observations, policy.delivery_timeout)
    async with uows() as uow:
        if delivered:
            await uow.jobs.forget_job(job_id)
        body = await _response(uow, sample, delivered, policy, decided or test_id)
        await uow.experiments.store_rate_response(experiment.id, response_json(body))
        if decided is not None and exporter is not None:
            await export_after_change(uow, exporter, ab_test_id=decided)
    return body


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
