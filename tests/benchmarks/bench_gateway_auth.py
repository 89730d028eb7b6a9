"""What token authentication costs per request.

Baseline: ``GET /healthz`` (routing, middleware, JSON). Measured: ``GET /api/me`` (the same plus
a token lookup in PostgreSQL) and ``GET /readyz`` (a database round trip and a store check).
Requests go through the real app and a real embedded PostgreSQL, in this process.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import httpx
from asgi_lifespan import LifespanManager

from gateway.app import create_app
from gateway.flows import accounts
from gateway.flows.unit_of_work import UnitOfWorkFactory
from shared.db.embedded import embedded_server
from shared.settings import Settings

REQUESTS = 400
ROUNDS = 3


async def _rate(client: httpx.AsyncClient, path: str, headers: dict[str, str]) -> float:
    best = 0.0
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(REQUESTS):
            response = await client.get(path, headers=headers)
            assert response.status_code == 200, response.text
        best = max(best, REQUESTS / (time.perf_counter() - started))
    return best


async def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="latina-bench-"))
    server = embedded_server(folder, cleanup_mode="delete")
    try:
        settings = Settings(
            latina_data_dir=folder / "data",
            database_url=str(server.get_uri("postgres")),
            migrate_on_start=True,
            log_level="WARNING",
            log_format="text",
        )
        app = create_app(settings)
        async with LifespanManager(app) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
                pool = manager._state["gateway"].pool
                _, token = await accounts.create_user(UnitOfWorkFactory(pool), "bench", "trainer")
                auth = {"Authorization": f"Bearer {token}"}
                baseline = await _rate(client, "/healthz", {})
                authed = await _rate(client, "/api/me", auth)
                ready = await _rate(client, "/readyz", {})
        print("gateway request rate (in-process ASGI, best of 3 x 400 requests)")
        print(f"  GET /healthz (baseline)     {baseline:8.0f} req/s   1.00x")
        print(f"  GET /api/me  (token lookup) {authed:8.0f} req/s   {authed / baseline:.2f}x")
        print(f"  GET /readyz  (db + store)   {ready:8.0f} req/s   {ready / baseline:.2f}x")
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)
