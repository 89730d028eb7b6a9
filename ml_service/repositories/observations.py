"""Observations (``ml.observations``): the ratings the optimizer learns from, never lost."""

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
