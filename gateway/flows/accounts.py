"""Trainer accounts and API tokens."""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import Any

import asyncpg
from argon2 import PasswordHasher

from gateway.errors import Conflict, InvalidInput, NotFound
from gateway.repositories import users
from gateway.repositories.users import Role, User

TOKEN_PREFIX = "lat_"  # noqa: S105 (a prefix, not a secret)
_NAME_RE = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")


def hash_token(token: str) -> bytes:
    """Tokens carry 256 bits of randomness, so a plain SHA-256 is a safe lookup key."""
    return hashlib.sha256(token.encode()).digest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


async def create_user(
    pool: asyncpg.Pool[Any],
    name: str,
    role: Role,
    *,
    password: str | None = None,
    label: str | None = "cli",
) -> tuple[User, str]:
    """Create a user and a first API token in one transaction; return the token once."""
    if not _NAME_RE.match(name):
        raise InvalidInput(
            "user name must be 1-64 letters, digits or . _ @ -", code="invalid_user_name"
        )
    if role not in ("trainer", "admin"):
        raise InvalidInput("role must be 'trainer' or 'admin'", code="invalid_role")
    password_hash = hash_password(password) if password is not None else None
    token = new_token()
    async with pool.acquire() as conn, conn.transaction():
        if await users.get_user_by_name(conn, name) is not None:
            raise Conflict(f"user {name!r} already exists", code="user_exists")
        user = await users.insert_user(conn, name, role, password_hash)
        await users.insert_token(conn, user.id, hash_token(token), token[:12], label)
    return user, token


MIN_PASSWORD = 8


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(
            f"a password needs at least {MIN_PASSWORD} characters", code="password_too_short"
        )
    return PasswordHasher().hash(password)


async def set_password(pool: asyncpg.Pool[Any], name: str, password: str) -> None:
    """Set (or reset) a user's browser password."""
    password_hash = hash_password(password)
    async with pool.acquire() as conn:
        done = await conn.execute(
            "UPDATE users SET password_hash = $2 WHERE name = $1", name, password_hash
        )
    if done.split()[-1] == "0":
        raise NotFound(f"no user named {name!r}", code="user_not_found")


async def issue_token(pool: asyncpg.Pool[Any], name: str, *, label: str | None = "cli") -> str:
    """A new API token for an existing user (older tokens stay valid until revoked)."""
    token = new_token()
    async with pool.acquire() as conn, conn.transaction():
        user = await users.get_user_by_name(conn, name)
        if user is None:
            raise NotFound(f"no user named {name!r}", code="user_not_found")
        await users.insert_token(conn, user.id, hash_token(token), token[:12], label)
    return token


async def revoke_user_tokens(pool: asyncpg.Pool[Any], name: str) -> int:
    async with pool.acquire() as conn, conn.transaction():
        user = await users.get_user_by_name(conn, name)
        if user is None:
            raise NotFound(f"no user named {name!r}", code="user_not_found")
        return await users.revoke_tokens(conn, user.id)


async def authenticate_token(pool: asyncpg.Pool[Any], token: str) -> User | None:
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    async with pool.acquire() as conn:
        return await users.find_user_by_token_hash(conn, hash_token(token))


async def list_accounts(pool: asyncpg.Pool[Any]) -> list[User]:
    async with pool.acquire() as conn:
        return await users.list_users(conn)
