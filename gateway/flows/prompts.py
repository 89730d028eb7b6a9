"""The prompt library API: list, show, promote (also the rollback), and the A/B tests; and
exporting the library's files after a change (and all of them at start-up)."""

from __future__ import annotations

import logging
from typing import Any

from gateway.adapters.prompt_export import PromptExporter
from gateway.errors import NotFound
from gateway.flows.evolution import release_waiting
from gateway.flows.unit_of_work import UnitOfWork, UnitOfWorkFactory
from gateway.repositories.users import User
from shared.wire.gateway import ABTestList, Promotion, PromptLibrary, PromptVersionView

log = logging.getLogger("latina.prompts")


def _version(row: dict[str, Any]) -> PromptVersionView:
    score = row["performance_score"]
    return PromptVersionView(
        version=row["version"],
        parent_version=row["parent_version"],
        prompt=row["prompt"],
        negative_prompt=row["negative_prompt"],
        performance_score=round(score, 3) if score is not None else None,
        usage_count=row["usage_count"],
        created_at=row["created_at"].isoformat(),
        is_current=row["is_current"],
        status=row["status"],
        origin=row["origin"],
        changes=list(row["changes"] or []),
        reasoning=row["reasoning"],
    )


def _not_found(version: str) -> NotFound:
    return NotFound(
        f"no prompt version {version!r}",
        code="prompt_version_not_found",
        details={"version": version},
    )


async def list_versions(uows: UnitOfWorkFactory) -> PromptLibrary:
    async with uows.read() as uow:
        rows = await uow.prompts.library()
    current = next((r["version"] for r in rows if r["is_current"]), None)
    return PromptLibrary(current=current, items=[_version(r) for r in rows])


async def show_version(uows: UnitOfWorkFactory, version: str) -> PromptVersionView:
    async with uows.read() as uow:
        row = await uow.prompts.find(version)
    if row is None:
        raise _not_found(version)
    return _version(row)


async def promote(
    uows: UnitOfWorkFactory, exporter: PromptExporter, version: str, user: User
) -> Promotion:
    """Make ``version`` current. A running A/B test is cancelled (the operator decided), and an
    evolution round waiting for it starts."""
    async with uows() as uow:
        row = await uow.prompts.find(version)
        if row is None:
            raise _not_found(version)
        if row["is_current"]:
            return Promotion(current=version, previous=version, changed=False, ab_test=None)
        cancelled = await uow.ab_tests.cancel_running(
            note=f"cancelled: {user.name} promoted {version} by hand"
        )
        previous = await uow.prompts.make_current(row["id"])
        await release_waiting(uow)
    log.info(
        "prompt version promoted by hand",
        extra={"version": version, "previous": previous, "by": user.name},
    )
    async with uows.read() as uow:
        await export_after_change(uow, exporter, ab_test_id=cancelled)
        test = await uow.ab_tests.view(cancelled) if cancelled is not None else None
    return Promotion(current=version, previous=previous, changed=True, ab_test=test)


async def list_ab_tests(uows: UnitOfWorkFactory) -> ABTestList:
    async with uows.read() as uow:
        return ABTestList(items=await uow.ab_tests.list_views())


async def export_after_change(
    uow: UnitOfWork, exporter: PromptExporter, *, ab_test_id: int | None = None
) -> None:
    """Export the current pointer, and a finished test's record when given."""
    if not exporter.enabled:
        return
    current = await uow.prompts.current()
    if current is not None:
        await exporter.current(current.version)
    if ab_test_id is not None:
        await exporter.experiment(await uow.ab_tests.export_record(ab_test_id))


async def export_library(uow: UnitOfWork, exporter: PromptExporter) -> None:
    """Write every version, the current pointer and every finished test (start-up repair)."""
    if not exporter.enabled:
        return
    for row in await uow.prompts.library():
        if row["origin"] != "seed":  # seed files are the source of those rows
            await exporter.version(row)
    await export_after_change(uow, exporter)
    for test in await uow.ab_tests.list_views():
        if test.status != "running":
            await exporter.experiment(await uow.ab_tests.export_record(test.id))
