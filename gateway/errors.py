"""The gateway's errors: the shared model plus the status table its app factory installs."""

from __future__ import annotations

from shared.errors import (
    Conflict,
    DatabaseUnavailable,
    Forbidden,
    InvalidInput,
    LatinaError,
    MalformedRequest,
    NotFound,
    ObjectNotFound,
    PayloadTooLarge,
    RateLimited,
    StorageError,
    Unauthenticated,
    UnsupportedMediaType,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from shared.web_errors import BASE_STATUS_TABLE


class NotReady(LatinaError):
    """A dependency the gateway needs to serve traffic is not there (``/readyz``)."""

    code = "not_ready"


STATUS_TABLE: dict[type[LatinaError], int] = {**BASE_STATUS_TABLE, NotReady: 503}

__all__ = [
    "STATUS_TABLE",
    "Conflict",
    "DatabaseUnavailable",
    "Forbidden",
    "InvalidInput",
    "LatinaError",
    "MalformedRequest",
    "NotFound",
    "NotReady",
    "ObjectNotFound",
    "PayloadTooLarge",
    "RateLimited",
    "StorageError",
    "Unauthenticated",
    "UnsupportedMediaType",
    "UpstreamError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
]
