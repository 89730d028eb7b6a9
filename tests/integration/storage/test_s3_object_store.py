"""S3ObjectStore against a real, signature-checking S3 server (SeaweedFS)."""

from __future__ import annotations

import asyncio
import uuid
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest
from botocore.exceptions import BotoCoreError, ClientError

from shared.errors import InvalidInput, ObjectNotFound, StorageError
from shared.storage import S3ObjectStore
from tests.integration.storage.conftest import REGION, S3Server, free_ports

pytestmark = pytest.mark.s3

KEY = "originals/2026/11/26/0123456789abcdef0123456789abcdef.jpg"


def with_query_param(url: str, name: str, value: str) -> str:
    parts = urlsplit(url)
    query = [(k, value if k == name else v) for k, v in parse_qsl(parts.query)]
    assert name in dict(query), f"{name} missing from {url}"
    return urlunsplit(parts._replace(query=urlencode(query)))


async def test_put_then_get_returns_the_same_bytes(s3_store: S3ObjectStore, s3_bucket: str) -> None:
    await s3_store.put(s3_bucket, KEY, b"\xff\xd8jpeg", "image/jpeg")
    assert await s3_store.get(s3_bucket, KEY) == b"\xff\xd8jpeg"
    await s3_store.put(s3_bucket, KEY, b"replaced", "image/jpeg")
    assert await s3_store.get(s3_bucket, KEY) == b"replaced"


async def test_get_of_missing_object_raises_object_not_found(
    s3_store: S3ObjectStore, s3_bucket: str
) -> None:
    with pytest.raises(ObjectNotFound) as info:
        await s3_store.get(s3_bucket, "originals/missing.jpg")
    assert isinstance(info.value.__cause__, ClientError)


async def test_get_from_missing_bucket_is_a_storage_error_not_a_missing_object(
    s3_store: S3ObjectStore,
) -> None:
    with pytest.raises(StorageError):
        await s3_store.get(f"latina-absent-{uuid.uuid4().hex[:12]}", KEY)


async def test_delete_removes_the_object_and_is_idempotent(
    s3_store: S3ObjectStore, s3_bucket: str
) -> None:
    await s3_store.put(s3_bucket, KEY, b"x", "image/jpeg")
    await s3_store.delete(s3_bucket, KEY)
    with pytest.raises(ObjectNotFound):
        await s3_store.get(s3_bucket, KEY)
    await s3_store.delete(s3_bucket, KEY)


async def test_unsafe_keys_are_refused_before_any_request(
    s3_store: S3ObjectStore, s3_bucket: str
) -> None:
    with pytest.raises(InvalidInput):
        await s3_store.put(s3_bucket, "../escape.jpg", b"x", "image/jpeg")


async def test_presigned_url_serves_the_object_over_plain_http(
    s3_store: S3ObjectStore, s3_bucket: str
) -> None:
    await s3_store.put(s3_bucket, KEY, b"jpeg over http", "image/jpeg")
    url = await s3_store.url(s3_bucket, KEY, 60)
    async with httpx.AsyncClient() as http:
        response = await http.get(url)
        unsigned = await http.get(url.split("?", 1)[0])
    assert response.status_code == 200
    assert response.content == b"jpeg over http"
    assert response.headers["content-type"] == "image/jpeg"
    # The same URL without its signature is refused, so the bucket is not simply public.
    assert unsigned.status_code == 403


async def test_expired_presigned_url_is_refused(s3_store: S3ObjectStore, s3_bucket: str) -> None:
    await s3_store.put(s3_bucket, KEY, b"short-lived", "image/jpeg")
    url = await s3_store.url(s3_bucket, KEY, 1)
    # X-Amz-Date has one-second resolution, so wait clearly past the expiry.
    await asyncio.sleep(2.5)
    async with httpx.AsyncClient() as http:
        response = await http.get(url)
    assert 400 <= response.status_code < 500
    assert b"short-lived" not in response.content


async def test_presigned_url_with_tampered_signature_is_refused(
    s3_store: S3ObjectStore, s3_bucket: str
) -> None:
    await s3_store.put(s3_bucket, KEY, b"secret", "image/jpeg")
    url = await s3_store.url(s3_bucket, KEY, 60)
    signature = dict(parse_qsl(urlsplit(url).query))["X-Amz-Signature"]
    flipped = ("0" if signature[0] != "0" else "1") + signature[1:]
    async with httpx.AsyncClient() as http:
        genuine = await http.get(url)
        tampered = await http.get(with_query_param(url, "X-Amz-Signature", flipped))
        longer = await http.get(with_query_param(url, "X-Amz-Expires", "604800"))
    assert genuine.status_code == 200
    assert tampered.status_code == 403
    assert longer.status_code == 403
    assert b"secret" not in tampered.content + longer.content


async def test_ensure_buckets_is_idempotent(s3_store: S3ObjectStore) -> None:
    first, second = (f"latina-t-{uuid.uuid4().hex[:16]}" for _ in range(2))
    await s3_store.ensure_buckets(first, second)
    await s3_store.put(first, KEY, b"kept", "image/jpeg")
    await s3_store.ensure_buckets(first, second)
    assert await s3_store.get(first, KEY) == b"kept"
    await s3_store.put(second, KEY, b"also", "image/jpeg")
    assert await s3_store.get(second, KEY) == b"also"


async def test_ping_checks_the_configured_buckets(s3_server: S3Server, s3_bucket: str) -> None:
    credentials = {
        "endpoint_url": s3_server.endpoint_url,
        "region": REGION,
        "access_key_id": s3_server.access_key_id,
        "secret_access_key": s3_server.secret_access_key,
    }
    async with S3ObjectStore.open(**credentials, ping_buckets=(s3_bucket,)) as store:
        assert await store.ping() is None
    missing = f"missing-{uuid.uuid4().hex[:12]}"
    async with S3ObjectStore.open(**credentials, ping_buckets=(s3_bucket, missing)) as store:
        with pytest.raises(StorageError):
            await store.ping()


async def test_wrong_secret_is_a_storage_error(s3_server: S3Server, s3_bucket: str) -> None:
    async with S3ObjectStore.open(
        endpoint_url=s3_server.endpoint_url,
        region=REGION,
        access_key_id=s3_server.access_key_id,
        secret_access_key="not-the-secret",
    ) as impostor:
        with pytest.raises(StorageError) as info:
            await impostor.put(s3_bucket, KEY, b"x", "image/jpeg")
    assert info.value.details["s3_code"] == "SignatureDoesNotMatch"


async def test_ping_of_a_closed_port_raises_storage_error() -> None:
    (port,) = free_ports(1)
    async with S3ObjectStore.open(
        endpoint_url=f"http://127.0.0.1:{port}",
        region=REGION,
        access_key_id="nobody",
        secret_access_key="nothing",
        connect_timeout=1.0,
    ) as store:
        with pytest.raises(StorageError) as info:
            await store.ping()
    assert isinstance(info.value.__cause__, BotoCoreError)
