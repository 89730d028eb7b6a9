"""The one way a process gets its database: resolve the DSN, bring the schema up to date."""

from __future__ import annotations

import asyncio
import logging

from shared.db.embedded import resolve_database_url
from shared.db.migrations import apply_migrations
from shared.db.pool import connect
from shared.settings import Settings

log = logging.getLogger("latina.db")


async def database_dsn(settings: Settings, *, migrate: bool | None = None) -> str:
    """``DATABASE_URL`` or the embedded server's DSN; migrated when ``migrate`` (default:
    ``settings.should_migrate_on_start``)."""
    dsn = await asyncio.to_thread(resolve_database_url, settings.database_url, settings.data_dir)
    if settings.should_migrate_on_start if migrate is None else migrate:
        conn = await connect(dsn)
        try:
            report = await apply_migrations(conn)
        finally:
            await conn.close()
        if report.applied:
            log.info("applied migrations", extra={"migrations": report.applied})
    return dsn
