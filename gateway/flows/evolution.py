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

from gateway.adapters.prompt_export import PromptExporter
from gateway.domain.ab_tests import judge
from gateway.domain.evolution.analysis import analyse
from gateway.domain.evolution.proposals import Evolver
from gateway.domain.schedule import evolution_due
from gateway.flows.unit_of_work import UnitOfWork, UnitOfWorkFactory

log = logging.getLogger("latina.evolution")

WAITING = "waiting_for_ab_test"


@dataclass(frozen=True)
class EvolutionDeps:
    uows: UnitOfWorkFactory
    evolver: Evolver
    exporter: PromptExporter
    ab_test_samples: int
    window: int

    async def aclose(self) -> None:
        """Close the evolver's HTTP client, if it has one."""
        close = getattr(self.evolver, "aclose", None)
        if close is not None:
            await close()


async def _busy(uow: UnitOfWork, sample_number: int) -> bool:
    if await uow.ab_tests.running() is not None:
        return True
    return await uow.evolution.other_running(sample_number) is not None


async def on_sample(
    uow: UnitOfWork, sample_number: int, experiment_id: str, every: int
) -> str | None:
    """In the rating transaction: open the round of an ``every``-th sample. Returns its status."""
    if not evolution_due(sample_number, every):
        return None
    status = WAITING if await _busy(uow, sample_number) else "triggered"
    await uow.evolution.open_round(sample_number, experiment_id, status)
    if status == "triggered":
        await uow.jobs.enqueue_evolution(sample_number)
    return status


async def release_waiting(uow: UnitOfWork) -> int | None:
    """Start the newest waiting round once nothing holds it; older waiting ones are superseded."""
    if await uow.ab_tests.running() is not None:
        return None
    waiting = await uow.evolution.waiting_rounds()
    if not waiting:
        return None
    newest, *older = waiting
    for sample in older:
        await uow.evolution.set_status(
            sample, "done", error=f"superseded by the round of sample {newest}"
        )
    await uow.evolution.set_status(newest, "triggered")
    await uow.jobs.enqueue_evolution(newest)
    return newest


async def supersede_waiting(uow: UnitOfWork, sample_number: int) -> None:
    """A newer round started: the ones still waiting would evolve from stale data."""
    for sample in await uow.evolution.waiting_rounds():
        if sample != sample_number:
            await uow.evolution.set_status(
                sample, "done", error=f"superseded by the round of sample {sample_number}"
            )


async def decide_ab_test(uow: UnitOfWork, ab_test_id: int) -> bool:
    """In the rating transaction: once every slot's experiment is rated, record the decision
    and promote the new version or reject it. Returns whether this call decided the test."""
    test = await uow.ab_tests.lock_if_running(ab_test_id)
    if test is None:
        return False
    verdict = judge(await uow.ab_tests.rated(ab_test_id), test["samples_planned"])
    if verdict is None:
        return False
    await uow.ab_tests.record_verdict(ab_test_id, verdict)
    if verdict.promote:
        await uow.prompts.make_current(test["new_version_id"])
    else:
        await uow.prompts.set_status(test["new_version_id"], "rejected")
    return True


async def run_round(deps: EvolutionDeps, sample_number: int) -> str | None:
    """The job: propose a new version and start its A/B test. Returns the new version's name."""
    async with deps.uows() as uow:
        state = await uow.evolution.lock_round(sample_number)
        if state is None or state["status"] in ("done", "failed", WAITING):
            return None
        if await _busy(uow, sample_number):
            await uow.evolution.set_status(sample_number, WAITING)
            return None
        await uow.evolution.set_status(sample_number, "running")
        parent = await uow.prompts.current()
        options = await uow.evolution.recent_options(sample_number, deps.window)
    if parent is None:
        raise RuntimeError("no current prompt version to evolve")
    analysis = analyse(parent.version, parent.prompt, parent.negative_prompt, options)
    try:
        proposal = await deps.evolver.propose(analysis)
    except Exception as exc:
        # Evolvers fall back on their own; reaching here is a bug or a broken rule table.
        log.exception("evolution failed", extra={"sample_number": sample_number})
        async with deps.uows() as uow:
            await uow.evolution.set_status(sample_number, "failed", error=repr(exc)[:500])
            await release_waiting(uow)
        return None
    async with deps.uows() as uow:
        state = await uow.evolution.lock_round(sample_number)
        if state is None or state["status"] != "running":
            return None
        if await uow.ab_tests.running() is not None:
            await uow.evolution.set_status(sample_number, WAITING)
            return None
        current = await uow.prompts.current() or parent
        row = await uow.prompts.create_child(
            parent,
            prompt=proposal.prompt,
            negative_prompt=proposal.negative_prompt,
            origin=proposal.origin,
            changes=list(proposal.changes),
            reasoning=proposal.reasoning,
        )
        await uow.ab_tests.create(
            evolution_sample=sample_number,
            old_id=current.id,
            new_id=row["id"],
            planned=deps.ab_test_samples,
        )
        await uow.evolution.finish(
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
