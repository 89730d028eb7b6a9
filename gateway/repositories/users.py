"""Users and their API tokens. Only a SHA-256 of a token is ever stored."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import asyncpg

from shared.db.pool import Conn

Role = Literal["trainer", "admin"]


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: Role
    created_at: datetime
    disabled: bool = False
    session_epoch: int = 0  # a browser session issued under another epoch has ended

    def has_role(self, role: Role) -> bool:
        """Admins can do everything trainers can."""
        return self.role == "admin" or self.role == role


def _user(row: asyncpg.Record) -> User:
    return User(
        id=row["id"],
        name=row["name"],
        role=row["role"],
        created_at=row["created_at"],
        disabled=row["disabled_at"] is not None,
        session_epoch=row["session_epoch"],
    )


async def insert_user(conn: Conn, name: str, role: Role, password_hash: str | None) -> User:
    row = await conn.fetchrow(
        "INSERT INTO users (name, role, password_hash) VALUES ($1, $2, $3)"
        " RETURNING id, name, role, created_at, disabled_at, session_epoch",
        name,
        role,
        password_hash,
    )
    assert row is not None
    return _user(row)


async def get_user_by_name(conn: Conn, name: str) -> User | None:
    row = await conn.fetchrow(
        "SELECT id, name, role, created_at, disabled_at, session_epoch FROM users WHERE name = $1",
        name,
    )
    return _user(row) if row else None


async def list_users(conn: Conn) -> list[User]:
    rows = await conn.fetch(
        "SELECT id, name, role, created_at, disabled_at, session_epoch FROM users ORDER BY id"
    )
    return [_user(r) for r in rows]


async def count_users(conn: Conn) -> int:
    value = await conn.fetchval("SELECT count(*) FROM users")
    return int(value)


async def insert_token(
    conn: Conn, user_id: int, token_hash: bytes, prefix: str, label: str | None
) -> int:
    token_id = await conn.fetchval(
        "INSERT INTO api_tokens (user_id, token_hash, token_prefix, label)"
        " VALUES ($1, $2, $3, $4) RETURNING id",
        user_id,
        token_hash,
        prefix,
        label,
    )
    return int(token_id)


LAST_USED_EVERY_SECONDS = 60.0  # a token's last_used_at is written at most this often


async def find_user_by_token_hash(conn: Conn, token_hash: bytes) -> User | None:
    """The active user holding an unrevoked token with this hash; marks the token used (to the
    minute: a request that finds it marked within the last minute writes nothing, so every
    authenticated request is not also a write and a WAL flush)."""
    row = await conn.fetchrow(
        """
        WITH found AS (
            SELECT t.id AS token_id, t.last_used_at, u.id, u.name, u.role, u.created_at,
                   u.disabled_at, u.session_epoch
            FROM api_tokens t JOIN users u ON u.id = t.user_id
            WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND u.disabled_at IS NULL
        ), touched AS (
            UPDATE api_tokens SET last_used_at = now()
            WHERE id IN (
                SELECT token_id FROM found
                WHERE last_used_at IS NULL
                   OR last_used_at < now() - make_interval(secs => $2))
        )
        SELECT id, name, role, created_at, disabled_at, session_epoch FROM found
        """,
        token_hash,
        LAST_USED_EVERY_SECONDS,
    )
    return _user(row) if row else None


async def revoke_tokens(conn: Conn, user_id: int) -> int:
    result = await conn.execute(
        "UPDATE api_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL",
        user_id,
    )
    return int(result.split()[-1])


async def get_user_by_id(conn: Conn, user_id: int) -> User | None:
    row = await conn.fetchrow(
        "SELECT id, name, role, created_at, disabled_at, session_epoch FROM users WHERE id = $1",
        user_id,
    )
    return _user(row) if row else None


async def set_password_hash(conn: Conn, name: str, password_hash: str) -> bool:
    """Whether a user of that name was there to update; every session issued before ends."""
    done = await conn.execute(
        "UPDATE users SET password_hash = $2, session_epoch = session_epoch + 1 WHERE name = $1",
        name,
        password_hash,
    )
    return str(done).split()[-1] != "0"


async def end_sessions(conn: Conn, user_id: int) -> None:
    """End every browser session of the user issued so far."""
    await conn.execute("UPDATE users SET session_epoch = session_epoch + 1 WHERE id = $1", user_id)


async def set_disabled(conn: Conn, name: str, disabled: bool) -> bool:
    """Disable (tokens, sessions and logins refused; sessions end) or enable a user; whether
    one of that name was there."""
    done = await conn.execute(
        """
        UPDATE users SET disabled_at = CASE WHEN $2 THEN coalesce(disabled_at, now()) END,
                         session_epoch = session_epoch + CASE WHEN $2 THEN 1 ELSE 0 END
        WHERE name = $1
        """,
        name,
        disabled,
    )
    return str(done).split()[-1] != "0"


async def password_hash_of(conn: Conn, name: str) -> tuple[User, str | None] | None:
    row = await conn.fetchrow(
        "SELECT id, name, role, created_at, disabled_at, session_epoch, password_hash"
        " FROM users WHERE name = $1",
        name,
    )
    return (_user(row), row["password_hash"]) if row else None


async def reserve_login_attempt(
    conn: Conn, name: str, client: str, window_seconds: float, max_failures: int
) -> int | None:
    """Count this attempt as a failure before the password is checked, unless the account or
    the client already failed ``max_failures`` times in the window (then None). Inside the
    caller's transaction, under advisory locks on the account and the client (taken in that
    order), so concurrent attempts count one after another and cannot pass the limit together.
    ``mark_login_succeeded`` turns the reservation into a success."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtext('login-name:' || $1)),"
        " pg_advisory_xact_lock(hashtext('login-client:' || $2))",
        name[:200],
        client,
    )
    if await recent_failures(conn, name, client, window_seconds) >= max_failures:
        return None
    attempt: int = await conn.fetchval(
        "INSERT INTO login_attempts (name, client, succeeded) VALUES ($1, $2, false) RETURNING id",
        name[:200],
        client,
    )
    return attempt


async def mark_login_succeeded(conn: Conn, attempt_id: int) -> None:
    await conn.execute("UPDATE login_attempts SET succeeded = true WHERE id = $1", attempt_id)


async def recent_failures(conn: Conn, name: str, client: str, window_seconds: float) -> int:
    """The larger of the failed attempts for this account and from this client in the window."""
    value = await conn.fetchval(
        """
        SELECT greatest(
            (SELECT count(*) FROM login_attempts WHERE NOT succeeded AND name = $1
                AND at > now() - make_interval(secs => $3)),
            (SELECT count(*) FROM login_attempts WHERE NOT succeeded AND client = $2
                AND at > now() - make_interval(secs => $3)))
        """,
        name[:200],
        client,
        window_seconds,
    )
    return int(value)
