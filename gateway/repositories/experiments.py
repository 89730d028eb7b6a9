"""Experiments, their images and parameters, and their ratings."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.db.pool import Conn


@dataclass(frozen=True)
class NewImage:
    project_id: str
    image_type: str
    bucket: str
    key: str
    content_type: str
    byte_size: int
    width: int
    height: int
    metadata: dict[str, Any]


@dataclass(frozen=True)
class RenderedOption:
    option: str
    api: str
    provider: str
    image: NewImage
    parameters: dict[str, Any]
    suggestion_id: str | None
    strategy: str


@dataclass(frozen=True)
class OptionRow:
    option: str
    image_id: int
    api: str
    parameters: dict[str, Any]
    suggestion_id: str | None
    rating: int | None


@dataclass(frozen=True)
class ExperimentRow:
    id: str
    project_id: str
    prompt_version_id: int
    prompt_version: str
    sample_number: int | None
    rate_response: dict[str, Any] | None
    created_at: datetime
    created_by: int | None = None


async def insert_image(conn: Conn, image: NewImage, parent_id: int | None, user_id: int) -> int:
    value = await conn.fetchval(
        """
        INSERT INTO images (project_id, image_type, s3_bucket, s3_key, content_type, byte_size,
                            width, height, metadata, parent_image_id, uploaded_by)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id
        """,
        image.project_id,
        image.image_type,
        image.bucket,
        image.key,
        image.content_type,
        image.byte_size,
        image.width,
        image.height,
        image.metadata,
        parent_id,
        user_id,
    )
    return int(value)


async def insert_experiment(
    conn: Conn,
    experiment_id: str,
    project_id: str,
    mode: str,
    original_image_id: int,
    prompt_version_id: int,
    user_id: int,
) -> None:
    await conn.execute(
        """
        INSERT INTO experiments (id, project_id, mode, original_image_id, prompt_version_id,
                                 created_by)
        VALUES ($1, $2, $3, $4, $5, $6)
        """,
        experiment_id,
        project_id,
        mode,
        original_image_id,
        prompt_version_id,
        user_id,
    )


async def insert_option(
    conn: Conn, experiment_id: str, image_id: int, option: RenderedOption, prompt_version_id: int
) -> None:
    p = option.parameters
    await conn.execute(
        """
        INSERT INTO parameter_experiments
            (experiment_id, image_id, option, api, provider, prompt_version_id, parameters,
             init_strength, guidance_scale, controlnet_weight, suggestion_id, strategy)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
        """,
        experiment_id,
        image_id,
        option.option,
        option.api,
        option.provider,
        prompt_version_id,
        p,
        # the documented quick-query columns: each arm's name for strength and structure
        p.get("init_strength", p.get("prompt_strength")),
        p.get("guidance_scale"),
        p.get("controlnet_weight", p.get("controlnet_conditioning_scale")),
        option.suggestion_id,
        option.strategy,
    )


async def lock_experiment(conn: Conn, experiment_id: str) -> ExperimentRow | None:
    row = await conn.fetchrow(
        """
        SELECT e.id, e.project_id, e.prompt_version_id, v.version AS prompt_version,
               e.sample_number, e.rate_response, e.created_at, e.created_by
        FROM experiments e JOIN prompt_versions v ON v.id = e.prompt_version_id
        WHERE e.id = $1
        FOR UPDATE OF e
        """,
        experiment_id,
    )
    return ExperimentRow(**dict(row)) if row else None


async def options_of(conn: Conn, experiment_id: str) -> list[OptionRow]:
    rows = await conn.fetch(
        "SELECT option, image_id, api, parameters, suggestion_id, rating"
        " FROM parameter_experiments WHERE experiment_id = $1 ORDER BY option",
        experiment_id,
    )
    return [OptionRow(**dict(r)) for r in rows]


async def ratings_of(conn: Conn, experiment_id: str) -> dict[str, tuple[int, str]]:
    rows = await conn.fetch(
        "SELECT option, rating, comments FROM enhancement_ratings WHERE experiment_id = $1",
        experiment_id,
    )
    return {r["option"]: (r["rating"], r["comments"]) for r in rows}


async def number_as_rated(conn: Conn, experiment_id: str, user_id: int) -> int:
    """Give the experiment the next sample number and mark it rated, in one statement.

    The counter row's lock makes the numbers 1, 2, 3 ... exactly once each (until rollback); it
    is held until the transaction ends, so concurrent ratings queue on it.
    """
    value = await conn.fetchval(
        """
        WITH n AS (UPDATE training_counters SET samples = samples + 1 WHERE id RETURNING samples)
        UPDATE experiments e SET sample_number = n.samples, rated_at = now(), rated_by = $2
        FROM n WHERE e.id = $1
        RETURNING n.samples
        """,
        experiment_id,
        user_id,
    )
    return int(value)


async def insert_rating(
    conn: Conn,
    experiment_id: str,
    option: OptionRow,
    rating: int,
    comments: str,
    user_id: int,
) -> None:
    await conn.execute(
        """
        INSERT INTO enhancement_ratings (experiment_id, image_id, option, rating, comments,
                                         rated_by)
        VALUES ($1, $2, $3, $4, $5, $6)
        """,
        experiment_id,
        option.image_id,
        option.option,
        rating,
        comments,
        user_id,
    )
    await conn.execute(
        "UPDATE parameter_experiments SET rating = $3 WHERE experiment_id = $1 AND option = $2",
        experiment_id,
        option.option,
        rating,
    )


async def store_rate_response(conn: Conn, experiment_id: str, body: dict[str, Any]) -> None:
    """Replace the stored answer (one of an older shape, recomputed)."""
    await conn.execute(
        "UPDATE experiments SET rate_response = $2 WHERE id = $1", experiment_id, body
    )


async def keep_first_rate_response(
    conn: Conn, experiment_id: str, body: dict[str, Any]
) -> dict[str, Any]:
    """Store ``body`` as the rating's answer unless one is stored already; the stored one."""
    stored: dict[str, Any] = await conn.fetchval(
        """
        UPDATE experiments SET rate_response = coalesce(rate_response, $2)
        WHERE id = $1 RETURNING rate_response
        """,
        experiment_id,
        body,
    )
    return stored


async def rate_response_of(conn: Conn, experiment_id: str) -> dict[str, Any] | None:
    stored: dict[str, Any] | None = await conn.fetchval(
        "SELECT rate_response FROM experiments WHERE id = $1", experiment_id
    )
    return stored


async def add_to_prompt_score(conn: Conn, prompt_version_id: int, ratings: list[int]) -> None:
    """Count one rated sample of the version: ``performance_score`` is the mean rating of its
    options, ``usage_count`` its samples. Running sums in one UPDATE: the row's lock orders
    concurrent ratings of the version, and each adds to the sums the last one left."""
    await conn.execute(
        """
        UPDATE prompt_versions SET
            rating_sum = rating_sum + $2,
            rating_count = rating_count + $3,
            usage_count = usage_count + 1,
            performance_score = (rating_sum + $2)::float8 / (rating_count + $3)
        WHERE id = $1
        """,
        prompt_version_id,
        sum(ratings),
        len(ratings),
    )


async def api_means_over_last(conn: Conn, last: int) -> dict[str, float]:
    """Each API's mean rating over its own ``last`` rated samples."""
    rows = await conn.fetch(
        """
        SELECT api, avg(rating)::float8 AS mean FROM (
            SELECT p.api, p.rating,
                   row_number() OVER (PARTITION BY p.api ORDER BY e.sample_number DESC) AS n
            FROM parameter_experiments p JOIN experiments e ON e.id = p.experiment_id
            WHERE p.rating IS NOT NULL AND e.sample_number IS NOT NULL) recent
        WHERE n <= $1 GROUP BY api
        """,
        last,
    )
    return {r["api"]: float(r["mean"]) for r in rows}


async def image_keys(conn: Conn, experiment_id: str) -> dict[str, tuple[str, str]]:
    """Where the experiment's images are: option -> (bucket, key), and "original"."""
    rows = await conn.fetch(
        """
        SELECT p.option, i.s3_bucket, i.s3_key
        FROM parameter_experiments p JOIN images i ON i.id = p.image_id
        WHERE p.experiment_id = $1
        UNION ALL
        SELECT 'original', i.s3_bucket, i.s3_key
        FROM experiments e JOIN images i ON i.id = e.original_image_id
        WHERE e.id = $1
        """,
        experiment_id,
    )
    return {r["option"]: (r["s3_bucket"], r["s3_key"]) for r in rows}


async def insert_candidate(
    conn: Conn,
    experiment_id: str,
    *,
    api: str,
    parameters: dict[str, Any],
    suggestion_id: str | None,
    predicted: float | None,
    uncertainty: float | None,
    shown_as: str | None,
    error: str | None,
) -> None:
    """One active-learning candidate and what the reward model predicted for it."""
    await conn.execute(
        """
        INSERT INTO experiment_candidates (experiment_id, api, parameters, suggestion_id,
            predicted_rating, uncertainty, shown_as, error)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        """,
        experiment_id,
        api,
        parameters,
        suggestion_id,
        predicted,
        uncertainty,
        shown_as,
        error,
    )
