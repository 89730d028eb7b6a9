"""An ``ObjectStore`` on S3 or an S3-compatible server, over one long-lived aioboto3 client.

botocore's exceptions stop here: callers see ``ObjectNotFound`` or ``StorageError`` with the
original exception as ``__cause__``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import aioboto3
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError

from shared.errors import ObjectNotFound, StorageError
from shared.storage.base import validate_bucket, validate_key

if TYPE_CHECKING:
    # Stub-only package from the dev extras (types-aioboto3[s3]).
    from types_aiobotocore_s3 import S3Client

# S3 answers a missing object with NoSuchKey, and HEAD requests with a bare 404.
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
# The one region where CreateBucket must not carry a LocationConstraint.
_DEFAULT_REGION = "us-east-1"


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextlib.contextmanager
def _translated(operation: str, bucket: str = "", key: str = "") -> Iterator[None]:
    """Turn botocore's exceptions raised inside the block into the project's errors."""
    details = {k: v for k, v in (("bucket", bucket), ("key", key)) if v}
    try:
        yield
    except ClientError as exc:
        code = _error_code(exc)
        if key and code in _NOT_FOUND_CODES:
            raise ObjectNotFound("object not found", details=details) from exc
        raise StorageError(
            f"object storage refused {operation} ({code or 'unknown error'})",
            details={**details, "s3_code": code},
        ) from exc
    except BotoCoreError as exc:
        # Connection refused, timeouts, missing credentials or a malformed request.
        raise StorageError(
            f"object storage request failed during {operation}: {type(exc).__name__}",
            details=details,
        ) from exc


class S3ObjectStore:
    """An ``ObjectStore`` backed by an aiobotocore S3 client the caller keeps open.

    Prefer ``S3ObjectStore.open``, which owns the client's lifetime.

    Args:
        client: An entered aiobotocore S3 client.
        region: The client's region, needed when creating buckets outside us-east-1.
    """

    def __init__(
        self,
        client: S3Client,
        *,
        region: str = _DEFAULT_REGION,
        ping_buckets: tuple[str, ...] = (),
    ) -> None:
        self._client = client
        self._region = region
        self._ping_buckets = ping_buckets

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        *,
        endpoint_url: str | None,
        region: str,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        ping_buckets: tuple[str, ...] = (),
    ) -> AsyncIterator[S3ObjectStore]:
        """Open a client for the lifetime of the ``async with`` block.

        Args:
            endpoint_url: An S3-compatible server (addressed path-style), or None for AWS.
            region: The signing region.
            access_key_id: Explicit credentials; None uses boto's usual credential chain.
            secret_access_key: Secret for ``access_key_id``.
            connect_timeout: Seconds to establish a connection.
            read_timeout: Seconds to wait for response data.
            ping_buckets: Buckets ``ping`` checks with HeadBucket (least-privilege IAM allows
                that where ListAllMyBuckets is refused); empty: ``ping`` lists buckets.

        Yields:
            The store; its client is closed when the block exits.
        """
        # AioConfig is botocore's Config plus aiohttp connector options; aiobotocore wants it.
        config = AioConfig(
            signature_version="s3v4",
            # Virtual-host addressing needs wildcard DNS that local servers do not have.
            s3={"addressing_style": "path"} if endpoint_url else None,
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )
        session = aioboto3.Session()
        async with session.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=config,
        ) as client:
            yield cls(client, region=region, ping_buckets=ping_buckets)

    async def put(self, bucket: str, key: str, data: bytes, content_type: str) -> None:
        """Store ``data`` under ``bucket``/``key``, replacing any previous object."""
        _validate(bucket, key)
        with _translated("put", bucket, key):
            await self._client.put_object(
                Bucket=bucket, Key=key, Body=data, ContentType=content_type
            )

    async def get(self, bucket: str, key: str) -> bytes:
        """Return the object's bytes; raise ``ObjectNotFound`` when there is none."""
        _validate(bucket, key)
        with _translated("get", bucket, key):
            response = await self._client.get_object(Bucket=bucket, Key=key)
            async with response["Body"] as body:
                data = await body.read()
        return data

    async def delete(self, bucket: str, key: str) -> None:
        """Remove the object; S3 itself treats deleting a missing key as success."""
        _validate(bucket, key)
        with _translated("delete", bucket, key):
            await self._client.delete_object(Bucket=bucket, Key=key)

    async def url(self, bucket: str, key: str, expires_in: int) -> str:
        """A presigned GET URL valid for ``expires_in`` seconds; no request is made."""
        _validate(bucket, key)
        if expires_in <= 0:
            raise ValueError("expires_in must be positive")
        with _translated("url", bucket, key):
            url = await self._client.generate_presigned_url(
                "get_object",
                Params={"Bucket": bucket, "Key": key},
                ExpiresIn=expires_in,
            )
        return url

    async def ping(self) -> None:
        """Raise ``StorageError`` unless the server answers an authenticated request."""
        if not self._ping_buckets:
            with _translated("ping"):
                await self._client.list_buckets()
        for bucket in self._ping_buckets:
            with _translated("ping", bucket):
                await self._client.head_bucket(Bucket=bucket)

    async def ensure_buckets(self, *names: str) -> None:
        """Create each bucket that does not exist yet; existing ones are left alone.

        Args:
            *names: Bucket names, validated like every other bucket argument.
        """
        for name in names:
            validate_bucket(name)
            kwargs: dict[str, Any] = {"Bucket": name}
            if self._region != _DEFAULT_REGION:
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self._region}
            with _translated("create_bucket", name):
                try:
                    await self._client.create_bucket(**kwargs)
                except ClientError as exc:
                    code = _error_code(exc)
                    if code == "BucketAlreadyExists":
                        # AWS means "someone else's"; some compatible servers mean "yours".
                        # Only a bucket we can reach counts as ensured.
                        await self._client.head_bucket(Bucket=name)
                    elif code != "BucketAlreadyOwnedByYou":
                        raise


def _validate(bucket: str, key: str) -> None:
    # Keys are checked here too so that a key accepted by one store is accepted by both.
    validate_bucket(bucket)
    validate_key(key)
