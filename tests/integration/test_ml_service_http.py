"""The ML service skeleton over HTTP and through the Lambda handler (Mangum)."""

from __future__ import annotations

import asyncio
import base64
import importlib
import json
import logging
from typing import Any

import httpx
import pytest
from mangum import Mangum

from ml_service.app import create_app
from shared import settings as settings_module
from shared.aws.lambda_entry import lambda_entry
from shared.settings import Settings
from tests.conftest import ML_TOKEN
from tests.lambda_runtime import LambdaRuntime, new_container


async def test_health_needs_no_token_and_reports_the_database(
    ml_client: httpx.AsyncClient,
) -> None:
    response = await ml_client.get("/ml/health")
    assert response.status_code == 200
    body = response.json()
    assert body["database"] == "ok"
    assert body["version"]
    assert body["apis"] == ["leonardo", "stable_diffusion"]


async def test_health_says_the_database_is_down_without_naming_it(settings: Settings) -> None:
    nowhere = "postgresql://secret-user:secret-pw@127.0.0.1:9/secret_db"
    app = create_app(settings.model_copy(update={"database_url": nowhere}))
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://ml") as client:
            response = await client.get("/ml/health")
    finally:
        await app.state.resources.close()
    assert response.status_code == 503  # degraded: a load balancer takes it out
    assert response.json()["status"] == "degraded"
    assert response.json()["database"] == "unreachable"
    assert "secret" not in response.text and "127.0.0.1" not in response.text


@pytest.mark.parametrize("header", [None, "Bearer wrong-token", "Basic abc", f"Token {ML_TOKEN}"])
async def test_other_routes_refuse_a_missing_or_wrong_token(
    ml_client: httpx.AsyncClient, header: str | None
) -> None:
    headers = {"Authorization": header} if header else {}
    response = await ml_client.get("/ml/search_space", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"


async def test_search_space_with_the_token_is_the_default_space(
    ml_client: httpx.AsyncClient,
) -> None:
    response = await ml_client.get(
        "/ml/search_space", headers={"Authorization": f"Bearer {ML_TOKEN}"}
    )
    assert response.status_code == 200
    space = response.json()["search_space"]
    steps = next(p for p in space["stable_diffusion"] if p["name"] == "num_inference_steps")
    assert steps == {"name": "num_inference_steps", "type": "int", "bounds": [20, 60]}
    assert [p["name"] for p in space["leonardo"]] == [
        "init_strength",
        "guidance_scale",
        "controlnet_weight",
    ]


async def test_unknown_ml_path_is_json_404(ml_client: httpx.AsyncClient) -> None:
    response = await ml_client.get("/ml/nothing")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def function_url_event(path: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"host": "abc.lambda-url.us-east-1.on.aws", **(headers or {})},
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "abc",
            "domainName": "abc.lambda-url.us-east-1.on.aws",
            "domainPrefix": "abc",
            "http": {
                "method": "GET",
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "test",
            },
            "requestId": "req-1",
            "routeKey": "$default",
            "stage": "$default",
            "time": "26/Nov/2026:00:00:00 +0000",
            "timeEpoch": 0,
        },
        "isBase64Encoded": False,
    }


def _body(result: dict[str, Any]) -> dict[str, Any]:
    raw = result["body"]
    if result.get("isBase64Encoded"):
        raw = base64.b64decode(raw).decode()
    decoded: dict[str, Any] = json.loads(raw)
    return decoded


async def test_lambda_handler_serves_function_url_events(settings: Settings) -> None:
    app = create_app(settings)
    handler = Mangum(app, lifespan="off")
    runtime = LambdaRuntime()
    try:
        health = await runtime.invoke(handler, function_url_event("/ml/health"))
        assert health["statusCode"] == 200
        assert _body(health)["database"] == "ok"
        refused = await runtime.invoke(handler, function_url_event("/ml/search_space"))
        assert refused["statusCode"] == 401
        assert _body(refused)["error"]["code"] == "unauthenticated"
        allowed = await runtime.invoke(
            handler,
            function_url_event("/ml/search_space", {"authorization": f"Bearer {ML_TOKEN}"}),
        )
        assert allowed["statusCode"] == 200
        # a warm container answers again from the same pool
        again = await runtime.invoke(handler, function_url_event("/ml/health"))
        assert again["statusCode"] == 200
    finally:
        await runtime.run(app.state.resources.close)
        await runtime.close()


async def test_handler_module_builds_its_app_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, database_url: str, tmp_path: Any
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("ML_SERVICE_TOKEN", "env-token")
    monkeypatch.setenv("LATINA_DATA_DIR", str(tmp_path))
    settings_module.get_settings.cache_clear()
    runtime = LambdaRuntime()
    root_handlers = logging.getLogger().handlers[:]
    try:
        module = importlib.reload(importlib.import_module("ml_service.handler"))
        assert isinstance(module.handler, Mangum)  # not wrapped off Lambda
        result = await runtime.invoke(
            module.handler,
            function_url_event("/ml/search_space", {"authorization": "Bearer env-token"}),
        )
        assert result["statusCode"] == 200
        health = await runtime.invoke(module.handler, function_url_event("/ml/health"))
        assert _body(health)["database"] == "ok"
        await runtime.run(module.app.state.resources.close)
    finally:
        await runtime.close()
        settings_module.get_settings.cache_clear()
        logging.getLogger().handlers[:] = root_handlers


def http_api_v2_event(
    method: str, path: str, *, query: str = "", body: dict[str, Any] | None = None
) -> dict[str, Any]:
    """An API Gateway HTTP API (payload 2.0) event with a JSON body."""
    event = function_url_event(
        path, {"authorization": f"Bearer {ML_TOKEN}", "content-type": "application/json"}
    )
    event["routeKey"] = f"{method} {path}"
    event["rawQueryString"] = query
    event["requestContext"]["http"]["method"] = method
    event["requestContext"]["domainName"] = "abc.execute-api.us-east-1.amazonaws.com"
    if body is not None:
        event["body"] = json.dumps(body)
    return event


@pytest.mark.parametrize("kind", ["function_url", "http_api_v2"])
async def test_lambda_handler_suggests_and_updates(settings: Settings, kind: str) -> None:
    app = create_app(settings)
    handler = Mangum(app, lifespan="off")
    runtime = LambdaRuntime()

    def event(method: str, path: str, query: str = "", body: Any = None) -> dict[str, Any]:
        built = http_api_v2_event(method, path, query=query, body=body)
        if kind == "function_url":
            built["routeKey"] = "$default"
            built["requestContext"]["domainName"] = "abc.lambda-url.us-east-1.on.aws"
        return built

    try:
        suggested = await runtime.invoke(
            handler, event("GET", "/ml/suggest_parameters", "apis=leonardo&study=lambda")
        )
        assert suggested["statusCode"] == 200
        suggestion = _body(suggested)["suggestions"][0]
        update = {
            "study": "lambda",
            "observations": [
                {
                    "observation_id": "exp_1:A",
                    "suggestion_id": suggestion["suggestion_id"],
                    "api": "leonardo",
                    "parameters": suggestion["parameters"],
                    "rating": 4,
                }
            ],
        }
        updated = await runtime.invoke(handler, event("POST", "/ml/update_model", body=update))
        assert updated["statusCode"] == 200
        assert _body(updated)["n_observations"]["leonardo"] == 1
        bad = {**update, "observations": [{**update["observations"][0], "rating": 9}]}
        refused = await runtime.invoke(handler, event("POST", "/ml/update_model", body=bad))
        assert refused["statusCode"] == 422
        assert _body(refused)["error"]["code"] == "rating_out_of_range"
        health = await runtime.invoke(handler, event("GET", "/ml/health"))
        assert _body(health)["n_observations"] == 1
    finally:
        await runtime.run(app.state.resources.close)
        await runtime.close()


class FakeLambdaContext:
    function_name = "latina-ml"
    function_version = "$LATEST"
    memory_limit_in_mb = 1769
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:latina-ml"
    aws_request_id = "req-metrics"


async def test_on_lambda_cold_start_and_fit_timings_are_published(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    from ml_service import telemetry

    app = create_app(settings)
    app.state.resources.optimizer.n_initial = 1
    new_container()  # an earlier test in this process may have had the cold start
    telemetry.enable_lambda_metrics()
    handler = lambda_entry(Mangum(app, lifespan="off"), on_lambda=True, service="latina-ml")
    runtime = LambdaRuntime()
    context = FakeLambdaContext()

    async def invoke(event: dict[str, Any]) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(runtime._thread, handler, event, context)

    try:
        ratings = {
            "observation_id": "m1",
            "api": "leonardo",
            "rating": 2,
            "parameters": {"init_strength": 0.2, "guidance_scale": 5.0, "controlnet_weight": 0.5},
        }
        second = {
            **ratings,
            "observation_id": "m2",
            "rating": 5,
            "parameters": {"init_strength": 0.5, "guidance_scale": 11.0, "controlnet_weight": 1.0},
        }
        await invoke(
            http_api_v2_event("POST", "/ml/update_model", body={"observations": [ratings, second]})
        )
        await runtime.run(app.state.resources.work.drain)
        await invoke(http_api_v2_event("GET", "/ml/suggest_parameters", query="apis=leonardo"))
    finally:
        await runtime.run(app.state.resources.close)
        await runtime.close()
        telemetry._metrics = None
    emitted = [
        json.loads(line)
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("{") and "_aws" in line
    ]
    names = {
        m["Name"] for e in emitted for d in e["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]
    }
    assert {"ColdStart", "FitSeconds", "AcquisitionSeconds"} <= names
