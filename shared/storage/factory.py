"""Build the configured ``ObjectStore`` for the lifetime of an app."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from shared.settings import Settings
from shared.storage.base import ObjectStore
from shared.storage.local import LocalObjectStore
from shared.storage.s3 import S3ObjectStore


@contextlib.asynccontextmanager
async def open_object_store(settings: Settings) -> AsyncIterator[ObjectStore]:
    """Open the store ``settings.object_store`` names and close it when the block exits.

    Args:
        settings: The process settings; only the object-storage fields are read.

    Yields:
        A ``LocalObjectStore`` under ``<data dir>/objects`` or an ``S3ObjectStore``. With
        ``s3_create_buckets`` the uploads and enhanced-images buckets exist once it is yielded.
    """
    if settings.object_store == "local":
        yield LocalObjectStore(
            settings.data_dir / "objects",
            settings.latina_secret_key.encode(),
            base_url=(settings.public_base_url or "").rstrip("/"),
        )
        return
    # Credentials come from boto's chain (environment, profile, instance role), never settings.
    buckets = (settings.s3_uploads_bucket, settings.s3_enhanced_bucket)
    async with S3ObjectStore.open(
        endpoint_url=settings.s3_endpoint_url, region=settings.s3_region, ping_buckets=buckets
    ) as store:
        if settings.s3_create_buckets:
            await store.ensure_buckets(*buckets)
        yield store
