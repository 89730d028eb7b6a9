"""Evolution rounds: one per N-th sample, from trigger to the version it produced."""

from __future__ import annotations

from typing import Any

from gateway.domain.evolution.analysis import RatedOption
from shared.db.pool import Conn

# A round "running" longer than this is taken for a crashed worker's: it no longer holds others.
STALE_RUNNING_SECONDS = 1800


async def open_round(conn: Conn, sample_number: int, experiment_id: str, status: str) -> None:
    await conn.execute(
        "INSERT INTO evolution_rounds (sample_number, experiment_id, status) VALUES ($1, $2, $3)",
        sample_number,
        experiment_id,
        status,
    )


async def lock_round(conn: Conn, sample_number: int) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        "SELECT * FROM evolution_rounds WHERE sample_number = $1 FOR UPDATE", sample_number
    )
    return dict(row) if row else None


async def round_status(conn: Conn, sample_number: int) -> str | None:
    value = await conn.fetchval(
        "SELECT status FROM evolution_rounds WHERE sample_number = $1", sample_number
    )
    return str(value) if value is not None else None


async def other_running(conn: Conn, sample_number: int) -> int | None:
    """Another round producing a version right now (not one abandoned by a crashed worker)."""
    value = await conn.fetchval(
        """
        SELECT sample_number FROM evolution_rounds
        WHERE status = 'running' AND sample_number <> $1
          AND started_at > now() - make_interval(secs => $2)
        ORDER BY sample_number LIMIT 1
        """,
        sample_number,
        float(STALE_RUNNING_SECONDS),
    )
    return int(value) if value is not None else None


async def set_status(conn: Conn, sample_number: int, status: str, error: str | None = None) -> None:
    await conn.execute(
        """
        UPDATE evolution_rounds SET status = $2, error = coalesce($3, error),
            started_at = CASE WHEN $2 = 'running' THEN now() ELSE started_at END,
            finished_at = CASE WHEN $2 IN ('done', 'failed') THEN now() ELSE finished_at END
        WHERE sample_number = $1
        """,
        sample_number,
        status,
        error,
    )


async def finish(
    conn: Conn,
    sample_number: int,
    *,
    parent_version_id: int,
    new_version_id: int,
    evolver: str,
    fallback_reason: str | None,
    analysis: dict[str, Any],
) -> None:
    await conn.execute(
        """
        UPDATE evolution_rounds SET status = 'done', finished_at = now(),
            parent_version_id = $2, new_version_id = $3, evolver = $4, fallback_reason = $5,
            analysis = $6
        WHERE sample_number = $1
        """,
        sample_number,
        parent_version_id,
        new_version_id,
        evolver,
        fallback_reason,
        analysis,
    )


async def waiting_rounds(conn: Conn) -> list[int]:
    """Rounds held back by an A/B test or another round, newest first (locked)."""
    rows = await conn.fetch(
        "SELECT sample_number FROM evolution_rounds WHERE status = 'waiting_for_ab_test'"
        " ORDER BY sample_number DESC FOR UPDATE"
    )
    return [int(r["sample_number"]) for r in rows]


async def latest(conn: Conn) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        """
        SELECT r.sample_number, r.status, r.evolver, r.fallback_reason, r.error,
               r.created_at, r.finished_at, v.version AS new_version
        FROM evolution_rounds r LEFT JOIN prompt_versions v ON v.id = r.new_version_id
        ORDER BY r.sample_number DESC LIMIT 1
        """
    )
    return dict(row) if row else None


async def recent_options(conn: Conn, up_to_sample: int, window: int) -> list[RatedOption]:
    """The rated options of the ``window`` samples up to and including ``up_to_sample``."""
    rows = await conn.fetch(
        """
        SELECT e.sample_number, e.id AS experiment_id, p.api, p.option, r.rating, r.comments,
               v.version AS prompt_version, p.parameters
        FROM experiments e
        JOIN parameter_experiments p ON p.experiment_id = e.id
        JOIN enhancement_ratings r ON r.experiment_id = e.id AND r.option = p.option
        JOIN prompt_versions v ON v.id = p.prompt_version_id
        WHERE e.sample_number IS NOT NULL AND e.sample_number <= $1
          AND e.sample_number > $1 - $2
        ORDER BY e.sample_number, p.option
        """,
        up_to_sample,
        window,
    )
    return [
        RatedOption(
            sample_number=r["sample_number"],
            experiment_id=r["experiment_id"],
            api=r["api"],
            option=r["option"],
            rating=int(r["rating"]),
            comments=r["comments"],
            prompt_version=r["prompt_version"],
            parameters=dict(r["parameters"]),
        )
        for r in rows
    ]


async def version_created_between(conn: Conn, sample_number: int) -> str | None:
    """A version created after sample ``n - 1`` was rated and before sample ``n`` was."""
    value = await conn.fetchval(
        """
        SELECT v.version FROM prompt_versions v
        WHERE v.origin <> 'seed'
          AND v.created_at > coalesce(
                (SELECT rated_at FROM experiments WHERE sample_number = $1 - 1), '-infinity')
          AND v.created_at <= (SELECT rated_at FROM experiments WHERE sample_number = $1)
        ORDER BY v.created_at DESC LIMIT 1
        """,
        sample_number,
    )
    return str(value) if value is not None else None
