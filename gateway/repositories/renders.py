"""The render requests ledger (``render_requests``): what the per-user limits count."""

from __future__ import annotations

from gateway.domain.limits import RenderUsage
from shared.db.pool import Conn


async def usage_of(conn: Conn, user_id: int) -> RenderUsage:
    """The user's usage, under a transaction-level advisory lock on the user: concurrent
    requests of one user are counted one after another (then ``record``, same transaction)."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('renders:' || $1::bigint))", user_id)
    rows = await conn.fetch(
        """
        SELECT extract(epoch FROM now() - at)::float8 AS age, paid_calls
        FROM render_requests
        WHERE user_id = $1 AND at > now() - interval '1 day'
        ORDER BY at
        """,
        user_id,
    )
    recent = [r["age"] for r in rows if r["age"] < 60.0]
    return RenderUsage(
        last_minute=len(recent),
        oldest_in_minute_age=max(recent) if recent else None,
        paid_by_age=[(r["age"], r["paid_calls"]) for r in rows if r["paid_calls"]],
    )


async def record(conn: Conn, user_id: int, paid_calls: int) -> None:
    await conn.execute(
        "INSERT INTO render_requests (user_id, paid_calls) VALUES ($1, $2)", user_id, paid_calls
    )
