"""The shared-secret bearer token on every ML route but ``/ml/health``."""

from __future__ import annotations

import hmac

from starlette.requests import Request

from ml_service.errors import Unauthenticated

# Behind an IAM-authenticated function URL, Authorization carries the caller's SigV4 signature
# (checked by AWS), so the shared token travels in this header instead.
TOKEN_HEADER = "x-latina-service-token"  # noqa: S105 (a header name)


def require_service_token(request: Request, expected: str) -> None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        token = request.headers.get(TOKEN_HEADER, "")
    if not token:
        raise Unauthenticated("missing bearer token", code="unauthenticated")
    # constant-time, so the token cannot be guessed byte by byte from response times
    if not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise Unauthenticated("invalid service token", code="unauthenticated")
