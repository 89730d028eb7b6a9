"""Security headers on every gateway response (pure ASGI, so streaming bodies pass through)."""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.settings import Settings


def image_sources(settings: Settings) -> list[str]:
    """Where the browser may load images from: the gateway, and the object store's URLs."""
    sources = ["'self'", "data:", "blob:"]
    if settings.object_store == "s3":
        if settings.s3_endpoint_url:
            parts = urlsplit(settings.s3_endpoint_url)
            sources.append(f"{parts.scheme}://{parts.netloc}")
            sources.append(f"{parts.scheme}://*.{parts.netloc}")  # virtual-hosted buckets
        else:
            sources.append("https://*.amazonaws.com")
    if settings.public_base_url:
        parts = urlsplit(settings.public_base_url)
        sources.append(f"{parts.scheme}://{parts.netloc}")
    return sources


def content_security_policy(settings: Settings) -> str:
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src {' '.join(image_sources(settings))}",
            "connect-src 'self'",
            "font-src 'self'",
            "object-src 'none'",
            "base-uri 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.headers = {
            "Content-Security-Policy": content_security_policy(settings),
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "same-origin",
            "Cross-Origin-Opener-Policy": "same-origin",
            "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
        }
        if settings.latina_env == "production":
            self.headers["Strict-Transport-Security"] = "max-age=31536000"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, with_headers)
