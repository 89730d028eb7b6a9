"""The ML service's errors and the status table its app factory installs."""

from __future__ import annotations

from shared.errors import (
    Busy,
    Conflict,
    DatabaseUnavailable,
    DeadlineExceeded,
    Forbidden,
    InvalidInput,
    LatinaError,
    MalformedRequest,
    NotFound,
    Unauthenticated,
)
from shared.web_errors import BASE_STATUS_TABLE

STATUS_TABLE: dict[type[LatinaError], int] = dict(BASE_STATUS_TABLE)

__all__ = [
    "STATUS_TABLE",
    "Busy",
    "Conflict",
    "DatabaseUnavailable",
    "DeadlineExceeded",
    "Forbidden",
    "InvalidInput",
    "LatinaError",
    "MalformedRequest",
    "NotFound",
    "Unauthenticated",
]
