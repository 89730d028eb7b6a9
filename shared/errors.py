"""The project's error model: one base with a stable machine-readable code.

Library exceptions (httpx, asyncpg, botocore, openai) are translated into these at the adapter
boundary; each app factory maps the classes to HTTP status codes in one table.
"""

from __future__ import annotations

from typing import Any


class LatinaError(Exception):
    """Base error: ``code`` is stable for machines, ``message`` is for people."""

    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        hint: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.hint = hint
        self.details = details or {}

    def to_body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            error["details"] = self.details
        if self.hint:
            error["hint"] = self.hint
        return {"error": error}


class MalformedRequest(LatinaError):
    code = "malformed_request"


class InvalidInput(LatinaError):
    code = "invalid_input"


class Unauthenticated(LatinaError):
    code = "unauthenticated"


class Forbidden(LatinaError):
    code = "forbidden"


class NotFound(LatinaError):
    code = "not_found"


class Conflict(LatinaError):
    code = "conflict"


class PayloadTooLarge(LatinaError):
    code = "payload_too_large"


class UnsupportedMediaType(LatinaError):
    code = "unsupported_media_type"


class RateLimited(LatinaError):
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class Busy(LatinaError):
    """The service's queue of work is full: try again after ``retry_after`` seconds."""

    code = "busy"

    def __init__(self, message: str, *, retry_after: float, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class DeadlineExceeded(LatinaError):
    """The caller's deadline passed before the work could start."""

    code = "deadline_exceeded"


class UpstreamError(LatinaError):
    """An upstream (ML service, image API, LLM) failed after its retries."""

    code = "upstream_error"

    def __init__(self, message: str, *, upstream: str, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.upstream = upstream
        self.details.setdefault("upstream", upstream)


class UpstreamUnavailable(UpstreamError):
    code = "upstream_unavailable"


class UpstreamTimeout(UpstreamError):
    code = "upstream_timeout"


class StorageError(LatinaError):
    code = "storage_error"


class ObjectNotFound(NotFound):
    code = "object_not_found"


class DatabaseUnavailable(LatinaError):
    code = "database_unavailable"
