"""The training status of ``GET /api/train/status``."""

from __future__ import annotations

from typing import Any

from gateway.adapters import job_queue
from gateway.adapters.ml_client import MLClient
from gateway.domain.arms import APIS
from gateway.domain.schedule import CURRENT_WINDOW, current_best_rating, phase_1_complete
from gateway.errors import UpstreamError
from gateway.flows.evolution import WAITING
from gateway.flows.unit_of_work import UnitOfWorkFactory
from shared.wire.gateway import (
    ApiStatus,
    CurvePoint,
    EvolutionRound,
    EvolutionStatus,
    MLServiceStatus,
    PredictionError,
    PromptStatus,
    RewardModelStatus,
    StatusResponse,
)
from shared.wire.ml import BestForApi, RewardStatusResponse


async def _gp_load(ml: MLClient) -> tuple[bool, int]:
    """Whether GP work waits in the ML service's queue, and how much (from its health, which
    never waits behind GP work); (False, 0) when it does not answer."""
    try:
        health = await ml.health()
    except UpstreamError:
        return False, 0
    queued = health.gp.queued
    return queued > 0, queued


async def training_status(
    uows: UnitOfWorkFactory, ml: MLClient, *, phase_1_target: int
) -> StatusResponse:
    """Counters, per-API figures, the learning curve and the ML service's state."""
    async with uows.read() as uow:
        samples = await uow.training.count_samples()
        figures = {f.api: f for f in await uow.training.per_api_figures()}
        recent = await uow.experiments.api_means_over_last(CURRENT_WINDOW)
        curve = await uow.training.learning_curve()
        prompt = await uow.training.current_prompt()
        pending = await uow.jobs.pending_jobs(job_queue.ML_UPDATE)
        ab_test = await uow.ab_tests.running_view()
        last_round = await uow.evolution.latest()
        errors = await uow.training.prediction_errors()
    best: dict[str, BestForApi]
    try:
        best = (await ml.best()).best
        reachable = True
    except UpstreamError:
        best, reachable = {}, False
    busy, queued = await _gp_load(ml)
    reachable = reachable or busy
    reward: RewardStatusResponse | None = None
    if reachable:
        try:
            reward = await ml.reward_status()
        except UpstreamError:
            reward = None
    per_api: dict[str, ApiStatus] = {}
    for api in APIS:
        fig = figures.get(api)
        learned = best.get(api)
        per_api[api] = ApiStatus(
            samples=fig.samples if fig else 0,
            avg_rating=round(fig.avg_rating, 3) if fig and fig.avg_rating else None,
            best_rating=fig.best_rating if fig else None,
            best_parameters=(learned.parameters if learned else None)
            or (fig.best_parameters if fig else None),
            predicted_best_rating=learned.predicted_rating if learned else None,
            uncertainty=learned.uncertainty if learned else None,
            importance=learned.importance if learned else None,
        )
    complete = phase_1_complete(samples, phase_1_target)
    return StatusResponse(
        samples_collected=samples,
        phase=2 if complete else 1,
        phase_1_complete=complete,
        phase_1_target=phase_1_target,
        current_best_rating=current_best_rating(recent),
        per_api=per_api,
        current_prompt=(
            PromptStatus(
                version=prompt.version,
                performance_score=prompt.performance_score,
                usage_count=prompt.usage_count,
            )
            if prompt
            else None
        ),
        ab_test=ab_test,
        prompt_evolution=_evolution_view(last_round),
        learning_curve=[
            CurvePoint(sample=p.sample, avg_rating=p.avg_rating, best_so_far=p.best_so_far)
            for p in curve
        ],
        ml_service=MLServiceStatus(
            reachable=reachable, pending_updates=pending, busy=busy, queued_computations=queued
        ),
        reward_model=RewardModelStatus(
            trained=reward.trained if reward else False,
            version=reward.version if reward else None,
            samples=reward.samples if reward else 0,
            pairwise_accuracy=reward.pairwise_accuracy if reward else None,
            mae=reward.mae if reward else None,
            prediction_errors=[PredictionError.model_validate(e) for e in errors],
            mean_abs_error=(
                round(sum(abs(e["error"]) for e in errors) / len(errors), 3) if errors else None
            ),
        ),
    )


def _evolution_view(last: dict[str, Any] | None) -> EvolutionStatus:
    """The latest evolution round: whether it waits for an A/B test, what it produced."""
    if last is None:
        return EvolutionStatus(last_round=None, waiting_for_ab_test=False)
    return EvolutionStatus(
        waiting_for_ab_test=last["status"] == WAITING,
        last_round=EvolutionRound(
            sample=last["sample_number"],
            status=last["status"],
            evolver=last["evolver"],
            new_version=last["new_version"],
            fallback_reason=last["fallback_reason"],
            error=last["error"],
        ),
    )
