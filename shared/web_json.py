"""Request bodies as both services read them: a byte limit counted while the body arrives (every
route, chunked bodies included), and JSON that is JSON (a JSON media type, numbers that are
finite, nesting a parser can take).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import InvalidInput, MalformedRequest, PayloadTooLarge, UnsupportedMediaType


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"request body is larger than {limit} bytes",
        code="payload_too_large",
        details={"limit_bytes": limit},
    )


class BodyLimit:
    """ASGI middleware: a request whose body (declared or counted) passes ``limit_for(scope)``
    bytes fails where the route reads it, with ``413 payload_too_large``."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[Scope], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            if declared.isdigit() and int(declared) > limit:
                raise _too_large(limit)
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _too_large(limit)
            return message

        await self.app(scope, counted, send)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NonFinite(text)
    return value


class _NonFinite(ValueError):
    pass


def _constant(name: str) -> Any:
    raise _NonFinite(name)  # NaN, Infinity, -Infinity: not JSON, though Python writes them


def is_json_media_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


async def read_json(request: Request, *, empty: Any = None) -> Any:
    """The request's JSON body. ``empty``: what an empty body means (None: an error).

    Raises:
        UnsupportedMediaType: a body that is not sent as ``application/json`` (415).
        MalformedRequest: not JSON, or nested deeper than the parser goes (400).
        InvalidInput: ``non_finite_number`` for NaN, Infinity or a number out of range (422).
        PayloadTooLarge: over the route's limit (``BodyLimit``), while it is read (413).
    """
    raw = await request.body()
    if not raw.strip() and empty is not None:
        return empty
    if not is_json_media_type(request.headers.get("content-type", "")):
        raise UnsupportedMediaType(
            "send the body as JSON (Content-Type: application/json)",
            code="unsupported_media_type",
            details={"expected": "application/json"},
        )
    try:
        return json.loads(raw, parse_constant=_constant, parse_float=_finite)
    except _NonFinite as exc:
        raise InvalidInput(
            f"numbers must be finite; {exc} is not",
            code="non_finite_number",
            details={"value": str(exc)},
        ) from None
    except RecursionError:
        raise MalformedRequest("request body is nested too deeply to be read") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, an integer too long
        raise MalformedRequest(f"request body is not valid JSON: {exc}") from exc
