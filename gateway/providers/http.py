"""Talking to the image APIs: one retry policy, one translation of failures, one poll schedule.

Two kinds of request:

* **idempotent** (GETs, downloads, the presigned upload, Leonardo's free ``/init-image``):
  retried on 429/503, honouring ``Retry-After``, and on connect errors;
* **paid creates** (Leonardo ``POST /generations``, Replicate's create): retried only after a
  429, because only then do we know the upstream refused the request and started nothing. A
  timeout or 5xx may hide a generation that is running and billed, so it is never re-sent.

Every failure leaves as a ``shared.errors`` error naming the upstream, never as an httpx one.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from shared.errors import RateLimited, UpstreamError, UpstreamTimeout, UpstreamUnavailable

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]

POLL_CAP_SECONDS = 10.0
_S3_MESSAGE = re.compile(r"<Message>(.*?)</Message>", re.DOTALL)
MESSAGE_LIMIT = 200
# API keys and tokens as the upstreams write them (OpenAI sk-, Replicate r8_, ours lat_), bearer
# credentials, and long unbroken runs of key-like characters
_SECRET = re.compile(
    r"(?i)\b(?:bearer\s+\S+|(?:sk|r8|lat)[-_][A-Za-z0-9_-]{8,}|[A-Za-z0-9+/_-]{32,})"
)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date), or None."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def describe(response: httpx.Response, keys: tuple[str, ...]) -> str:
    """The upstream's own words for a failed response, as a trainer may see them: the message
    under one of ``keys`` of a JSON body (or S3's XML ``Message``), at most ``MESSAGE_LIMIT``
    characters, one line, anything shaped like a key or token redacted. Never the raw body,
    which may echo headers or configuration: then only the status."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict):
        for key in keys:
            value = body.get(key)
            if isinstance(value, str) and value.strip():
                return _safe(value)
    match = _S3_MESSAGE.search(response.text)  # presigned S3 URLs answer in XML
    if match and match.group(1).strip():
        return _safe(match.group(1))
    return f"HTTP {response.status_code}"


def _safe(text: str) -> str:
    printable = "".join(c if c.isprintable() else " " for c in text)
    one_line = " ".join(printable.split())
    return _SECRET.sub("[redacted]", one_line)[:MESSAGE_LIMIT]


@dataclass(frozen=True)
class UpstreamHttp:
    """Sends requests to one upstream with the retry policy above.

    Attributes:
        name: The upstream's name in errors (``leonardo``, ``replicate``).
        message_keys: JSON keys holding the error message in the upstream's error bodies.
        sleep: Awaited for every wait, so tests can observe waits without spending them.
        clock: Monotonic seconds, compared with the caller's deadline.
        attempts: Tries per request, the first included.
        max_retry_after: Longest wait we accept; a longer ``Retry-After`` fails at once.
        backoff: First wait when the upstream gives no ``Retry-After``; doubles per retry.
    """

    name: str
    message_keys: tuple[str, ...]
    sleep: Sleep = asyncio.sleep
    clock: Clock = time.monotonic
    attempts: int = 4
    max_retry_after: float = 30.0
    backoff: float = 0.5

    async def request(
        self,
        client: httpx.AsyncClient,
        method: str,
        url: str,
        *,
        deadline: float | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send an idempotent request; retried on 429, 503 and connect errors.

        Args:
            client: The upstream's long-lived client.
            method: HTTP method.
            url: Path relative to the client's base URL, or an absolute URL.
            deadline: ``clock()`` value after which no retry wait is started.
            **kwargs: Passed to ``httpx.AsyncClient.request``.

        Returns:
            A response with a status below 400.

        Raises:
            RateLimited: Still 429 after the retries, or the wait asked for is too long.
            UpstreamError: Any other failure (``UpstreamTimeout``/``UpstreamUnavailable`` for
                timeouts and unreachable hosts; code ``upstream_auth`` for 401/403).
        """
        return await self._send(client, method, url, paid=False, deadline=deadline, **kwargs)

    async def create(
        self,
        client: httpx.AsyncClient,
        url: str,
        *,
        deadline: float | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """POST a paid create; re-sent only after a 429. Same errors as ``request``."""
        return await self._send(client, "POST", url, paid=True, deadline=deadline, **kwargs)

    async def _send(
        self,
        client: httpx.AsyncClient,
        method: str,
        url: str,
        *,
        paid: bool,
        deadline: float | None,
        **kwargs: Any,
    ) -> httpx.Response:
        for attempt in range(1, self.attempts + 1):
            final = attempt == self.attempts
            try:
                response = await client.request(method, url, **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                # Nothing reached the upstream; still, a paid create is never re-sent.
                if paid or final or not await self._wait(None, attempt, deadline):
                    raise self._transport_error(exc) from exc
                continue
            except httpx.HTTPError as exc:
                raise self._transport_error(exc) from exc
            if response.status_code < 400:
                return response
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            retryable = response.status_code == 429 or (response.status_code == 503 and not paid)
            if retryable and not final and await self._wait(retry_after, attempt, deadline):
                continue
            raise self._status_error(response, retry_after)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _wait(self, retry_after: float | None, attempt: int, deadline: float | None) -> bool:
        """Sleep before the next attempt; False when the wait is too long to be worth it."""
        wait = retry_after if retry_after is not None else self.backoff * 2 ** (attempt - 1)
        if wait > self.max_retry_after:
            return False
        if deadline is not None and self.clock() + wait >= deadline:
            return False
        await self.sleep(wait)
        return True

    def _transport_error(self, exc: httpx.HTTPError) -> UpstreamError:
        if isinstance(exc, httpx.TimeoutException):
            return UpstreamTimeout(f"{self.name} did not answer in time", upstream=self.name)
        if isinstance(exc, httpx.TransportError):
            return UpstreamUnavailable(f"{self.name} unreachable: {exc}", upstream=self.name)
        return UpstreamError(f"{self.name} request failed: {exc}", upstream=self.name)

    def _status_error(self, response: httpx.Response, retry_after: float | None) -> Exception:
        status = response.status_code
        message = describe(response, self.message_keys)
        details: dict[str, Any] = {"status": status}
        if status == 429:
            return RateLimited(
                f"{self.name} is rate limiting us: {message}",
                retry_after=retry_after,
                details={"upstream": self.name, **details},
            )
        if status in (401, 403):
            return UpstreamError(
                f"{self.name} refused our credentials: {message}",
                upstream=self.name,
                code="upstream_auth",
                details=details,
            )
        if status == 503:
            return UpstreamUnavailable(
                f"{self.name} unavailable: {message}", upstream=self.name, details=details
            )
        return UpstreamError(
            f"{self.name} answered {status}: {message}", upstream=self.name, details=details
        )


def json_object(response: httpx.Response, upstream: str) -> dict[str, Any]:
    """The response's JSON object; an ``UpstreamError`` when it is anything else."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UpstreamError(f"{upstream} answered with invalid JSON", upstream=upstream) from exc
    if not isinstance(body, dict):
        raise UpstreamError(f"{upstream} answered with unexpected JSON", upstream=upstream)
    return body


async def poll_schedule(
    interval: float, deadline: float, *, sleep: Sleep, clock: Clock
) -> AsyncIterator[None]:
    """Yield once now, then after waits doubling from ``interval`` (capped) until ``deadline``.

    The last wait is shortened to end at the deadline, so a caller always gets one final look.
    """
    wait = interval
    while True:
        yield
        remaining = deadline - clock()
        if remaining <= 0:
            return
        await sleep(min(wait, remaining))
        wait = min(wait * 2, POLL_CAP_SECONDS)
