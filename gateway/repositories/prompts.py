"""Prompt versions: the current one, and importing the seed files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.db.pool import Conn

PROMPTS_DIR = Path(__file__).resolve().parents[2] / "prompts"


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


async def import_seed_versions(conn: Conn, folder: Path = PROMPTS_DIR) -> list[str]:
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
