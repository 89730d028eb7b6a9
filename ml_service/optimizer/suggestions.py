"""Suggesting parameters: hand out precomputed suggestions or compute a batch, and precompute
the next ones in the background."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import asyncpg

from ml_service.errors import InvalidInput
from ml_service.optimizer.suggestion_work import MAX_BATCH, SuggestionWork
from ml_service.optimizer.validation import check_api
from ml_service.repositories import observations as observations_repo
from ml_service.repositories import studies as studies_repo
from ml_service.repositories import suggestions as suggestions_repo
from ml_service.telemetry import record_timings
from shared.db.pool import Conn
from shared.wire.ml import Suggestion, SuggestResponse


def new_suggestion_id() -> str:
    return "sug_" + secrets.token_hex(12)


async def _compute_and_store(
    pool: asyncpg.Pool[Any],
    work: SuggestionWork,
    study: str,
    api: str,
    n_obs: int,
    *,
    issue: int,
    deadline: float | None = None,
) -> list[Suggestion]:
    """Compute suggestions for this caller (``issue`` of them, handed out), for everyone
    waiting behind it and a reserve for the next callers (stored as precomputed for them to
    claim; the extra points of a batch cost little), holding no database connection while the
    GP works. Each stays apart from the suggestions pending when it is stored
    (another process may have issued some meanwhile)."""
    async with pool.acquire() as conn:
        observations = await observations_repo.load_observations(conn, study, api)
        pending = await suggestions_repo.pending_parameters(
            conn, study, api, work.pending_ttl_seconds
        )
        index = await suggestions_repo.next_sequence_index(conn, study, api)
    waiting = work.waiting(study, api)
    k = max(issue, min(MAX_BATCH, issue + waiting + work.reserve(study, api)))
    # A crowd of callers (this one and others, or several behind a precomputation), or a
    # caller whose computation must queue for a GP slot: every point by Thompson sampling, no
    # acquisition optimisation to wait for. One caller at a time, with a slot free, gets the
    # acquisition's point first.
    crowd = (1 if issue else 0) + waiting >= 2 or (
        issue > 0 and (work.gp.saturated() or work.gp.queued > 0)
    )
    proposals, best = await work.gp.propose(
        study, api, observations, pending, index, k, thompson=crowd, deadline=deadline
    )
    if best is not None:
        work.remember_best(study, api, observations, best)
    async with pool.acquire() as conn, conn.transaction():
        await suggestions_repo.lock_api(conn, study, api)
        taken = await suggestions_repo.pending_parameters(
            conn, study, api, work.pending_ttl_seconds
        )
        index = await suggestions_repo.next_sequence_index(conn, study, api)
        rows: list[tuple[suggestions_repo.StoredSuggestion, int, bool]] = []
        for i, proposal in enumerate(proposals):
            record_timings(proposal.fit_seconds, proposal.acquisition_seconds)
            parameters, strategy = dict(proposal.parameters), proposal.strategy
            while work.optimizer.repeats(api, parameters, taken):
                parameters, strategy = work.optimizer.explore(study, api, index), "explore"
                index += 1
            suggestion = suggestions_repo.StoredSuggestion(
                new_suggestion_id(), api, parameters, strategy, n_obs
            )
            rows.append((suggestion, index, i < issue))
            taken.append(parameters)
            index += 1
        await suggestions_repo.insert_suggestions(conn, study, rows)
    return [_wire(s) for s, _, _ in rows[:issue]]


def _wire(stored: suggestions_repo.StoredSuggestion) -> Suggestion:
    return Suggestion(
        suggestion_id=stored.id,
        api=stored.api,
        strategy=stored.strategy,
        parameters=stored.parameters,
    )


async def _lock_and_count(conn: Conn, study: str, api: str) -> int:
    """In a transaction: the study exists, (study, api) is locked across processes until
    commit, and how many observations the API has."""
    await studies_repo.ensure_study(conn, study)
    await suggestions_repo.lock_api(conn, study, api)
    return (await observations_repo.count_observations(conn, study)).get(api, 0)


async def _claim(
    pool: asyncpg.Pool[Any],
    work: SuggestionWork,
    study: str,
    api: str,
    count: int,
    *,
    stale_ok: bool,
) -> tuple[int, list[Suggestion]]:
    """The API's observation count, and up to ``count`` precomputed suggestions handed out:
    computed for today's data, or (``stale_ok``) for data at most ``stale_observations``
    older, freshest first. One that would repeat a pending suggestion (computed before it was
    issued) is dropped."""
    async with pool.acquire() as conn, conn.transaction():
        n_obs = await _lock_and_count(conn, study, api)
        oldest = work.oldest_claimable(n_obs) if stale_ok else n_obs
        found = await suggestions_repo.unissued(conn, study, api, oldest, limit=count + 4)
        if not found:
            return n_obs, []
        taken = await suggestions_repo.pending_parameters(
            conn, study, api, work.pending_ttl_seconds
        )
        chosen: list[suggestions_repo.StoredSuggestion] = []
        repeated: list[str] = []
        for candidate in found:
            if len(chosen) == count:
                break
            if work.optimizer.repeats(api, candidate.parameters, taken):
                repeated.append(candidate.id)
                continue
            chosen.append(candidate)
            taken.append(candidate.parameters)
        await suggestions_repo.mark_issued(conn, [c.id for c in chosen])
        await suggestions_repo.delete_suggestions(conn, repeated)
    return n_obs, [_wire(c) for c in chosen]


async def suggest_for(
    pool: asyncpg.Pool[Any],
    work: SuggestionWork,
    study: str,
    api: str,
    count: int = 1,
    deadline: float | None = None,
) -> list[Suggestion]:
    """``count`` distinct suggestions for ``api``: precomputed ones when there are (in a burst,
    or when the API's turn is still taken after ``patience``, without waiting for it), else
    computed in one batch with everyone waiting."""
    got: list[Suggestion] = []
    if work.crowded(study, api) or not await work.turn_free_within(study, api, work.patience):
        # a burst, or the turn still taken after ``patience``: one a few observations old
        _, got = await _claim(pool, work, study, api, count, stale_ok=True)
        if len(got) == count:
            work.note_issued(study, api, count)
            return got
    async with work.turn(study, api):
        n_obs, more = await _claim(
            pool, work, study, api, count - len(got), stale_ok=work.crowded(study, api)
        )
        got += more
        if len(got) < count:
            got += await _compute_and_store(
                pool, work, study, api, n_obs, issue=count - len(got), deadline=deadline
            )
    work.note_issued(study, api, count)
    return got


async def suggest_parameters(
    pool: asyncpg.Pool[Any],
    work: SuggestionWork,
    study: str,
    apis: list[str],
    *,
    count: dict[str, int] | None = None,
    deadline: float | None = None,
) -> SuggestResponse:
    """``count[api]`` (default 1) distinct suggestions per API, grouped by API in the order of
    ``apis``. ``deadline`` (``time.monotonic()``): the caller's; GP work still queued when it
    passes is dropped (``DeadlineExceeded``)."""
    for api in apis:
        check_api(work.optimizer.space, api)
    if len(set(apis)) != len(apis):
        raise InvalidInput("each api may be asked for once", code="duplicate_api")
    counts = count or {}
    for api in counts:
        if api not in apis:
            raise InvalidInput(
                f"count names {api!r}, which is not among the apis asked for",
                code="invalid_count",
                details={"api": api},
            )
    # Database work for the APIs overlaps; their GP work goes through the GP queue.
    answers = await asyncio.gather(
        *(suggest_for(pool, work, study, api, counts.get(api, 1), deadline) for api in apis)
    )
    for api in apis:
        # the next request should find one ready, computed with these as pending
        precompute_later(pool, work, study, api)
    async with pool.acquire() as conn:
        n = await observations_repo.count_observations(conn, study)
    return SuggestResponse(
        suggestions=[s for batch in answers for s in batch],
        n_observations={api: n.get(api, 0) for api in work.optimizer.space.apis},
    )


async def precompute(pool: asyncpg.Pool[Any], work: SuggestionWork, study: str, api: str) -> bool:
    """Compute and store the next suggestion for the current data unless one is ready; drop
    precomputed ones too old to be handed out even in a burst."""
    async with work.turn(study, api, caller=False):
        async with pool.acquire() as conn, conn.transaction():
            n_obs = await _lock_and_count(conn, study, api)
            await suggestions_repo.discard_precomputed_before(
                conn, study, api, work.oldest_claimable(n_obs)
            )
            if await suggestions_repo.has_precomputed(conn, study, api, n_obs):
                return False
        await _compute_and_store(pool, work, study, api, n_obs, issue=0)
        return True


def precompute_later(pool: asyncpg.Pool[Any], work: SuggestionWork, study: str, api: str) -> None:
    """The next suggestion for (study, api) computed in the background (``precompute``), so
    that the next caller finds one ready."""
    work.schedule_precompute(study, api, lambda: precompute(pool, work, study, api))
