"""Image features of observations (``ml.observation_features``): the reward model's data."""

from __future__ import annotations

from shared.db.pool import Conn


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
