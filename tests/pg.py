"""A real PostgreSQL for the test session: ``TEST_DATABASE_URL`` when set, else embedded.

Migrations are applied once to a template database; each test gets a fresh database cloned
from it (``CREATE DATABASE ... TEMPLATE``), so tests never see each other's rows.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from shared.db.embedded import embedded_server
from shared.db.migrations import apply_migrations
from shared.db.pool import connect


def with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


def database_name(dsn: str) -> str:
    return urlsplit(dsn).path.lstrip("/")


def admin_dsn() -> Iterator[str]:
    """Yield a DSN of a role allowed to create databases, for the whole session."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    folder = Path(tempfile.mkdtemp(prefix="latina-test-pg-"))
    server = embedded_server(folder, cleanup_mode="delete")
    try:
        yield str(server.get_uri("postgres"))
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


async def create_template(admin: str) -> str:
    name = await create_empty_database(admin, "latina_tpl")
    migrated = await connect(with_database(admin, name))
    try:
        await apply_migrations(migrated)
    finally:
        await migrated.close()
    return name


async def create_empty_database(admin: str, prefix: str = "latina_e") -> str:
    """A database with no schema at all (what a first deploy's migration starts from)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def create_database(admin: str, template: str) -> str:
    name = f"latina_t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await conn.close()
    return name


async def drop_database(admin: str, name: str) -> None:
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
