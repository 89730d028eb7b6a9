"""Exports of the prompt library: ``versions/vX.Y.Z.json``, ``current.json`` and
``experiments/experiment_NNN.json``, to a local folder or an S3 prefix (``PROMPT_EXPORT``).

The database stays the source of truth: exports run after the transaction that changed it, and
a failed export is logged and repaired at gateway start-up (``gateway.flows.prompts``), never
raised into the request that caused it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from shared.settings import Settings
from shared.storage import ObjectStore

log = logging.getLogger("latina.prompts.export")

# The project's prompt library: the seed versions, the schema, the evolution system prompt, and
# where exports go unless PROMPT_EXPORT_DIR says otherwise.
PROMPTS_DIR = Path(__file__).resolve().parents[2] / "prompts"

VERSION_FIELDS = (
    "version",
    "parent_version",
    "origin",
    "prompt",
    "negative_prompt",
    "changes",
    "reasoning",
    "created_at",
)


class Sink(Protocol):
    async def write(self, relative: str, data: bytes) -> None: ...


class FolderSink:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def write(self, relative: str, data: bytes) -> None:
        await asyncio.to_thread(self._write, relative, data)

    def _write(self, relative: str, data: bytes) -> None:
        path = self.folder / relative
        if path.is_file() and path.read_bytes() == data:
            return  # unchanged: leave the file (and a checkout's status) alone
        path.parent.mkdir(parents=True, exist_ok=True)
        # write-then-rename: a reader never sees half a file
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            Path(tmp).replace(path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class ObjectStoreSink:
    def __init__(self, store: ObjectStore, bucket: str, prefix: str) -> None:
        self.store, self.bucket, self.prefix = store, bucket, prefix

    async def write(self, relative: str, data: bytes) -> None:
        await self.store.put(self.bucket, self.prefix + relative, data, "application/json")


def version_document(row: dict[str, Any]) -> dict[str, Any]:
    """A version row as its file holds it (validates against ``prompts/schema.json``).

    Only what never changes: scores and usage live in the database and the API."""
    doc = {key: row.get(key) for key in VERSION_FIELDS}
    doc["changes"] = list(doc["changes"] or [])
    created = doc["created_at"]
    doc["created_at"] = created.isoformat() if isinstance(created, datetime) else created
    return doc


def experiment_file(ab_test_id: int) -> str:
    return f"experiments/experiment_{ab_test_id:03d}.json"


def _dump(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode()


class PromptExporter:
    """Writes library files through a sink; every method swallows and logs its failures."""

    def __init__(self, sink: Sink | None) -> None:
        self.sink = sink

    @classmethod
    def from_settings(cls, settings: Settings, store: ObjectStore) -> PromptExporter:
        if settings.prompt_export == "none":
            return cls(None)
        if settings.prompt_export == "s3":
            bucket = settings.prompt_export_bucket or settings.s3_uploads_bucket
            return cls(ObjectStoreSink(store, bucket, settings.prompt_export_prefix))
        return cls(FolderSink(settings.prompt_export_dir or PROMPTS_DIR))

    @property
    def enabled(self) -> bool:
        return self.sink is not None

    async def _write(self, relative: str, data: dict[str, Any]) -> None:
        if self.sink is None:
            return
        try:
            await self.sink.write(relative, _dump(data))
        except Exception:
            log.exception("prompt library export failed", extra={"file": relative})

    async def version(self, row: dict[str, Any]) -> None:
        await self._write(f"versions/{row['version']}.json", version_document(row))

    async def current(self, version: str) -> None:
        await self._write("current.json", {"current": version})

    async def experiment(self, record: dict[str, Any]) -> None:
        await self._write(experiment_file(record["id"]), record)
