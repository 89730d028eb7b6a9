"""Studies: separate optimizations in one service; deleting one forgets its models."""

from __future__ import annotations

from typing import Any

import asyncpg

from ml_service.errors import Conflict, NotFound
from ml_service.optimizer.suggestion_work import SuggestionWork
from ml_service.repositories import studies as studies_repo
from shared.wire.ml import StudyDeleted


async def delete_study(
    pool: asyncpg.Pool[Any], work: SuggestionWork, study: str, *, force: bool
) -> StudyDeleted:
    if study == "default" and not force:
        raise Conflict(
            "the default study holds the gateway's data; add ?force=true to delete it",
            code="default_study_protected",
        )
    async with pool.acquire() as conn, conn.transaction():
        deleted = await studies_repo.delete_study(conn, study)
    if not deleted:
        raise NotFound(f"no study named {study!r}", code="study_not_found")
    work.optimizer.forget(study)
    work.forget(study)
    return StudyDeleted(deleted=study)
