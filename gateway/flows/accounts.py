"""Trainer accounts and API tokens."""

from __future__ import annotations

import hashlib
import re
import secrets

from argon2 import PasswordHasher

from gateway.errors import Conflict, InvalidInput, NotFound
from gateway.flows.unit_of_work import UnitOfWorkFactory
from gateway.repositories.users import Role, User

TOKEN_PREFIX = "lat_"  # noqa: S105 (a prefix, not a secret)
_NAME_RE = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")


def hash_token(token: str) -> bytes:
    """Tokens carry 256 bits of randomness, so a plain SHA-256 is a safe lookup key."""
    return hashlib.sha256(token.encode()).digest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


async def create_user(
    uows: UnitOfWorkFactory,
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
    async with uows() as uow:
        if await uow.users.get_user_by_name(name) is not None:
            raise Conflict(f"user {name!r} already exists", code="user_exists")
        user = await uow.users.insert_user(name, role, password_hash)
        await uow.users.insert_token(user.id, hash_token(token), token[:12], label)
    return user, token


MIN_PASSWORD = 8


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(
            f"a password needs at least {MIN_PASSWORD} characters", code="password_too_short"
        )
    return PasswordHasher().hash(password)


async def set_password(uows: UnitOfWorkFactory, name: str, password: str) -> None:
    """Set (or reset) a user's browser password."""
    password_hash = hash_password(password)
    async with uows() as uow:
        found = await uow.users.set_password_hash(name, password_hash)
    if not found:
        raise NotFound(f"no user named {name!r}", code="user_not_found")


async def issue_token(uows: UnitOfWorkFactory, name: str, *, label: str | None = "cli") -> str:
    """A new API token for an existing user (older tokens stay valid until revoked)."""
    token = new_token()
    async with uows() as uow:
        user = await uow.users.get_user_by_name(name)
        if user is None:
            raise NotFound(f"no user named {name!r}", code="user_not_found")
        await uow.users.insert_token(user.id, hash_token(token), token[:12], label)
    return token


async def revoke_user_tokens(uows: UnitOfWorkFactory, name: str) -> int:
    async with uows() as uow:
        user = await uow.users.get_user_by_name(name)
        if user is None:
            raise NotFound(f"no user named {name!r}", code="user_not_found")
        return await uow.users.revoke_tokens(user.id)


async def disable_user(uows: UnitOfWorkFactory, name: str) -> None:
    """Cut a user off everywhere: API tokens, browser sessions already issued, new logins."""
    async with uows() as uow:
        found = await uow.users.set_disabled(name, True)
    if not found:
        raise NotFound(f"no user named {name!r}", code="user_not_found")


async def enable_user(uows: UnitOfWorkFactory, name: str) -> None:
    """Let a disabled user back in (their tokens work again; sessions need a new login)."""
    async with uows() as uow:
        found = await uow.users.set_disabled(name, False)
    if not found:
        raise NotFound(f"no user named {name!r}", code="user_not_found")


async def authenticate_token(uows: UnitOfWorkFactory, token: str) -> User | None:
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    async with uows.read() as uow:
        return await uow.users.find_user_by_token_hash(hash_token(token))


async def list_accounts(uows: UnitOfWorkFactory) -> list[User]:
    async with uows.read() as uow:
        return await uow.users.list_users()
