"""Read models of the training data: sample counts, per-API figures, the learning curve."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.db.pool import Conn


@dataclass(frozen=True)
class ApiFigures:
    api: str
    samples: int
    avg_rating: float | None
    best_parameters: dict[str, Any] | None
    best_rating: int | None


@dataclass(frozen=True)
class CurvePoint:
    sample: int
    avg_rating: float
    best_so_far: float


@dataclass(frozen=True)
class PromptSummary:
    version: str
    performance_score: float | None
    usage_count: int


async def count_samples(conn: Conn) -> int:
    value = await conn.fetchval("SELECT count(*) FROM experiments WHERE sample_number IS NOT NULL")
    return int(value)


async def samples_rated(conn: Conn) -> int:
    """The rated samples' counter (one row, updated by every rating): cheaper than counting."""
    value = await conn.fetchval("SELECT samples FROM training_counters WHERE id")
    return int(value or 0)


async def per_api_figures(conn: Conn) -> list[ApiFigures]:
    rows = await conn.fetch(
        """
        SELECT api, count(rating) AS samples, avg(rating)::float8 AS avg_rating,
               (array_agg(parameters ORDER BY rating DESC NULLS LAST, created_at DESC))[1]
                   AS best_parameters,
               max(rating) AS best_rating
        FROM parameter_experiments
        WHERE rating IS NOT NULL
        GROUP BY api ORDER BY api
        """
    )
    return [
        ApiFigures(r["api"], r["samples"], r["avg_rating"], r["best_parameters"], r["best_rating"])
        for r in rows
    ]


async def learning_curve(conn: Conn) -> list[CurvePoint]:
    rows = await conn.fetch(
        """
        SELECT e.sample_number, avg(r.rating)::float8 AS avg_rating, max(r.rating) AS best
        FROM experiments e JOIN enhancement_ratings r ON r.experiment_id = e.id
        WHERE e.sample_number IS NOT NULL
        GROUP BY e.sample_number ORDER BY e.sample_number
        """
    )
    curve: list[CurvePoint] = []
    best = 0.0
    for r in rows:
        best = max(best, float(r["best"]))
        curve.append(CurvePoint(r["sample_number"], round(float(r["avg_rating"]), 3), best))
    return curve


async def current_prompt(conn: Conn) -> PromptSummary | None:
    row = await conn.fetchrow(
        "SELECT version, performance_score, usage_count FROM prompt_versions WHERE is_current"
    )
    if row is None:
        return None
    return PromptSummary(row["version"], row["performance_score"], row["usage_count"])


async def prediction_errors(conn: Conn) -> list[dict[str, Any]]:
    """Active learning: the reward model's prediction for each shown option beside its rating."""
    rows = await conn.fetch(
        """
        SELECT e.sample_number, c.shown_as AS option, c.api, c.predicted_rating, p.rating
        FROM experiment_candidates c
        JOIN experiments e ON e.id = c.experiment_id
        JOIN parameter_experiments p
             ON p.experiment_id = c.experiment_id AND p.option = c.shown_as
        WHERE c.shown_as IS NOT NULL AND c.predicted_rating IS NOT NULL
          AND p.rating IS NOT NULL AND e.sample_number IS NOT NULL
        ORDER BY e.sample_number, c.shown_as
        """
    )
    return [
        {
            "sample": r["sample_number"],
            "option": r["option"],
            "api": r["api"],
            "predicted": round(r["predicted_rating"], 3),
            "actual": r["rating"],
            "error": round(r["rating"] - r["predicted_rating"], 3),
        }
        for r in rows
    ]
