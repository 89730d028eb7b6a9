"""Suggestions (``ml.suggestions``): handed out (pending until observed) or precomputed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.db.pool import Conn


@dataclass(frozen=True)
class StoredSuggestion:
    id: str
    api: str
    parameters: dict[str, Any]
    strategy: str
    n_observations: int


async def lock_api(conn: Conn, study: str, api: str) -> None:
    """Serialise suggestion work for one (study, api) across processes, until commit."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"ml:{study}:{api}")


async def pending_parameters(
    conn: Conn, study: str, api: str, ttl_seconds: float
) -> list[dict[str, Any]]:
    """Suggestions handed out recently and not observed yet."""
    rows = await conn.fetch(
        """
        SELECT parameters FROM ml.suggestions
        WHERE study = $1 AND api = $2 AND issued_at IS NOT NULL AND observed_at IS NULL
          AND issued_at > now() - make_interval(secs => $3)
        ORDER BY issued_at
        """,
        study,
        api,
        ttl_seconds,
    )
    return [r["parameters"] for r in rows]


async def next_sequence_index(conn: Conn, study: str, api: str) -> int:
    value = await conn.fetchval(
        "SELECT coalesce(max(sequence_index) + 1, 0) FROM ml.suggestions"
        " WHERE study = $1 AND api = $2",
        study,
        api,
    )
    return int(value)


async def unissued(
    conn: Conn, study: str, api: str, oldest: int, limit: int
) -> list[StoredSuggestion]:
    """Precomputed suggestions computed with at least ``oldest`` observations, freshest first,
    locked for this transaction (rows another transaction holds are skipped)."""
    rows = await conn.fetch(
        """
        SELECT id, api, parameters, strategy, n_observations FROM ml.suggestions
        WHERE study = $1 AND api = $2 AND issued_at IS NULL AND n_observations >= $3
        ORDER BY n_observations DESC, created_at, sequence_index
        LIMIT $4
        FOR UPDATE SKIP LOCKED
        """,
        study,
        api,
        oldest,
        limit,
    )
    return [StoredSuggestion(**dict(r)) for r in rows]


async def mark_issued(conn: Conn, suggestion_ids: list[str]) -> None:
    await conn.execute(
        "UPDATE ml.suggestions SET issued_at = now() WHERE id = ANY($1::text[])", suggestion_ids
    )


async def delete_suggestions(conn: Conn, suggestion_ids: list[str]) -> None:
    await conn.execute(
        "DELETE FROM ml.suggestions WHERE id = ANY($1::text[]) AND issued_at IS NULL",
        suggestion_ids,
    )


async def has_precomputed(conn: Conn, study: str, api: str, n_observations: int) -> bool:
    value = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM ml.suggestions WHERE study = $1 AND api = $2"
        " AND issued_at IS NULL AND n_observations = $3)",
        study,
        api,
        n_observations,
    )
    return bool(value)


async def insert_suggestions(
    conn: Conn, study: str, rows: list[tuple[StoredSuggestion, int, bool]]
) -> None:
    """Store suggestions (each with its sequence index, and whether it is issued now)."""
    await conn.executemany(
        """
        INSERT INTO ml.suggestions
            (id, study, api, parameters, strategy, n_observations, sequence_index, issued_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, CASE WHEN $8 THEN now() END)
        """,
        [
            (s.id, study, s.api, s.parameters, s.strategy, s.n_observations, index, issued)
            for s, index, issued in rows
        ],
    )


async def discard_precomputed_before(conn: Conn, study: str, api: str, oldest: int) -> None:
    """Precomputed suggestions for data older than ``oldest`` observations are never handed
    out; drop them."""
    await conn.execute(
        "DELETE FROM ml.suggestions WHERE study = $1 AND api = $2 AND issued_at IS NULL"
        " AND n_observations < $3",
        study,
        api,
        oldest,
    )
