"""Following the URLs an image API answers with (a rendered image, Leonardo's presigned upload
URL) without letting the answer send the gateway anywhere.

- ``https`` only, and after resolving the host, no private, loopback, link-local, multicast or
  otherwise non-public address (an instance-metadata URL, a database next door). The hosts of the
  API's own configured base URL are exempt: the operator chose them (local fakes, a proxy).
- Redirects are followed by hand, each hop checked the same way, at most ``MAX_REDIRECTS``.
- A download streams with a byte cap and one deadline for the whole transfer (a read timeout
  alone restarts with every chunk).

Checking an address and then connecting leaves a window in which a hostile DNS server could
answer differently (rebinding); the deadline and the cap still bound what such a fetch costs.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable, Iterable
from urllib.parse import urljoin, urlsplit

import httpx

from shared.errors import UpstreamError, UpstreamTimeout

MAX_REDIRECTS = 3
# What a provider takes when built without settings (the gateway passes DOWNLOAD_MAX_BYTES and
# UPLOAD_MAX_PIXELS).
DEFAULT_MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000
Clock = Callable[[], float]


class UrlGuard:
    """Which URLs ``upstream``'s answers may point the gateway at."""

    def __init__(self, upstream: str, trusted_hosts: Iterable[str]) -> None:
        self.upstream = upstream
        self.trusted = frozenset(h.lower() for h in trusted_hosts if h)

    def _refuse(self, url: str, why: str) -> UpstreamError:
        host = urlsplit(url).hostname or "?"
        return UpstreamError(
            f"{self.upstream} answered with a URL the gateway does not follow ({why})",
            upstream=self.upstream,
            code="upstream_bad_url",
            details={"host": host[:100]},
        )

    async def check(self, url: str) -> None:
        """Raises ``UpstreamError`` (``upstream_bad_url``) unless ``url`` may be fetched."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise self._refuse(url, "not a URL") from None
        if parts.scheme not in ("http", "https"):
            raise self._refuse(url, "not https")
        host = (parts.hostname or "").lower()
        if not host:
            raise self._refuse(url, "no host")
        if host in self.trusted:
            return
        if parts.scheme != "https":
            raise self._refuse(url, "not https")
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port or 443, type=socket.SOCK_STREAM
            )
        except OSError:
            raise self._refuse(url, "host does not resolve") from None
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
            if not address.is_global:
                raise self._refuse(url, "not a public address")


async def download(
    client: httpx.AsyncClient,
    url: str,
    *,
    guard: UrlGuard,
    max_bytes: int,
    deadline: float,
    clock: Clock,
) -> bytes:
    """The body at ``url`` (following checked redirects), at most ``max_bytes``, by ``deadline``
    (on ``clock``).

    Raises:
        UpstreamError: a refused URL (``upstream_bad_url``), a body over the cap
            (``upstream_too_large``), an error status.
        UpstreamTimeout: the transfer did not finish by the deadline.
    """
    remaining = deadline - clock()
    if remaining <= 0:
        raise UpstreamTimeout(f"{guard.upstream} download out of time", upstream=guard.upstream)
    try:
        async with asyncio.timeout(remaining):
            return await _follow(client, url, guard, max_bytes)
    except TimeoutError:
        raise UpstreamTimeout(
            f"{guard.upstream} download did not finish in time", upstream=guard.upstream
        ) from None
    except httpx.HTTPError as exc:
        raise UpstreamError(
            f"{guard.upstream} download failed: {type(exc).__name__}", upstream=guard.upstream
        ) from exc


async def _follow(client: httpx.AsyncClient, url: str, guard: UrlGuard, max_bytes: int) -> bytes:
    for _ in range(MAX_REDIRECTS + 1):
        await guard.check(url)
        async with client.stream("GET", url, follow_redirects=False) as response:
            if response.is_redirect and "location" in response.headers:
                url = urljoin(url, response.headers["location"])
                continue
            if response.status_code != 200:
                raise UpstreamError(
                    f"{guard.upstream} download answered {response.status_code}",
                    upstream=guard.upstream,
                    details={"status": response.status_code},
                )
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise _too_large(guard.upstream, max_bytes)
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise _too_large(guard.upstream, max_bytes)
                chunks.append(chunk)
            return b"".join(chunks)
    raise UpstreamError(
        f"{guard.upstream} download redirected more than {MAX_REDIRECTS} times",
        upstream=guard.upstream,
        code="upstream_bad_url",
    )


def _too_large(upstream: str, max_bytes: int) -> UpstreamError:
    return UpstreamError(
        f"{upstream} returned more than {max_bytes} bytes",
        upstream=upstream,
        code="upstream_too_large",
        details={"limit_bytes": max_bytes},
    )
