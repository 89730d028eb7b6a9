"""Whether the database answers (the readiness probe)."""

from __future__ import annotations

from shared.db.pool import Conn


async def ping(conn: Conn) -> None:
    """One round trip; raises when the database does not answer."""
    await conn.fetchval("SELECT 1")
