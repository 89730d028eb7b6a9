"""S3ObjectStore's request shapes against moto, which accepts any signature.

Signature, expiry and presigned-URL checks need a server that enforces them; those tests live
in tests/integration/storage and run against SeaweedFS.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from shared.errors import ObjectNotFound
from shared.settings import Settings
from shared.storage import S3ObjectStore, open_object_store
from tests import moto

KEY = "exports/2026/11/26/0123456789abcdef0123456789abcdef.json"


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    yield from moto.moto_endpoint()


@pytest.fixture(params=["us-east-1", "eu-central-1"])
def region(request: pytest.FixtureRequest) -> str:
    # Outside us-east-1 CreateBucket must name the region; moto enforces that like AWS.
    value: str = request.param
    return value


@pytest.fixture
async def moto_store(moto_endpoint: str, region: str) -> AsyncIterator[S3ObjectStore]:
    async with S3ObjectStore.open(
        endpoint_url=moto_endpoint,
        region=region,
        access_key_id="moto",
        secret_access_key="moto",
    ) as store:
        yield store


async def test_ensure_buckets_creates_missing_buckets_and_tolerates_existing_ones(
    moto_store: S3ObjectStore, region: str
) -> None:
    uploads, enhanced = f"latina-uploads-{region}", f"latina-enhanced-{region}"
    await moto_store.ensure_buckets(uploads)
    await moto_store.put(uploads, KEY, b"{}", "application/json")
    await moto_store.ensure_buckets(uploads, enhanced)
    assert await moto_store.get(uploads, KEY) == b"{}"
    await moto_store.put(enhanced, KEY, b"[]", "application/json")
    assert await moto_store.get(enhanced, KEY) == b"[]"


async def test_put_get_delete_roundtrip_keeps_bytes_and_content_type(
    moto_store: S3ObjectStore, region: str
) -> None:
    bucket = f"latina-roundtrip-{region}"
    await moto_store.ensure_buckets(bucket)
    await moto_store.put(bucket, KEY, b'{"v": 1}', "application/json")
    assert await moto_store.get(bucket, KEY) == b'{"v": 1}'
    async with httpx.AsyncClient() as http:
        served = await http.get(await moto_store.url(bucket, KEY, 60))
    assert served.content == b'{"v": 1}'
    assert served.headers["content-type"] == "application/json"
    await moto_store.delete(bucket, KEY)
    with pytest.raises(ObjectNotFound):
        await moto_store.get(bucket, KEY)
    await moto_store.delete(bucket, KEY)


async def test_factory_opens_s3_and_creates_the_configured_buckets(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The factory leaves credentials to boto's chain, so they come from the environment here.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "moto")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "moto")
    settings = Settings(
        object_store="s3",
        s3_endpoint_url=moto_endpoint,
        s3_uploads_bucket="latina-factory-uploads",
        s3_enhanced_bucket="latina-factory-enhanced",
        s3_create_buckets=True,
    )
    async with open_object_store(settings) as store:
        assert isinstance(store, S3ObjectStore)
        for bucket in (settings.s3_uploads_bucket, settings.s3_enhanced_bucket):
            await store.put(bucket, KEY, b"{}", "application/json")
            assert await store.get(bucket, KEY) == b"{}"
