"""Reward-model versions (``ml.reward_models``): where each one's bytes are, and which one is
current per study."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.db.pool import Conn


@dataclass(frozen=True)
class RewardModelVersion:
    version: str
    object_key: str
    n_samples: int
    metrics: dict[str, Any]
    trained_at: datetime


async def current_version(conn: Conn, study: str) -> RewardModelVersion | None:
    row = await conn.fetchrow(
        "SELECT version, object_key, n_samples, metrics, trained_at FROM ml.reward_models"
        " WHERE study = $1 AND is_current",
        study,
    )
    return None if row is None else RewardModelVersion(**dict(row))


async def make_current(
    conn: Conn,
    study: str,
    version: str,
    object_key: str,
    n_samples: int,
    metrics: dict[str, Any],
) -> None:
    """Record a trained version as the study's current one (in the caller's transaction: the
    previous one stops being current in the same commit)."""
    await conn.execute(
        "UPDATE ml.reward_models SET is_current = false WHERE study = $1 AND is_current", study
    )
    await conn.execute(
        """
        INSERT INTO ml.reward_models
            (study, version, object_key, n_samples, metrics, is_current)
        VALUES ($1, $2, $3, $4, $5, true)
        ON CONFLICT (study, version) DO UPDATE SET is_current = true, trained_at = now()
        """,
        study,
        version,
        object_key,
        n_samples,
        metrics,
    )
