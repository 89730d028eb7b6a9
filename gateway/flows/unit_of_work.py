"""The unit of work: the repositories (and the job queue) of one connection, in one transaction.

A flow opens ``async with uows() as uow:`` where it used to open
``async with pool.acquire() as conn, conn.transaction():``: the block commits when it ends
normally and rolls back when it raises, and the connection goes back to the pool either way.
``uows.read()`` gives the same repositories on a connection without a transaction, for reads.
Flows never see the pool or a connection.

It lives beside the flows, not in ``repositories``: it also binds the job queue (an adapter),
whose jobs are enqueued inside the caller's transaction.

Each repository stays a module of ``async def f(conn, ...)`` functions; the views below bind
the connection, so ``uow.experiments.insert_image(image, ...)`` is
``experiments.insert_image(conn, image, ...)`` with the same type-checked signature.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

import asyncpg

from gateway.adapters import job_queue
from gateway.repositories import (
    ab_tests,
    evolution,
    experiments,
    health,
    history,
    prompts,
    renders,
    training,
    users,
)
from shared.db.pool import Conn

P = ParamSpec("P")
R = TypeVar("R")


class _View:
    """A repository module seen through one connection."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn


class _bound(Generic[P, R]):
    """A repository function with its connection bound by the view it is read from."""

    def __init__(self, function: Callable[Concatenate[Conn, P], Awaitable[R]]) -> None:
        self._function = function

    def __get__(self, view: _View, owner: type[_View]) -> Callable[P, Awaitable[R]]:
        return functools.partial(self._function, view.conn)


class AbTests(_View):
    running = _bound(ab_tests.running)
    create = _bound(ab_tests.create)
    claim_slot = _bound(ab_tests.claim_slot)
    release_slot = _bound(ab_tests.release_slot)
    test_of = _bound(ab_tests.test_of)
    rated = _bound(ab_tests.rated)
    lock_if_running = _bound(ab_tests.lock_if_running)
    record_verdict = _bound(ab_tests.record_verdict)
    cancel_running = _bound(ab_tests.cancel_running)
    view = _bound(ab_tests.view)
    running_view = _bound(ab_tests.running_view)
    list_views = _bound(ab_tests.list_views)
    export_record = _bound(ab_tests.export_record)


class Evolution(_View):
    open_round = _bound(evolution.open_round)
    lock_round = _bound(evolution.lock_round)
    round_status = _bound(evolution.round_status)
    other_running = _bound(evolution.other_running)
    set_status = _bound(evolution.set_status)
    finish = _bound(evolution.finish)
    waiting_rounds = _bound(evolution.waiting_rounds)
    latest = _bound(evolution.latest)
    recent_options = _bound(evolution.recent_options)
    version_created_between = _bound(evolution.version_created_between)


class Experiments(_View):
    insert_image = _bound(experiments.insert_image)
    insert_experiment = _bound(experiments.insert_experiment)
    insert_option = _bound(experiments.insert_option)
    insert_candidate = _bound(experiments.insert_candidate)
    lock_experiment = _bound(experiments.lock_experiment)
    options_of = _bound(experiments.options_of)
    ratings_of = _bound(experiments.ratings_of)
    number_as_rated = _bound(experiments.number_as_rated)
    insert_rating = _bound(experiments.insert_rating)
    store_rate_response = _bound(experiments.store_rate_response)
    keep_first_rate_response = _bound(experiments.keep_first_rate_response)
    rate_response_of = _bound(experiments.rate_response_of)
    add_to_prompt_score = _bound(experiments.add_to_prompt_score)
    api_means_over_last = _bound(experiments.api_means_over_last)
    image_keys = _bound(experiments.image_keys)


class History(_View):
    page = _bound(history.page)
    options_for = _bound(history.options_for)


class Prompts(_View):
    current = _bound(prompts.current)
    import_seed_versions = _bound(prompts.import_seed_versions)
    by_id = _bound(prompts.by_id)
    library = _bound(prompts.library)
    find = _bound(prompts.find)
    create_child = _bound(prompts.create_child)
    make_current = _bound(prompts.make_current)
    set_status = _bound(prompts.set_status)


class Training(_View):
    count_samples = _bound(training.count_samples)
    samples_rated = _bound(training.samples_rated)
    per_api_figures = _bound(training.per_api_figures)
    learning_curve = _bound(training.learning_curve)
    current_prompt = _bound(training.current_prompt)
    prediction_errors = _bound(training.prediction_errors)


class Users(_View):
    insert_user = _bound(users.insert_user)
    get_user_by_name = _bound(users.get_user_by_name)
    list_users = _bound(users.list_users)
    count_users = _bound(users.count_users)
    insert_token = _bound(users.insert_token)
    find_user_by_token_hash = _bound(users.find_user_by_token_hash)
    revoke_tokens = _bound(users.revoke_tokens)
    get_user_by_id = _bound(users.get_user_by_id)
    set_password_hash = _bound(users.set_password_hash)
    password_hash_of = _bound(users.password_hash_of)
    reserve_login_attempt = _bound(users.reserve_login_attempt)
    mark_login_succeeded = _bound(users.mark_login_succeeded)
    end_sessions = _bound(users.end_sessions)
    set_disabled = _bound(users.set_disabled)


class Renders(_View):
    usage_of = _bound(renders.usage_of)
    record = _bound(renders.record)


class Health(_View):
    ping = _bound(health.ping)


class Jobs(_View):
    """The job queue, inside this unit's transaction: a job exists exactly when it commits."""

    enqueue_ml_update = _bound(job_queue.enqueue_ml_update)
    enqueue_ml_features = _bound(job_queue.enqueue_ml_features)
    enqueue_reward_training = _bound(job_queue.enqueue_reward_training)
    enqueue_evolution = _bound(job_queue.enqueue_evolution)
    forget_job = _bound(job_queue.forget_job)
    features_before = _bound(job_queue.features_before)
    pending_jobs = _bound(job_queue.pending_jobs)
    queued_by_entrypoint = _bound(job_queue.queued_by_entrypoint)
    work_in_hand = _bound(job_queue.work_in_hand)


class UnitOfWork:
    """One connection from the pool, in one transaction unless ``transaction=False``.

    The repositories are attributes once the block is entered; using them after it ends is an
    error of the caller (the connection is back in the pool).
    """

    ab_tests: AbTests
    evolution: Evolution
    experiments: Experiments
    health: Health
    history: History
    prompts: Prompts
    renders: Renders
    training: Training
    users: Users
    jobs: Jobs

    def __init__(self, pool: asyncpg.Pool[Any], *, transaction: bool = True) -> None:
        self._pool = pool
        self._transaction = transaction
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> UnitOfWork:
        async with AsyncExitStack() as stack:
            conn = await stack.enter_async_context(self._pool.acquire())
            if self._transaction:
                await stack.enter_async_context(conn.transaction())
            self._stack = stack.pop_all()
        self.ab_tests = AbTests(conn)
        self.evolution = Evolution(conn)
        self.experiments = Experiments(conn)
        self.health = Health(conn)
        self.history = History(conn)
        self.prompts = Prompts(conn)
        self.renders = Renders(conn)
        self.training = Training(conn)
        self.users = Users(conn)
        self.jobs = Jobs(conn)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        """Commit on a normal exit, roll back on an exception; release the connection."""
        return await self._stack.__aexit__(exc_type, exc, traceback)


class UnitOfWorkFactory:
    """Built once in the composition root over the process's pool; flows call it."""

    def __init__(self, pool: asyncpg.Pool[Any]) -> None:
        self.pool = pool

    def __call__(self) -> UnitOfWork:
        """A unit of work in one transaction."""
        return UnitOfWork(self.pool)

    def read(self) -> UnitOfWork:
        """The repositories on one connection without a transaction, for flows that only read
        (each statement commits on its own, like a token's last-used mark)."""
        return UnitOfWork(self.pool, transaction=False)
