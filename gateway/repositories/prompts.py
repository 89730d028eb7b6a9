"""Prompt versions (the database is the source of truth): the current one, the library, new
versions from evolution, promotion, and importing the seed files."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from shared.db.pool import Conn


@dataclass(frozen=True)
class PromptVersion:
    id: int
    version: str
    prompt: str
    negative_prompt: str


async def current(conn: Conn) -> PromptVersion | None:
    row = await conn.fetchrow(
        "SELECT id, version, prompt, negative_prompt FROM prompt_versions WHERE is_current"
    )
    return PromptVersion(**dict(row)) if row else None


async def import_seed_versions(conn: Conn, folder: Path) -> list[str]:
    """Insert the version files not in the database yet; make ``current.json``'s current when
    no version is current. Returns the versions imported."""
    imported: list[str] = []
    files = sorted((folder / "versions").glob("v*.json"))
    for path in files:
        data: dict[str, Any] = json.loads(path.read_text())
        inserted = await conn.fetchval(
            """
            INSERT INTO prompt_versions
                (version, prompt, negative_prompt, parent_version, origin, changes, reasoning,
                 status)
            VALUES ($1, $2, $3, $4, $5, $6, $7, 'candidate')
            ON CONFLICT (version) DO NOTHING RETURNING version
            """,
            data["version"],
            data["prompt"],
            data.get("negative_prompt", ""),
            data.get("parent_version"),
            data.get("origin", "seed"),
            data.get("changes", []),
            data.get("reasoning", ""),
        )
        if inserted:
            imported.append(inserted)
    current_file = folder / "current.json"
    if current_file.exists():
        name = json.loads(current_file.read_text())["current"]
        await conn.execute(
            "UPDATE prompt_versions SET is_current = true, status = 'active'"
            " WHERE version = $1 AND NOT EXISTS (SELECT 1 FROM prompt_versions WHERE is_current)",
            name,
        )
    return imported


_VERSION_RE = re.compile(r"^v(\d+)\.(\d+)\.(\d+)$")
_LIBRARY_COLUMNS = """
    id, version, parent_version, prompt, negative_prompt, origin, changes, reasoning, status,
    is_current, performance_score, usage_count, created_at
"""
Origin = Literal["seed", "llm", "heuristic", "manual"]


async def by_id(conn: Conn, version_id: int) -> PromptVersion:
    row = await conn.fetchrow(
        "SELECT id, version, prompt, negative_prompt FROM prompt_versions WHERE id = $1",
        version_id,
    )
    assert row is not None, version_id
    return PromptVersion(**dict(row))


async def library(conn: Conn) -> list[dict[str, Any]]:
    """Every version, oldest first, as the prompt API shows it."""
    rows = await conn.fetch(
        f"SELECT {_LIBRARY_COLUMNS} FROM prompt_versions ORDER BY created_at, id"
    )
    return [dict(r) for r in rows]


async def find(conn: Conn, version: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        f"SELECT {_LIBRARY_COLUMNS} FROM prompt_versions WHERE version = $1",
        version,
    )
    return dict(row) if row else None


async def create_child(
    conn: Conn,
    parent: PromptVersion,
    *,
    prompt: str,
    negative_prompt: str,
    origin: Origin,
    changes: list[str],
    reasoning: str,
    status: str = "testing",
) -> dict[str, Any]:
    """A new version whose number bumps the parent's patch past every existing sibling.

    v1.0.0's first child is v1.0.1; if v1.0.1 exists already (a rejected sibling, or a version
    evolved from it), the next free patch number of the 1.0 line is taken. A transaction-scoped
    advisory lock makes concurrent creators take turns, so numbers never collide.
    """
    match = _VERSION_RE.match(parent.version)
    assert match, parent.version
    major, minor = int(match[1]), int(match[2])
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('latina:prompt_versions'))")
    highest = await conn.fetchval(
        """
        SELECT max((regexp_match(version, '^v\\d+\\.\\d+\\.(\\d+)$'))[1]::int)
        FROM prompt_versions WHERE version LIKE $1
        """,
        f"v{major}.{minor}.%",
    )
    name = f"v{major}.{minor}.{int(highest or 0) + 1}"
    row = await conn.fetchrow(
        f"""
        INSERT INTO prompt_versions
            (version, prompt, negative_prompt, parent_version, origin, changes, reasoning, status)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        RETURNING {_LIBRARY_COLUMNS}
        """,
        name,
        prompt,
        negative_prompt,
        parent.version,
        origin,
        changes,
        reasoning,
        status,
    )
    assert row is not None
    return dict(row)


async def make_current(conn: Conn, version_id: int) -> str | None:
    """Make ``version_id`` current; the previous current one is retired. Returns its name."""
    previous = await conn.fetchval(
        "UPDATE prompt_versions SET is_current = false, status = 'retired'"
        " WHERE is_current AND id <> $1 RETURNING version",
        version_id,
    )
    await conn.execute(
        "UPDATE prompt_versions SET is_current = true, status = 'active' WHERE id = $1",
        version_id,
    )
    return str(previous) if previous is not None else None


async def set_status(conn: Conn, version_id: int, status: str) -> None:
    await conn.execute(
        "UPDATE prompt_versions SET status = $2 WHERE id = $1 AND NOT is_current",
        version_id,
        status,
    )
