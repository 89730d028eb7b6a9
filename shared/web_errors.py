"""Every error as the JSON shape of API.md: ``{"error": {"code", "message", "details"?}}``.

Each app factory passes its status table (error class → HTTP status) to ``exception_handlers``;
the most specific class in an error's MRO wins.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus

from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from shared import errors

log = logging.getLogger("latina.errors")

BASE_STATUS_TABLE: dict[type[errors.LatinaError], int] = {
    errors.MalformedRequest: 400,
    errors.Unauthenticated: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.PayloadTooLarge: 413,
    errors.UnsupportedMediaType: 415,
    errors.InvalidInput: 422,
    errors.RateLimited: 429,
    errors.Busy: 503,
    errors.DeadlineExceeded: 504,
    errors.UpstreamError: 502,
    errors.UpstreamUnavailable: 503,
    errors.UpstreamTimeout: 504,
    errors.StorageError: 503,
    errors.DatabaseUnavailable: 503,
}

_HTTP_CODES = {
    400: "malformed_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}

Handler = Callable[[Request, Exception], Awaitable[Response]]


def error_response(
    status: int, code: str, message: str, details: dict[str, object] | None = None
) -> JSONResponse:
    body: dict[str, object] = {"code": code, "message": message}
    if details:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status)


def status_for(error: errors.LatinaError, table: Mapping[type[errors.LatinaError], int]) -> int:
    for cls in type(error).__mro__:
        if cls in table:
            return table[cls]
    return 500


def exception_handlers(
    table: Mapping[type[errors.LatinaError], int],
) -> dict[type[Exception] | int, Handler]:
    """Starlette ``exception_handlers`` producing the JSON error shape for everything."""

    async def latina_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, errors.LatinaError)
        status = status_for(exc, table)
        response = JSONResponse(exc.to_body(), status_code=status)
        if status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            response.headers["Retry-After"] = str(max(1, round(retry_after)))
        if status >= 500:
            log.warning("request failed: %s", exc.message, extra={"code": exc.code})
        return response

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        if exc.status_code == 404:
            message = f"no route for {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        response = error_response(exc.status_code, code, message)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ValidationError)
        problems = [
            {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"], "type": e["type"]}
            for e in exc.errors(include_url=False, include_input=False)
        ]
        return error_response(
            422, "invalid_input", "the request has invalid values", {"errors": problems}
        )

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal server error")

    return {
        errors.LatinaError: latina_error,
        HTTPException: http_error,
        ValidationError: validation_error,
        Exception: unexpected,
    }
