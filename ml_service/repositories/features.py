"""Image features of observations (``ml.observation_features``): the reward model's data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True)
class LabelledFeatures:
    """An observation's image features and what the reward model learns from them."""

    features: list[float]
    group_id: str
    api: str
    parameters: dict[str, Any]
    rating: int


async def labelled_features(conn: Conn, study: str, feature_version: str) -> list[LabelledFeatures]:
    """Every observation of ``study`` with features of ``feature_version``, oldest first."""
    rows = await conn.fetch(
        """
        SELECT f.features, f.group_id, o.api, o.parameters, o.rating
        FROM ml.observation_features f
        JOIN ml.observations o USING (study, observation_id)
        WHERE f.study = $1 AND f.feature_version = $2
        ORDER BY o.id
        """,
        study,
        feature_version,
    )
    return [LabelledFeatures(**dict(r)) for r in rows]
