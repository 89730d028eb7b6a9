"""``POST /api/train/rate``: record a sample, then teach the ML service."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import asyncpg

from gateway.adapters import job_queue
from gateway.adapters.ml_client import MLClient
from gateway.adapters.prompt_export import PromptExporter
from gateway.domain.arms import OPTIONS
from gateway.errors import Conflict, InvalidInput, NotFound, UpstreamError
from gateway.flows.evolution import WAITING, on_sample, release_waiting, supersede_waiting
from gateway.flows.prompts import export_after_change
from gateway.repositories import ab_tests, evolution
from gateway.repositories import experiments as repo
from gateway.repositories.users import User
from shared.wire.gateway import RateRequest
from shared.wire.ml import ObservationIn

log = logging.getLogger("latina.rating")

MAX_COMMENT = 2000
CURRENT_WINDOW = 10


@dataclass(frozen=True)
class RatingPolicy:
    phase_1_target: int
    delivery_timeout: float
    retry_delay: float
    evolution_every: int = 10
    reward_retrain_every: int = 25


def _check_shape(request: RateRequest) -> dict[str, tuple[int, str, int | None]]:
    given: dict[str, tuple[int, str, int | None]] = {}
    for r in request.ratings:
        if r.option not in OPTIONS:
            raise InvalidInput(
                f"unknown option {r.option!r}; options are A and B",
                code="unknown_option",
                details={"option": r.option},
            )
        if r.option in given:
            raise InvalidInput(f"option {r.option} is rated twice", code="duplicate_option")
        if not 1 <= r.rating <= 5:
            raise InvalidInput(
                "rating must be an integer from 1 to 5",
                code="rating_out_of_range",
                details={"option": r.option, "rating": r.rating},
            )
        if len(r.comments) > MAX_COMMENT:
            raise InvalidInput(
                f"comments may be at most {MAX_COMMENT} characters",
                code="comment_too_long",
                details={"option": r.option, "length": len(r.comments)},
            )
        given[r.option] = (r.rating, r.comments.strip(), r.image_id)
    return given


def _check_against(
    given: dict[str, tuple[int, str, int | None]], options: list[repo.OptionRow]
) -> None:
    generated = {o.option: o for o in options}
    for option in given:
        if option not in generated:
            raise InvalidInput(
                f"option {option} was not generated for this experiment",
                code="unknown_option",
                details={"option": option, "generated": sorted(generated)},
            )
    missing = sorted(set(generated) - set(given))
    if missing:
        raise InvalidInput(
            "every generated option must be rated in one request",
            code="missing_option",
            details={"missing": missing},
        )
    for option, (_, _, image_id) in given.items():
        if image_id is not None and image_id != generated[option].image_id:
            raise InvalidInput(
                f"image {image_id} is not option {option} of this experiment",
                code="image_mismatch",
                details={"option": option, "image_id": image_id},
            )


async def record_ratings(
    pool: asyncpg.Pool[Any],
    ml: MLClient,
    request: RateRequest,
    user: User,
    policy: RatingPolicy,
    exporter: PromptExporter | None = None,
    *,
    send_images: bool = False,
) -> dict[str, Any]:
    """Store the ratings, the ML update (and, with ``send_images``, a job that sends the images
    for their features), any A/B decision and any evolution trigger in one transaction; then
    try to deliver the update at once. Identical resubmissions get the first answer again."""
    given = _check_shape(request)
    async with pool.acquire() as conn, conn.transaction():
        experiment = await repo.lock_experiment(conn, request.experiment_id)
        if experiment is None:
            raise NotFound(f"no experiment {request.experiment_id!r}", code="experiment_not_found")
        options = await repo.options_of(conn, experiment.id)
        _check_against(given, options)
        if experiment.sample_number is not None:
            stored = await repo.ratings_of(conn, experiment.id)
            if {k: (v[0], v[1]) for k, v in given.items()} != stored:
                raise Conflict(
                    "this experiment was already rated with other values",
                    code="already_rated",
                    details={"sample_number": experiment.sample_number},
                )
            if experiment.rate_response is not None:
                return experiment.rate_response
            return await _response(conn, experiment.sample_number, False, policy)
        for option in options:
            rating, comments, _ = given[option.option]
            await repo.insert_rating(conn, experiment.id, option, rating, comments, user.id)
        observations = [
            ObservationIn(
                observation_id=f"{experiment.id}:{o.option}",
                suggestion_id=o.suggestion_id,
                api=o.api,
                parameters=o.parameters,
                rating=given[o.option][0],
                prompt_version=experiment.prompt_version,
            )
            for o in options
        ]
        job_id = await job_queue.enqueue_ml_update(
            conn, experiment.id, observations, delay_seconds=policy.retry_delay
        )
        if send_images:  # the worker sends them (gateway.flows.pictures): nobody waits for that
            await job_queue.enqueue_ml_features(conn, experiment.id, observations)
        decided: int | None = None
        test_id = await ab_tests.test_of(conn, experiment.id)
        if test_id is not None and await ab_tests.decide_if_complete(conn, test_id):
            decided = test_id
        # The rows every rating updates come last, one statement each: their locks are held
        # until the commit, and concurrent ratings queue on them.
        await repo.add_to_prompt_score(
            conn, experiment.prompt_version_id, [given[o.option][0] for o in options]
        )
        sample = await repo.number_as_rated(conn, experiment.id, user.id)
        status = await on_sample(conn, sample, experiment.id, policy.evolution_every)
        if sample >= policy.phase_1_target and (
            (sample - policy.phase_1_target) % policy.reward_retrain_every == 0
        ):
            await job_queue.enqueue_reward_training(conn, sample)
        if decided is not None:
            if status == "triggered":
                await supersede_waiting(conn, sample)
            else:
                await release_waiting(conn)
    # No connection is held while the ML service is asked: a hanging ML service must not
    # use up the pool for every other endpoint.
    delivered = await _deliver(ml, observations, policy.delivery_timeout)
    async with pool.acquire() as conn, conn.transaction():
        if delivered:
            await job_queue.forget_job(conn, job_id)
        body = await _response(conn, sample, delivered, policy, decided or test_id)
        await repo.store_rate_response(conn, experiment.id, body)
        if decided is not None and exporter is not None:
            await export_after_change(conn, exporter, ab_test_id=decided)
    return body


async def _deliver(ml: MLClient, observations: list[ObservationIn], timeout: float) -> bool:
    try:
        await ml.update(observations, timeout=timeout)
    except UpstreamError as exc:
        log.warning("ml update kept for the worker: %s", exc.message)
        return False
    return True


async def _response(
    conn: Any, sample: int, ml_updated: bool, policy: RatingPolicy, test_id: int | None = None
) -> dict[str, Any]:
    """The rate response. ``ab_test`` is the test this sample belonged to (as it stands now:
    running, or decided by this or a concurrent sample), else the running test, else null."""
    means = await repo.api_means_over_last(conn, CURRENT_WINDOW)
    triggered = sample % policy.evolution_every == 0
    round_status = await evolution.round_status(conn, sample) if triggered else None
    ab_test: dict[str, Any] | None
    if test_id is not None:
        ab_test = await ab_tests.view(conn, test_id)
    else:
        ab_test = await ab_tests.running_view(conn)
    return {
        "success": True,
        "ml_updated": ml_updated,
        "sample_number": sample,
        "current_best_rating": round(max(means.values()), 3) if means else None,
        "samples_collected": sample,
        "phase_1_complete": sample >= policy.phase_1_target,
        "prompt_evolution": {
            "triggered": triggered,
            "waiting_for_ab_test": round_status == WAITING,
            "new_version": await evolution.version_created_between(conn, sample),
            "ab_test": ab_test,
        },
    }
