"""The prompt library API: list, show, promote (also the rollback), and the A/B tests; and
exporting the library's files after a change (and all of them at start-up)."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg

from gateway.adapters.prompt_export import PromptExporter
from gateway.errors import NotFound
from gateway.flows.evolution import release_waiting
from gateway.repositories import ab_tests, prompts
from gateway.repositories.users import User
from shared.db.pool import Conn

log = logging.getLogger("latina.prompts")


def version_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": row["version"],
        "parent_version": row["parent_version"],
        "prompt": row["prompt"],
        "negative_prompt": row["negative_prompt"],
        "performance_score": (
            round(row["performance_score"], 3) if row["performance_score"] is not None else None
        ),
        "usage_count": row["usage_count"],
        "created_at": row["created_at"].isoformat(),
        "is_current": row["is_current"],
        "status": row["status"],
        "origin": row["origin"],
        "changes": list(row["changes"] or []),
        "reasoning": row["reasoning"],
    }


def _not_found(version: str) -> NotFound:
    return NotFound(
        f"no prompt version {version!r}",
        code="prompt_version_not_found",
        details={"version": version},
    )


async def list_versions(pool: asyncpg.Pool[Any]) -> dict[str, Any]:
    async with pool.acquire() as conn:
        rows = await prompts.library(conn)
    current = next((r["version"] for r in rows if r["is_current"]), None)
    return {"current": current, "items": [version_json(r) for r in rows]}


async def show_version(pool: asyncpg.Pool[Any], version: str) -> dict[str, Any]:
    async with pool.acquire() as conn:
        row = await prompts.find(conn, version)
    if row is None:
        raise _not_found(version)
    return version_json(row)


async def promote(
    pool: asyncpg.Pool[Any], exporter: PromptExporter, version: str, user: User
) -> dict[str, Any]:
    """Make ``version`` current. A running A/B test is cancelled (the operator decided), and an
    evolution round waiting for it starts."""
    async with pool.acquire() as conn, conn.transaction():
        row = await prompts.find(conn, version)
        if row is None:
            raise _not_found(version)
        if row["is_current"]:
            return {"current": version, "previous": version, "changed": False, "ab_test": None}
        cancelled = await ab_tests.cancel_running(
            conn, note=f"cancelled: {user.name} promoted {version} by hand"
        )
        previous = await prompts.make_current(conn, row["id"])
        await release_waiting(conn)
    log.info(
        "prompt version promoted by hand",
        extra={"version": version, "previous": previous, "by": user.name},
    )
    async with pool.acquire() as conn:
        await export_after_change(conn, exporter, ab_test_id=cancelled)
        test = await ab_tests.view(conn, cancelled) if cancelled is not None else None
    return {"current": version, "previous": previous, "changed": True, "ab_test": test}


async def list_ab_tests(pool: asyncpg.Pool[Any]) -> dict[str, Any]:
    async with pool.acquire() as conn:
        return {"items": await ab_tests.list_views(conn)}


async def export_after_change(
    conn: Conn, exporter: PromptExporter, *, ab_test_id: int | None = None
) -> None:
    """Export the current pointer, and a finished test's record when given."""
    if not exporter.enabled:
        return
    current = await prompts.current(conn)
    if current is not None:
        await exporter.current(current.version)
    if ab_test_id is not None:
        await exporter.experiment(await ab_tests.export_record(conn, ab_test_id))


async def export_library(conn: Conn, exporter: PromptExporter) -> None:
    """Write every version, the current pointer and every finished test (start-up repair)."""
    if not exporter.enabled:
        return
    for row in await prompts.library(conn):
        if row["origin"] != "seed":  # seed files are the source of those rows
            await exporter.version(row)
    await export_after_change(conn, exporter)
    for test in await ab_tests.list_views(conn):
        if test["status"] != "running":
            await exporter.experiment(await ab_tests.export_record(conn, test["id"]))
