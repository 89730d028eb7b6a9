"""Object storage behind one protocol: S3 (aioboto3) or a local directory."""

from shared.storage.base import ObjectStore, new_object_key, validate_bucket, validate_key
from shared.storage.factory import open_object_store
from shared.storage.local import LocalObjectStore
from shared.storage.s3 import S3ObjectStore

__all__ = [
    "LocalObjectStore",
    "ObjectStore",
    "S3ObjectStore",
    "new_object_key",
    "open_object_store",
    "validate_bucket",
    "validate_key",
]
