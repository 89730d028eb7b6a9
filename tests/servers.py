"""Serve an ASGI app on a real loopback port for the duration of a test."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from shared.settings import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def serve(
    app: ASGIApp, port: int | None = None, host: str = "127.0.0.1"
) -> AsyncIterator[str]:
    """Run ``app`` under uvicorn on ``host`` (a loopback address) and ``port`` (or a free one);
    yield its base URL."""
    port = port or free_port()
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", lifespan="off", access_log=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        await task


@asynccontextmanager
async def gateway_client(settings: Settings, token: str | None = None) -> AsyncIterator[Any]:
    """The real gateway built from ``settings`` (lifespan and all), over ASGI, as ``token``."""
    from asgi_lifespan import LifespanManager
    from httpx import ASGITransport, AsyncClient

    from gateway.app import create_app

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = ASGITransport(app=manager.app)
        async with AsyncClient(
            transport=transport, base_url="http://gw", timeout=60, headers=headers
        ) as client:
            yield client
