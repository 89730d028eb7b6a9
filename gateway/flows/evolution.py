"""Evolution rounds: triggered in the rating transaction, run by the worker.

Every ``EVOLUTION_EVERY``-th sample opens one round (the round's primary key makes it exactly
once, however many gateways rate at once) and enqueues one job in the same transaction, so the
rating never waits for the LLM. While an A/B test (or another round) is running, the round
waits instead; when the test ends, the newest waiting round is started and older ones are
marked superseded. The job analyses the recent samples, asks the evolver, and creates the new
version and its A/B test in one transaction. The rating that completes the test decides it
(``decide_ab_test``).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import asyncpg

from gateway.adapters import job_queue
from gateway.adapters.prompt_export import PromptExporter
from gateway.domain.ab_tests import judge
from gateway.domain.evolution.analysis import analyse
from gateway.domain.evolution.proposals import Evolver
from gateway.domain.schedule import evolution_due
from gateway.repositories import ab_tests, evolution, prompts
from shared.db.pool import Conn

log = logging.getLogger("latina.evolution")

WAITING = "waiting_for_ab_test"


@dataclass(frozen=True)
class EvolutionDeps:
    pool: asyncpg.Pool[Any]
    evolver: Evolver
    exporter: PromptExporter
    ab_test_samples: int
    window: int

    async def aclose(self) -> None:
        """Close the evolver's HTTP client, if it has one."""
        close = getattr(self.evolver, "aclose", None)
        if close is not None:
            await close()


async def _busy(conn: Conn, sample_number: int) -> bool:
    if await ab_tests.running(conn) is not None:
        return True
    return await evolution.other_running(conn, sample_number) is not None


async def on_sample(conn: Conn, sample_number: int, experiment_id: str, every: int) -> str | None:
    """In the rating transaction: open the round of an ``every``-th sample. Returns its status."""
    if not evolution_due(sample_number, every):
        return None
    status = WAITING if await _busy(conn, sample_number) else "triggered"
    await evolution.open_round(conn, sample_number, experiment_id, status)
    if status == "triggered":
        await job_queue.enqueue_evolution(conn, sample_number)
    return status


async def release_waiting(conn: Conn) -> int | None:
    """Start the newest waiting round once nothing holds it; older waiting ones are superseded."""
    if await ab_tests.running(conn) is not None:
        return None
    waiting = await evolution.waiting_rounds(conn)
    if not waiting:
        return None
    newest, *older = waiting
    for sample in older:
        await evolution.set_status(
            conn, sample, "done", error=f"superseded by the round of sample {newest}"
        )
    await evolution.set_status(conn, newest, "triggered")
    await job_queue.enqueue_evolution(conn, newest)
    return newest


async def supersede_waiting(conn: Conn, sample_number: int) -> None:
    """A newer round started: the ones still waiting would evolve from stale data."""
    for sample in await evolution.waiting_rounds(conn):
        if sample != sample_number:
            await evolution.set_status(
                conn, sample, "done", error=f"superseded by the round of sample {sample_number}"
            )


async def decide_ab_test(conn: Conn, ab_test_id: int) -> bool:
    """In the rating transaction: once every slot's experiment is rated, record the decision
    and promote the new version or reject it. Returns whether this call decided the test."""
    test = await ab_tests.lock_if_running(conn, ab_test_id)
    if test is None:
        return False
    verdict = judge(await ab_tests.rated(conn, ab_test_id), test["samples_planned"])
    if verdict is None:
        return False
    await ab_tests.record_verdict(conn, ab_test_id, verdict)
    if verdict.promote:
        await prompts.make_current(conn, test["new_version_id"])
    else:
        await prompts.set_status(conn, test["new_version_id"], "rejected")
    return True


async def run_round(deps: EvolutionDeps, sample_number: int) -> str | None:
    """The job: propose a new version and start its A/B test. Returns the new version's name."""
    async with deps.pool.acquire() as conn, conn.transaction():
        state = await evolution.lock_round(conn, sample_number)
        if state is None or state["status"] in ("done", "failed", WAITING):
            return None
        if await _busy(conn, sample_number):
            await evolution.set_status(conn, sample_number, WAITING)
            return None
        await evolution.set_status(conn, sample_number, "running")
        parent = await prompts.current(conn)
        options = await evolution.recent_options(conn, sample_number, deps.window)
    if parent is None:
        raise RuntimeError("no current prompt version to evolve")
    analysis = analyse(parent.version, parent.prompt, parent.negative_prompt, options)
    try:
        proposal = await deps.evolver.propose(analysis)
    except Exception as exc:
        # Evolvers fall back on their own; reaching here is a bug or a broken rule table.
        log.exception("evolution failed", extra={"sample_number": sample_number})
        async with deps.pool.acquire() as conn, conn.transaction():
            await evolution.set_status(conn, sample_number, "failed", error=repr(exc)[:500])
            await release_waiting(conn)
        return None
    async with deps.pool.acquire() as conn, conn.transaction():
        state = await evolution.lock_round(conn, sample_number)
        if state is None or state["status"] != "running":
            return None
        if await ab_tests.running(conn) is not None:
            await evolution.set_status(conn, sample_number, WAITING)
            return None
        current = await prompts.current(conn) or parent
        row = await prompts.create_child(
            conn,
            parent,
            prompt=proposal.prompt,
            negative_prompt=proposal.negative_prompt,
            origin=proposal.origin,
            changes=list(proposal.changes),
            reasoning=proposal.reasoning,
        )
        await ab_tests.create(
            conn,
            evolution_sample=sample_number,
            old_id=current.id,
            new_id=row["id"],
            planned=deps.ab_test_samples,
        )
        await evolution.finish(
            conn,
            sample_number,
            parent_version_id=parent.id,
            new_version_id=row["id"],
            evolver=deps.evolver.name,
            fallback_reason=proposal.fallback_reason,
            analysis=_jsonable(dataclasses.asdict(analysis)),
        )
    log.info(
        "prompt evolved",
        extra={
            "sample_number": sample_number,
            "version": row["version"],
            "parent": parent.version,
            "origin": proposal.origin,
        },
    )
    await deps.exporter.version(row)
    return str(row["version"])


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
