"""Studies (``ml.studies``): each holds its own observations, suggestions and models."""

from __future__ import annotations

from shared.db.pool import Conn


async def ensure_study(conn: Conn, study: str) -> None:
    await conn.execute(
        "INSERT INTO ml.studies (name) VALUES ($1) ON CONFLICT (name) DO NOTHING", study
    )


async def delete_study(conn: Conn, study: str) -> bool:
    result = await conn.execute("DELETE FROM ml.studies WHERE name = $1", study)
    return result != "DELETE 0"
