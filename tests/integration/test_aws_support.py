"""Settings from SSM Parameter Store (moto's SSM on loopback) and SigV4-signed calls to the ML
service as an AWS_IAM function URL would check them (an independent SigV4 verifier in front of
the real ML app)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import boto3
import httpx
import pytest
from pydantic import ValidationError
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.app import ml_http_client
from ml_service.app import create_app as create_ml
from shared import settings as settings_module
from shared.aws.parameters import ParameterStoreError, read_parameters
from shared.aws.sigv4 import SigV4Auth
from shared.settings import Settings, get_settings, settings_with_parameters
from tests.conftest import ML_TOKEN
from tests.moto import moto_endpoint
from tests.servers import serve
from tests.sigv4_verifier import Principal, sigv4_problem

KEY_ID, SECRET, SESSION = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "session-tok"
REGION = "eu-west-1"


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")


@pytest.fixture
def ssm_endpoint(aws_env: None) -> Iterator[str]:
    yield from moto_endpoint()


def _put(endpoint: str, values: dict[str, tuple[str, str]]) -> Any:
    ssm = boto3.client("ssm", endpoint_url=endpoint, region_name=REGION)
    for name, (kind, value) in values.items():
        ssm.put_parameter(Name=name, Type=kind, Value=value, Overwrite=True)
    return ssm


def test_parameters_under_the_prefix_become_settings_and_win_over_the_environment(
    ssm_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ssm = _put(
        ssm_endpoint,
        {
            "/latina/dev/DATABASE_URL": ("SecureString", "postgresql://db.internal/latina"),
            "/latina/dev/ML_SERVICE_TOKEN": ("SecureString", "t" * 32),
            "/latina/dev/NOT_A_SETTING": ("String", "ignored"),
            "/latina/dev/nested/OPENAI_API_KEY": ("SecureString", "not-read"),
            "/latina/prod/DATABASE_URL": ("SecureString", "postgresql://prod/latina"),
        },
    )
    values = read_parameters("/latina/dev", client=ssm)
    assert values == {
        "database_url": "postgresql://db.internal/latina",
        "ml_service_token": "t" * 32,
        "not_a_setting": "ignored",
    }
    monkeypatch.setenv("DATABASE_URL", "postgresql://from-env/x")
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    settings = settings_with_parameters(values)
    assert settings.database_url == "postgresql://db.internal/latina"  # SSM wins
    assert settings.ml_service_token == "t" * 32
    assert settings.log_level == "DEBUG"  # the environment still counts where SSM is silent


def test_get_settings_reads_ssm_when_the_prefix_is_set(
    ssm_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _put(ssm_endpoint, {"/latina/prod/OPENAI_MODEL": ("String", "gpt-from-ssm")})
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", ssm_endpoint)
    monkeypatch.setenv("LATINA_SSM_PREFIX", "/latina/prod/")
    settings_module.get_settings.cache_clear()
    try:
        assert get_settings().openai_model == "gpt-from-ssm"
    finally:
        settings_module.get_settings.cache_clear()


def test_unreachable_parameter_store_is_a_clear_error(aws_env: None) -> None:
    client = boto3.client("ssm", endpoint_url="http://127.0.0.1:9", region_name=REGION)
    with pytest.raises(ParameterStoreError, match="/latina/dev/"):
        read_parameters("/latina/dev", client=client)


PRINCIPAL = Principal(KEY_ID, SECRET, SESSION, REGION)


class IamFunctionUrl:
    """In front of the real ML app: refuse what AWS_IAM auth would refuse (403, as AWS does)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.checked = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        problem = sigv4_problem(
            PRINCIPAL, scope["method"], scope["path"], scope["query_string"].decode(), headers, body
        )
        if problem:
            await JSONResponse({"Message": f"Forbidden: {problem}"}, 403)(scope, receive, send)
            return
        self.checked += 1
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


@pytest.fixture
async def iam_ml(settings: Settings, aws_env: None) -> AsyncIterator[tuple[str, IamFunctionUrl]]:
    app = create_ml(settings)
    front = IamFunctionUrl(app)
    try:
        async with serve(front) as url:
            yield url, front
    finally:
        await app.state.resources.close()


async def test_gateway_signs_ml_requests_and_the_ml_service_takes_the_token_header(
    settings: Settings, iam_ml: tuple[str, IamFunctionUrl]
) -> None:
    url, front = iam_ml
    iam = settings.model_copy(
        update={"ml_service_url": url + "/", "ml_service_auth": "iam", "aws_region": REGION}
    )
    async with ml_http_client(iam) as client:
        update = {
            "observations": [
                {
                    "observation_id": "o-1",
                    "api": "leonardo",
                    "rating": 4,
                    "parameters": {
                        "init_strength": 0.4,
                        "guidance_scale": 7.0,
                        "controlnet_weight": 0.6,
                    },
                }
            ]
        }
        updated = await client.post("/ml/update_model", json=update)
        assert updated.status_code == 200, updated.text
        suggested = await client.get(
            "/ml/suggest_parameters", params={"apis": "leonardo", "study": "default"}
        )
        assert suggested.status_code == 200, suggested.text
    assert front.checked == 2


async def test_tampered_unsigned_or_tokenless_requests_are_refused(
    iam_ml: tuple[str, IamFunctionUrl],
) -> None:
    url, _ = iam_ml
    observation = {
        "observation_id": "o-9",
        "api": "stable_diffusion",
        "rating": 2,
        "parameters": {
            "prompt_strength": 0.5,
            "guidance_scale": 7.5,
            "num_inference_steps": 30,
            "controlnet_conditioning_scale": 0.8,
        },
    }
    body = json.dumps({"observations": [observation]}).encode()

    def signed(headers: dict[str, str], content: bytes = body) -> httpx.Request:
        request = httpx.Request(
            "POST",
            url + "/ml/update_model",
            headers={"content-type": "application/json", **headers},
            content=content,
        )
        return next(SigV4Auth(REGION).auth_flow(request))

    async with httpx.AsyncClient() as plain:
        good = signed({"x-latina-service-token": ML_TOKEN})
        tampered = httpx.Request("POST", good.url, headers=good.headers, content=body[:-1] + b" ")
        assert (await plain.send(tampered)).status_code == 403
        unsigned = await plain.post(
            url + "/ml/update_model",
            content=body,
            headers={"authorization": f"Bearer {ML_TOKEN}", "content-type": "application/json"},
        )
        assert unsigned.status_code == 403
        tokenless = await plain.send(signed({}))
        assert tokenless.status_code == 401  # AWS let it in; the ML service still wants its token
        assert tokenless.json()["error"]["code"] == "unauthenticated"
        wrong = await plain.send(signed({"x-latina-service-token": "wrong-token"}))
        assert wrong.status_code == 401
        accepted = await plain.send(good)
        assert accepted.status_code == 200, accepted.text


def _production_from_ssm(
    ssm_endpoint: str, monkeypatch: pytest.MonkeyPatch, parameters: dict[str, str]
) -> Settings:
    """``get_settings`` with the environment serverless.yml gives a function (nothing secret)
    and ``parameters`` as SecureStrings under the stage's prefix, as the runbook stores them."""
    ssm = boto3.client("ssm", endpoint_url=ssm_endpoint, region_name=REGION)
    # moto keeps one store per process, whichever server: start from an empty stage
    stale = ssm.get_parameters_by_path(Path="/latina/prod/")["Parameters"]
    if stale:
        ssm.delete_parameters(Names=[p["Name"] for p in stale])
    _put(ssm_endpoint, {f"/latina/prod/{k}": ("SecureString", v) for k, v in parameters.items()})
    for name in ("DATABASE_URL", "LATINA_SECRET_KEY", "ML_SERVICE_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", ssm_endpoint)
    monkeypatch.setenv("LATINA_ENV", "production")
    monkeypatch.setenv("LATINA_SSM_PREFIX", "/latina/prod/")
    settings_module.get_settings.cache_clear()
    try:
        return get_settings()
    finally:
        settings_module.get_settings.cache_clear()


PRODUCTION_SECRETS = {
    "DATABASE_URL": "postgresql://latina@db.internal:5432/latina?sslmode=require",
    "LATINA_SECRET_KEY": "k" * 64,
    "ML_SERVICE_TOKEN": "t" * 48,
}


def test_production_takes_its_secrets_from_ssm_alone(
    ssm_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the production check sees the merged settings, not the environment before SSM
    settings = _production_from_ssm(ssm_endpoint, monkeypatch, PRODUCTION_SECRETS)
    assert settings.latina_env == "production"
    assert settings.database_url == PRODUCTION_SECRETS["DATABASE_URL"]
    assert settings.latina_secret_key == "k" * 64 and settings.ml_service_token == "t" * 48


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("LATINA_SECRET_KEY", "latina-dev-secret-key-change-me", "LATINA_SECRET_KEY must be set"),
        ("ML_SERVICE_TOKEN", "latina-dev-ml-token", "ML_SERVICE_TOKEN must be set"),
        ("ML_SERVICE_TOKEN", "short", "ML_SERVICE_TOKEN must be set"),
        ("DATABASE_URL", "", "DATABASE_URL must be set"),
    ],
)
def test_production_refuses_dev_or_missing_secrets_that_come_from_ssm(
    ssm_endpoint: str, monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    parameters = {k: v for k, v in PRODUCTION_SECRETS.items() if k != name}
    if value:
        parameters[name] = value
    with pytest.raises(ValidationError, match="production settings refused") as refused:
        _production_from_ssm(ssm_endpoint, monkeypatch, parameters)
    # only the setting at fault is named: the others came from SSM and count
    assert message in str(refused.value)
    assert str(refused.value).count("must be set") == 1
