"""Forward-only numbered SQL migrations, recorded in ``schema_migrations``.

Files are named ``NNNN_description.sql``. Each is applied in its own transaction together with
its row in ``schema_migrations``; an advisory lock serialises concurrent runners (two gateways
starting at once), so re-running is a no-op and never applies a file twice. A file whose
content changed after it was applied is reported, not re-applied.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

# Sets of migrations: the gateway's own and the ML service's (its own schema).
MIGRATIONS_ROOT = Path(__file__).resolve().parents[2] / "infra" / "migrations"
GATEWAY_MIGRATIONS = MIGRATIONS_ROOT / "gateway"
ML_MIGRATIONS = MIGRATIONS_ROOT / "ml"
ALL_SETS: dict[str, Path] = {"gateway": GATEWAY_MIGRATIONS, "ml": ML_MIGRATIONS}

_NAME_RE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_LOCK_KEY = 0x1A71_4A00  # arbitrary, constant: the advisory lock for migrations


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    component: str
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True)
class MigrationReport:
    applied: list[str]
    already_applied: int
    changed: list[str]


def load_migrations(component: str, folder: Path) -> list[Migration]:
    migrations: list[Migration] = []
    seen: set[int] = set()
    for path in sorted(folder.glob("*.sql")):
        match = _NAME_RE.match(path.name)
        if not match:
            raise MigrationError(f"migration file name must be NNNN_name.sql: {path.name}")
        version = int(match.group(1))
        if version in seen:
            raise MigrationError(f"two {component} migrations share number {version:04d}")
        seen.add(version)
        migrations.append(Migration(component, version, path.name, path.read_text()))
    return migrations


_BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    component   text        NOT NULL,
    version     integer     NOT NULL,
    name        text        NOT NULL,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (component, version)
)
"""


async def apply_migrations(
    conn: asyncpg.Connection[Any], sets: dict[str, Path] | None = None
) -> MigrationReport:
    """Apply every pending migration of ``sets`` (default: all) in order."""
    sets = ALL_SETS if sets is None else sets
    applied: list[str] = []
    changed: list[str] = []
    already = 0
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(_BOOTSTRAP)
        for component, folder in sets.items():
            rows = await conn.fetch(
                "SELECT version, checksum FROM schema_migrations WHERE component = $1", component
            )
            done = {r["version"]: r["checksum"] for r in rows}
            for migration in load_migrations(component, folder):
                if migration.version in done:
                    already += 1
                    if done[migration.version] != migration.checksum:
                        changed.append(f"{component}/{migration.name}")
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (component, version, name, checksum)"
                        " VALUES ($1, $2, $3, $4)",
                        component,
                        migration.version,
                        migration.name,
                        migration.checksum,
                    )
                applied.append(f"{component}/{migration.name}")
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return MigrationReport(applied=applied, already_applied=already, changed=changed)
