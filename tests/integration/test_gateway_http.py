"""The gateway over HTTP: health, readiness, errors, auth, request ids, metrics."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from asgi_lifespan import LifespanManager
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.app import create_app
from gateway.flows import accounts
from gateway.flows.unit_of_work import UnitOfWorkFactory
from shared.settings import Settings
from shared.storage.local import LocalObjectStore
from tests import pg
from tests.servers import serve


def assert_error_shape(response: httpx.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code


async def test_healthz_answers_without_auth(gateway: httpx.AsyncClient) -> None:
    response = await gateway.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_reports_database_and_store(gateway: httpx.AsyncClient) -> None:
    response = await gateway.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "object_store": "ok"}


async def test_readyz_is_503_when_database_goes_away(
    settings: Settings, pg_admin_dsn: str, database_url: str
) -> None:
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://gw"
        )
        async with client:
            assert (await client.get("/readyz")).status_code == 200
            admin = await asyncpg.connect(pg_admin_dsn)
            try:
                name = pg.database_name(database_url)
                # no new connections first, then end the open ones and wait until they are gone
                await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
                for _ in range(100):
                    await admin.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = $1 AND pid <> pg_backend_pid()",
                        name,
                    )
                    left = await admin.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", name
                    )
                    if left == 0:
                        break
                    await asyncio.sleep(0.05)
            finally:
                await admin.close()
            down = await client.get("/readyz")
            assert_error_shape(down, 503, "not_ready")
            # which dependency, not the driver's text (it names the database, host and user)
            assert down.json()["error"]["details"] == {"database": "unreachable"}
            assert name not in down.text


async def test_unknown_path_is_json_404(gateway: httpx.AsyncClient) -> None:
    response = await gateway.get("/no/such/thing")
    assert_error_shape(response, 404, "not_found")
    assert "/no/such/thing" in response.json()["error"]["message"]


async def test_wrong_method_is_json_405(gateway: httpx.AsyncClient) -> None:
    assert_error_shape(await gateway.post("/healthz"), 405, "method_not_allowed")


async def test_status_without_token_is_401_json(gateway: httpx.AsyncClient) -> None:
    response = await gateway.get("/api/train/status")
    assert_error_shape(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"] == "Bearer"


async def test_status_with_unknown_token_is_401(gateway: httpx.AsyncClient) -> None:
    response = await gateway.get(
        "/api/train/status", headers={"Authorization": "Bearer lat_not-a-real-token"}
    )
    assert_error_shape(response, 401, "unauthenticated")


async def test_unknown_api_path_needs_a_token_before_saying_404(
    gateway: httpx.AsyncClient, trainer_token: str
) -> None:
    assert_error_shape(await gateway.get("/api/nothing"), 401)
    response = await gateway.get(
        "/api/nothing", headers={"Authorization": f"Bearer {trainer_token}"}
    )
    assert_error_shape(response, 404, "not_found")


async def test_status_with_trainer_token_reports_empty_training(
    gateway: httpx.AsyncClient, trainer_token: str
) -> None:
    response = await gateway.get(
        "/api/train/status", headers={"Authorization": f"Bearer {trainer_token}"}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["samples_collected"] == 0
    assert body["phase"] == 1 and body["phase_1_target"] == 50
    assert body["ml_service"] == {
        "reachable": False,
        "pending_updates": 0,
        "busy": False,
        "queued_computations": 0,
    }
    assert set(body["per_api"]) == {"leonardo", "stable_diffusion"}


async def test_revoked_token_is_refused(
    gateway: httpx.AsyncClient, db_pool: asyncpg.Pool[Any], trainer_token: str
) -> None:
    headers = {"Authorization": f"Bearer {trainer_token}"}
    assert (await gateway.get("/api/me", headers=headers)).status_code == 200
    assert await accounts.revoke_user_tokens(UnitOfWorkFactory(db_pool), "tina") == 1
    assert_error_shape(await gateway.get("/api/me", headers=headers), 401)


async def test_a_token_is_marked_used_at_most_once_a_minute(
    gateway: httpx.AsyncClient, db_pool: asyncpg.Pool[Any], trainer_token: str
) -> None:
    headers = {"Authorization": f"Bearer {trainer_token}"}

    async def last_used() -> Any:
        async with db_pool.acquire() as conn:
            return await conn.fetchval("SELECT last_used_at FROM api_tokens")

    assert await last_used() is None
    assert (await gateway.get("/api/me", headers=headers)).status_code == 200
    first = await last_used()
    assert first is not None
    assert (await gateway.get("/api/me", headers=headers)).status_code == 200
    assert await last_used() == first  # within the minute: read, not written again
    async with db_pool.acquire() as conn:
        await conn.execute("UPDATE api_tokens SET last_used_at = now() - interval '2 minutes'")
    older = await last_used()
    assert (await gateway.get("/api/me", headers=headers)).status_code == 200
    assert await last_used() > older


async def test_admin_route_refuses_trainer_with_403(
    gateway: httpx.AsyncClient, trainer_token: str, admin_token: str
) -> None:
    as_trainer = await gateway.get(
        "/api/users", headers={"Authorization": f"Bearer {trainer_token}"}
    )
    assert_error_shape(as_trainer, 403, "forbidden_role")
    as_admin = await gateway.get("/api/users", headers={"Authorization": f"Bearer {admin_token}"})
    assert as_admin.status_code == 200
    assert {u["name"] for u in as_admin.json()["items"]} == {"tina", "ada"}


async def test_request_id_is_echoed_or_generated(gateway: httpx.AsyncClient) -> None:
    echoed = await gateway.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"
    generated = await gateway.get("/healthz")
    assert len(generated.headers["x-request-id"]) == 32
    unsafe = await gateway.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
    assert unsafe.headers["x-request-id"] != "bad id\twith spaces"


async def test_request_id_is_forwarded_to_the_ml_service(
    settings: Settings, trainer_token: str
) -> None:
    seen: list[str | None] = []

    async def best(request: Request) -> JSONResponse:
        seen.append(request.headers.get("x-request-id"))
        return JSONResponse({"study": "default", "best": {}})

    fake_ml = Starlette(routes=[Route("/ml/best", best)])
    async with serve(fake_ml) as url:
        app = create_app(settings.model_copy(update={"ml_service_url": url}))
        async with LifespanManager(app) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                response = await client.get(
                    "/api/train/status",
                    headers={"Authorization": f"Bearer {trainer_token}", "X-Request-ID": "rid-42"},
                )
    assert response.status_code == 200
    assert response.json()["ml_service"]["reachable"] is True
    assert seen == ["rid-42"]


async def test_metrics_count_requests_by_route_template(gateway: httpx.AsyncClient) -> None:
    await gateway.get("/healthz")
    await gateway.get("/api/train/status")
    text = (await gateway.get("/metrics")).text
    assert (
        'latina_gateway_http_requests_total{method="GET",route="/healthz",status="200"} 1.0' in text
    )
    assert 'route="/api/train/status",status="401"' in text


async def test_local_object_is_served_only_through_its_signed_url(
    settings: Settings, tmp_path: Path
) -> None:
    store = LocalObjectStore(tmp_path / "objects", b"k" * 32)
    await store.put(
        "latina-uploads", "originals/2026/11/26/" + "a" * 32 + ".png", b"PNGDATA", "image/png"
    )
    url = await store.url("latina-uploads", "originals/2026/11/26/" + "a" * 32 + ".png", 3600)
    app = create_app(settings, store=store)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            ok = await client.get(url)
            tampered = await client.get(url.replace("sig=", "sig=x"))
            unsigned = await client.get(url.split("?")[0])
            traversal = await client.get("/objects/latina-uploads/../../etc/passwd?expires=1&sig=x")
    assert ok.status_code == 200 and ok.content == b"PNGDATA"
    assert ok.headers["content-type"] == "image/png"
    assert_error_shape(tampered, 403)
    assert_error_shape(unsigned, 403)
    assert traversal.status_code in (403, 404, 422)


async def _metrics(settings: Settings, client_host: str, **headers: str) -> httpx.Response:
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app, client=(client_host, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            return await client.get("/metrics", headers=headers)


async def test_metrics_are_served_to_loopback_only_without_a_token(settings: Settings) -> None:
    assert (await _metrics(settings, "127.0.0.1")).status_code == 200
    refused = await _metrics(settings, "203.0.113.9")
    assert_error_shape(refused, 403, "forbidden")


async def test_metrics_with_a_token_need_it_from_anywhere(settings: Settings) -> None:
    guarded = settings.model_copy(update={"metrics_token": "m" * 32})
    assert (await _metrics(guarded, "203.0.113.9")).status_code == 403
    assert (await _metrics(guarded, "127.0.0.1")).status_code == 403
    allowed = await _metrics(guarded, "203.0.113.9", authorization="Bearer " + "m" * 32)
    assert allowed.status_code == 200 and "latina_gateway_http_requests_total" in allowed.text
