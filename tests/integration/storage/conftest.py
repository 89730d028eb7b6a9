"""Storage-test fixtures over the session's real S3 server (``tests/s3_server.py``)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from shared.storage import S3ObjectStore
from tests.s3_server import REGION, S3Server, free_ports

# Re-exported for the storage tests, which import them from here.
__all__ = ["REGION", "S3Server", "free_ports"]


@pytest.fixture
async def s3_store(s3_server: S3Server) -> AsyncIterator[S3ObjectStore]:
    async with S3ObjectStore.open(
        endpoint_url=s3_server.endpoint_url,
        region=REGION,
        access_key_id=s3_server.access_key_id,
        secret_access_key=s3_server.secret_access_key,
    ) as store:
        yield store


@pytest.fixture
async def s3_bucket(s3_store: S3ObjectStore) -> str:
    """A bucket created for this test alone."""
    name = f"latina-t-{uuid.uuid4().hex[:16]}"
    await s3_store.ensure_buckets(name)
    return name
