"""The ML service's data in PostgreSQL (schema ``ml``): studies, observations, suggestions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.db.pool import Conn


@dataclass(frozen=True)
class Observation:
    observation_id: str
    suggestion_id: str | None
    api: str
    parameters: dict[str, Any]
    rating: int
    prompt_version: str | None


@dataclass(frozen=True)
class StoredSuggestion:
    id: str
    api: str
    parameters: dict[str, Any]
    strategy: str
    n_observations: int


async def ensure_study(conn: Conn, study: str) -> None:
    await conn.execute(
        "INSERT INTO ml.studies (name) VALUES ($1) ON CONFLICT (name) DO NOTHING", study
    )


async def delete_study(conn: Conn, study: str) -> bool:
    result = await conn.execute("DELETE FROM ml.studies WHERE name = $1", study)
    return result != "DELETE 0"


async def lock_api(conn: Conn, study: str, api: str) -> None:
    """Serialise suggestion work for one (study, api) across processes, until commit."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"ml:{study}:{api}")


async def insert_observations(
    conn: Conn, study: str, observations: list[Observation]
) -> list[Observation]:
    """Insert new observations; return the stored rows of the ones that already existed."""
    existing: list[Observation] = []
    for obs in observations:
        inserted = await conn.fetchval(
            """
            INSERT INTO ml.observations
                (study, observation_id, suggestion_id, api, parameters, rating, prompt_version)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
            ON CONFLICT (study, observation_id) DO NOTHING
            RETURNING id
            """,
            study,
            obs.observation_id,
            obs.suggestion_id,
            obs.api,
            obs.parameters,
            obs.rating,
            obs.prompt_version,
        )
        if inserted is None:
            row = await conn.fetchrow(
                "SELECT observation_id, suggestion_id, api, parameters, rating, prompt_version"
                " FROM ml.observations WHERE study = $1 AND observation_id = $2",
                study,
                obs.observation_id,
            )
            assert row is not None
            existing.append(Observation(**dict(row)))
        elif obs.suggestion_id:
            await conn.execute(
                "UPDATE ml.suggestions SET observed_at = now()"
                " WHERE id = $1 AND study = $2 AND observed_at IS NULL",
                obs.suggestion_id,
                study,
            )
    return existing


async def load_observations(conn: Conn, study: str, api: str) -> list[tuple[dict[str, Any], int]]:
    rows = await conn.fetch(
        "SELECT parameters, rating FROM ml.observations WHERE study = $1 AND api = $2 ORDER BY id",
        study,
        api,
    )
    return [(r["parameters"], r["rating"]) for r in rows]


async def count_observations(conn: Conn, study: str) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT api, count(*) AS n FROM ml.observations WHERE study = $1 GROUP BY api", study
    )
    return {r["api"]: int(r["n"]) for r in rows}


async def total_observations(conn: Conn) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM ml.observations"))


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


async def insert_features(
    conn: Conn,
    study: str,
    observation_id: str,
    group_id: str,
    feature_version: str,
    vector: list[float],
) -> None:
    """The image features of an observation (a repeat keeps the first)."""
    await conn.execute(
        """
        INSERT INTO ml.observation_features
            (study, observation_id, group_id, feature_version, features)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (study, observation_id) DO NOTHING
        """,
        study,
        observation_id,
        group_id,
        feature_version,
        vector,
    )


async def count_features(conn: Conn, study: str, feature_version: str) -> int:
    value = await conn.fetchval(
        "SELECT count(*) FROM ml.observation_features WHERE study = $1 AND feature_version = $2",
        study,
        feature_version,
    )
    return int(value)
