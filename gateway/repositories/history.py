"""Read model of the history page."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from shared.db.pool import Conn


async def page(
    conn: Conn,
    *,
    limit: int,
    after: tuple[datetime, str] | None,
    project_id: str | None,
    trainer: str | None = None,
    min_rating: int | None = None,
    max_rating: int | None = None,
) -> list[asyncpg.Record]:
    """Newest first; ``trainer`` matches who uploaded or rated; a rating bound matches an
    experiment when any of its options was rated within it."""
    return list(
        await conn.fetch(
            """
        SELECT e.id, e.project_id, e.mode, e.created_at, e.sample_number, e.rated_at,
               e.original_image_id, v.version AS prompt_version,
               cu.name AS created_by, ru.name AS rated_by,
               o.s3_bucket AS o_bucket, o.s3_key AS o_key
        FROM experiments e
        JOIN prompt_versions v ON v.id = e.prompt_version_id
        JOIN images o ON o.id = e.original_image_id
        LEFT JOIN users cu ON cu.id = e.created_by
        LEFT JOIN users ru ON ru.id = e.rated_by
        WHERE ($2::text IS NULL OR e.project_id = $2)
          AND ($3::timestamptz IS NULL OR (e.created_at, e.id) < ($3, $4))
          AND ($5::text IS NULL OR ru.name = $5 OR cu.name = $5)
          AND ($6::int IS NULL AND $7::int IS NULL OR EXISTS (
                SELECT 1 FROM parameter_experiments p
                WHERE p.experiment_id = e.id AND p.rating IS NOT NULL
                  AND p.rating >= coalesce($6::int, 1) AND p.rating <= coalesce($7::int, 5)))
        ORDER BY e.created_at DESC, e.id DESC
        LIMIT $1
        """,
            limit,
            project_id,
            after[0] if after else None,
            after[1] if after else None,
            trainer,
            min_rating,
            max_rating,
        )
    )


async def options_for(conn: Conn, experiment_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    rows = await conn.fetch(
        """
        SELECT p.experiment_id, p.option, p.api, p.provider, p.image_id, p.parameters,
               p.strategy, r.rating, coalesce(r.comments, '') AS comments,
               i.s3_bucket, i.s3_key
        FROM parameter_experiments p
        JOIN images i ON i.id = p.image_id
        LEFT JOIN enhancement_ratings r
               ON r.experiment_id = p.experiment_id AND r.option = p.option
        WHERE p.experiment_id = ANY($1::text[])
        ORDER BY p.option
        """,
        experiment_ids,
    )
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["experiment_id"], []).append(dict(r))
    return out
