"""The prompt library exported to an S3 prefix (``PROMPT_EXPORT=s3``), on the real S3 server."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import jsonschema
import pytest

from gateway.adapters.prompt_export import PROMPTS_DIR, ObjectStoreSink, PromptExporter
from shared.settings import Settings
from shared.storage import S3ObjectStore
from tests.integration.storage.conftest import REGION, S3Server

SCHEMA = json.loads((PROMPTS_DIR / "schema.json").read_text())


async def test_versions_current_and_experiments_land_under_the_prefix(
    s3_store: S3ObjectStore, s3_bucket: str
) -> None:
    exporter = PromptExporter(ObjectStoreSink(s3_store, s3_bucket, "library/prompts/"))
    row = {
        "version": "v1.0.1",
        "parent_version": "v1.0.0",
        "origin": "heuristic",
        "prompt": "interior photograph, soft natural window light",
        "negative_prompt": "3d render",
        "changes": ["prompt: added 'soft natural window light'"],
        "reasoning": "lighting looked artificial in 4 comments",
        "created_at": datetime(2026, 11, 26, 12, 0, tzinfo=UTC),
        "performance_score": 3.5,
        "usage_count": 4,
    }
    await exporter.version(row)
    await exporter.current("v1.0.1")
    await exporter.experiment({"id": 7, "old": "v1.0.0", "new": "v1.0.1", "winner": "v1.0.1"})
    version = json.loads(await s3_store.get(s3_bucket, "library/prompts/versions/v1.0.1.json"))
    jsonschema.validate(version, SCHEMA)
    assert version["prompt"] == row["prompt"] and version["created_at"].startswith("2026-11-26")
    current = json.loads(await s3_store.get(s3_bucket, "library/prompts/current.json"))
    assert current == {"current": "v1.0.1"}
    record = json.loads(
        await s3_store.get(s3_bucket, "library/prompts/experiments/experiment_007.json")
    )
    assert record["winner"] == "v1.0.1"


async def test_a_refused_write_is_logged_not_raised(
    s3_server: S3Server, s3_bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with S3ObjectStore.open(
        endpoint_url=s3_server.endpoint_url,
        region=REGION,
        access_key_id=s3_server.access_key_id,
        secret_access_key="not-the-secret",
    ) as refused:
        exporter = PromptExporter(ObjectStoreSink(refused, s3_bucket, "p/"))
        with caplog.at_level(logging.ERROR, logger="latina.prompts.export"):
            await exporter.current("v1.0.0")  # the database stays the source of truth
    failed = [r for r in caplog.records if r.getMessage() == "prompt library export failed"]
    assert len(failed) == 1 and getattr(failed[0], "file", None) == "current.json"


def test_settings_choose_the_sink(tmp_path: object) -> None:
    s3 = PromptExporter.from_settings(
        Settings(prompt_export="s3", prompt_export_prefix="x/"),
        store=None,  # type: ignore[arg-type]
    )
    assert isinstance(s3.sink, ObjectStoreSink) and s3.sink.prefix == "x/"
    assert s3.sink.bucket == Settings().s3_uploads_bucket
    assert PromptExporter.from_settings(Settings(prompt_export="none"), store=None).sink is None  # type: ignore[arg-type]
