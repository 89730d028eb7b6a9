"""The gateway's Lambda functions invoked as the runtime would: function-URL events for the
HTTP app, scheduled events for the worker, the migrate function; all on the real PostgreSQL."""

from __future__ import annotations

import base64
import importlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from mangum import Mangum

from gateway.adapters import job_queue
from gateway.app import create_app
from gateway.serverless import WORKER_SERVICE, Migrator, ScheduledWorker
from ml_service.app import create_app as create_ml
from shared import settings as settings_module
from shared.aws.lambda_entry import lambda_entry
from shared.db.migrations import ALL_SETS, load_migrations
from shared.settings import Settings
from shared.wire.ml import ObservationIn
from tests import pg
from tests.conftest import ML_TOKEN
from tests.images import interior
from tests.lambda_runtime import LambdaRuntime, new_container
from tests.servers import serve

HOST = "gw123.lambda-url.eu-west-1.on.aws"


class FakeContext:
    """The attributes of a Lambda context that the handlers and powertools read."""

    function_name = "latina-dev-worker"
    function_version = "$LATEST"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:eu-west-1:000000000000:function:latina-dev-worker"
    aws_request_id = "req-worker"

    def __init__(self, remaining_ms: int = 300_000) -> None:
        self._remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self._remaining_ms


def url_event(
    method: str, path: str, *, headers: dict[str, str] | None = None, body: bytes = b""
) -> dict[str, Any]:
    """A Lambda function URL event (payload 2.0); bodies travel base64-encoded, as binary do."""
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"host": HOST, "x-forwarded-proto": "https", **(headers or {})},
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "gw123",
            "domainName": HOST,
            "domainPrefix": "gw123",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "test",
            },
            "requestId": "req-gw",
            "routeKey": "$default",
            "stage": "$default",
            "time": "27/Nov/2026:00:00:00 +0000",
            "timeEpoch": 0,
        },
        "body": base64.b64encode(body).decode() if body else None,
        "isBase64Encoded": bool(body),
    }


def scheduled_event() -> dict[str, Any]:
    """What EventBridge sends on a ``rate(1 minute)`` schedule."""
    return {
        "version": "0",
        "id": "0f3e8d3c-0000-0000-0000-000000000000",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "000000000000",
        "time": "2026-11-27T03:00:00Z",
        "region": "eu-west-1",
        "resources": ["arn:aws:events:eu-west-1:000000000000:rule/latina-dev-worker"],
        "detail": {},
    }


def body_of(result: dict[str, Any]) -> Any:
    raw = result.get("body") or ""
    if result.get("isBase64Encoded"):
        raw = base64.b64decode(raw).decode()
    return json.loads(raw)


def multipart_upload(token: str) -> tuple[dict[str, str], bytes]:
    request = httpx.Request(
        "POST",
        f"https://{HOST}/api/enhance/train",
        files={"image": ("room.jpg", interior(), "image/jpeg")},
    )
    headers = {
        "authorization": f"Bearer {token}",
        "content-type": request.headers["content-type"],
    }
    return headers, request.read()


@pytest.fixture
async def runtime() -> AsyncIterator[LambdaRuntime]:
    runtime = LambdaRuntime()
    yield runtime
    await runtime.close()


@pytest.fixture
async def gateway_handler(settings: Settings, runtime: LambdaRuntime) -> AsyncIterator[Mangum]:
    """The gateway as its Lambda runs it: lazily opened resources, closed after the test."""
    app = create_app(settings, lazy=True)
    yield Mangum(app, lifespan="off")
    await runtime.run(app.state.close_resources)


async def test_function_url_events_train_and_rate_through_the_gateway_handler(
    gateway_handler: Mangum,
    trainer_token: str,
    runtime: LambdaRuntime,
    db_pool: asyncpg.Pool[Any],
) -> None:
    handler = gateway_handler
    health = await runtime.invoke(handler, url_event("GET", "/healthz"))
    assert health["statusCode"] == 200
    refused = await runtime.invoke(handler, url_event("GET", "/api/train/status"))
    assert refused["statusCode"] == 401
    assert body_of(refused)["error"]["code"] == "unauthenticated"

    headers, body = multipart_upload(trainer_token)
    trained = await runtime.invoke(
        handler, url_event("POST", "/api/enhance/train", headers=headers, body=body)
    )
    assert trained["statusCode"] == 201, trained
    experiment = body_of(trained)
    options = {o["option"]: o for o in experiment["options"]}
    assert set(options) == {"A", "B"} and all("image_id" in o for o in options.values())

    rating = {
        "experiment_id": experiment["experiment_id"],
        "ratings": [
            {"option": o, "image_id": options[o]["image_id"], "rating": r, "comments": "ok"}
            for o, r in (("A", 2), ("B", 4))
        ],
    }
    rated = await runtime.invoke(
        handler,
        url_event(
            "POST",
            "/api/train/rate",
            headers={
                "authorization": f"Bearer {trainer_token}",
                "content-type": "application/json",
            },
            body=json.dumps(rating).encode(),
        ),
    )
    assert rated["statusCode"] == 200, rated
    # The ML service is unreachable: the rating is kept and its update waits in the queue.
    assert body_of(rated)["ml_updated"] is False
    status = await runtime.invoke(
        handler,
        url_event("GET", "/api/train/status", headers={"authorization": f"Bearer {trainer_token}"}),
    )
    assert body_of(status)["samples_collected"] == 1
    async with db_pool.acquire() as conn:
        queued = await conn.fetchval(
            "SELECT count(*) FROM pgqueuer WHERE entrypoint = 'ml_update' AND status = 'queued'"
        )
    assert queued == 1


async def test_scheduled_worker_delivers_queued_ml_updates_then_finds_nothing(
    settings: Settings,
    gateway_handler: Mangum,
    trainer_token: str,
    runtime: LambdaRuntime,
) -> None:
    # A rating made while the ML service was down ...
    handler = gateway_handler
    headers, body = multipart_upload(trainer_token)
    trained = body_of(
        await runtime.invoke(
            handler, url_event("POST", "/api/enhance/train", headers=headers, body=body)
        )
    )
    rating = {
        "experiment_id": trained["experiment_id"],
        "ratings": [
            {"option": o["option"], "image_id": o["image_id"], "rating": 3, "comments": ""}
            for o in trained["options"]
        ],
    }
    auth = {"authorization": f"Bearer {trainer_token}", "content-type": "application/json"}
    rated = await runtime.invoke(
        handler,
        url_event("POST", "/api/train/rate", headers=auth, body=json.dumps(rating).encode()),
    )
    assert body_of(rated)["ml_updated"] is False

    # ... is delivered by the next scheduled run once the ML service is up.
    ml_app = create_ml(settings)
    try:
        async with serve(ml_app) as ml_url:
            worker = ScheduledWorker(settings.model_copy(update={"ml_service_url": ml_url}))
            try:
                await _drain_twice(worker, runtime, ml_url)
            finally:
                await runtime.run(worker.aclose)
    finally:
        await ml_app.state.resources.close()


async def _drain_twice(worker: ScheduledWorker, runtime: LambdaRuntime, ml_url: str) -> None:
    first = await runtime.invoke_with_context(worker, scheduled_event(), FakeContext())
    assert first["queued_before"].get("ml_update") == 1
    assert first["queued_after"].get("ml_update", 0) == 0
    assert first["stopped_at_deadline"] is False
    async with httpx.AsyncClient(base_url=ml_url) as ml:
        health = (await ml.get("/ml/health")).json()
    assert health["n_observations"] == 2  # both options of the one rating
    # a warm container drains again with the resources it already has
    second = await runtime.invoke_with_context(worker, scheduled_event(), FakeContext())
    assert second["queued_before"].get("ml_update", 0) == 0


async def test_migrate_function_migrates_an_empty_database_once(
    pg_admin_dsn: str, tmp_path: Path, runtime: LambdaRuntime
) -> None:
    name = await pg.create_database(pg_admin_dsn, "template0")
    try:
        settings = Settings(
            database_url=pg.with_database(pg_admin_dsn, name),
            latina_data_dir=tmp_path,
            log_format="text",
        )
        migrator = Migrator(settings)
        first = await runtime.invoke(migrator, {"source": "latina", "action": "migrate"})
        expected = [
            f"{component}/{m.name}"
            for component, folder in ALL_SETS.items()
            for m in load_migrations(component, folder)
        ]
        assert sorted(first["applied"]) == sorted(expected)
        again = await runtime.invoke(migrator, {})
        assert again == {
            "applied": [],
            "already_applied": len(expected),
            "changed_after_applied": [],
        }
        conn = await asyncpg.connect(pg.with_database(pg_admin_dsn, name))
        try:
            tables = await conn.fetchval(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = 'pgqueuer'"
            )
        finally:
            await conn.close()
        assert tables == 1
    finally:
        await pg.drop_database(pg_admin_dsn, name)


async def test_handler_module_wires_http_worker_and_migrate_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, database_url: str, tmp_path: Path, runtime: LambdaRuntime
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("LATINA_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("GATEWAY_WORKER", "false")
    monkeypatch.setenv("ML_SERVICE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("ML_SERVICE_TOKEN", ML_TOKEN)
    monkeypatch.setenv("PROMPT_EXPORT_DIR", str(tmp_path / "prompts"))
    settings_module.get_settings.cache_clear()
    root_handlers = logging.getLogger().handlers[:]
    try:
        module = importlib.reload(importlib.import_module("gateway.handler"))
        ready = await runtime.invoke(module.http, url_event("GET", "/readyz"))
        assert ready["statusCode"] == 200, ready
        drained = await runtime.invoke_with_context(module.worker, scheduled_event(), FakeContext())
        assert drained["queued_after"] == {}
        migrated = await runtime.invoke(module.migrate, {})
        assert migrated["applied"] == []  # the test database is migrated already
        await runtime.run(module.app.state.close_resources)
        await runtime.run(module.worker.aclose)
    finally:
        settings_module.get_settings.cache_clear()
        logging.getLogger().handlers[:] = root_handlers


async def test_on_lambda_the_worker_publishes_the_queue_length_as_metrics(
    settings: Settings,
    runtime: LambdaRuntime,
    db_pool: asyncpg.Pool[Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    observation = ObservationIn(
        observation_id="exp_later:A",
        api="leonardo",
        rating=4,
        parameters={"init_strength": 0.4, "guidance_scale": 7.0, "controlnet_weight": 0.6},
    )
    async with db_pool.acquire() as conn:  # not due for an hour: the drain leaves it queued
        await job_queue.enqueue_ml_update(conn, "exp_later", [observation], delay_seconds=3600)
    new_container()  # an earlier test in this process may have had the cold start
    on_lambda = settings.model_copy(update={"aws_lambda_function_name": "latina-dev-worker"})
    worker = ScheduledWorker(on_lambda)
    handler = lambda_entry(worker, on_lambda=True, service=WORKER_SERVICE)
    try:
        # 80 s left, 60 s margin: a drain that waited for the deferred job would stop at 20 s
        context = FakeContext(remaining_ms=80_000)
        result = await runtime.invoke_with_context(handler, scheduled_event(), context)
    finally:
        await runtime.run(worker.aclose)
    assert result["queued_after"] == {"ml_update": 1}
    # A job deferred to later must not hold the function until its deadline.
    assert result["stopped_at_deadline"] is False
    emitted = [
        json.loads(line)
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("{") and "_aws" in line
    ]
    values = {key: e[key] for e in emitted for key in ("QueuedJobs", "QueuedMLUpdates") if key in e}
    assert values == {"QueuedJobs": [1.0], "QueuedMLUpdates": [1.0]}
    assert any("ColdStart" in e for e in emitted)
