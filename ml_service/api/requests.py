"""What routes read from a request: the study, the caller's deadline, a JSON body, flags; and
whether the caller is still there."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from starlette.requests import Request

from ml_service.errors import InvalidInput, MalformedRequest
from shared.web_json import read_json
from shared.wire.ml import DEADLINE_HEADER

_STUDY_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
T = TypeVar("T")


def caller_deadline(request: Request) -> float | None:
    """``X-Request-Deadline``: seconds the caller will still wait, as a ``time.monotonic()``."""
    raw = request.headers.get(DEADLINE_HEADER)
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds <= 3600:
        raise InvalidInput(
            f"{DEADLINE_HEADER} must be the seconds the caller still waits (0-3600]",
            code="invalid_deadline",
            details={"header": DEADLINE_HEADER, "value": raw},
        )
    return time.monotonic() + seconds


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T | None:
    """``work``'s result, or None when the client disconnects first: then ``work`` is
    cancelled, so what it still had queued leaves the queue."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        task.cancel()

    watcher = asyncio.create_task(watch())
    try:
        return await task
    except asyncio.CancelledError:
        if watcher.done() and task.cancelled():
            return None
        raise
    finally:
        watcher.cancel()


def study_name(value: str | None) -> str:
    study = value or "default"
    if not _STUDY_RE.match(study):
        raise InvalidInput(
            "study must be 1-64 letters, digits, '-' or '_'",
            code="invalid_study",
            details={"study": study},
        )
    return study


async def json_body(request: Request) -> dict[str, Any]:
    """The JSON object of the body (an empty body is ``{}``); see ``shared.web_json``."""
    body = await read_json(request, empty={})
    if not isinstance(body, dict):
        raise MalformedRequest("request body must be a JSON object")
    return body


def flag(request: Request, name: str) -> bool:
    """A yes/no query parameter: ``1``, ``true`` or ``yes`` (any case) is yes."""
    return request.query_params.get(name, "").lower() in ("1", "true", "yes")
