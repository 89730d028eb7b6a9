"""The deployment the rehearsal runs: what ``make package`` built and what the ML image holds,
started as Lambda would start them, against real PostgreSQL, the real S3 server and moto's SSM.

Everything a function gets comes from the packaged template (handler, environment, schedule
input) or from SSM as ``infra/RUNBOOK.md`` stores it. ``REDIRECTS`` is the complete list of what
the rehearsal adds, all of it endpoints: AWS's own services and the three external APIs live on
loopback here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests import pg
from tests.fakes.leonardo import API_KEY as LEONARDO_KEY
from tests.fakes.leonardo import PREFIX as LEONARDO_PREFIX
from tests.fakes.leonardo import FakeLeonardo
from tests.fakes.openai import API_KEY as OPENAI_KEY
from tests.fakes.openai import FakeOpenAI
from tests.fakes.replicate import API_TOKEN as REPLICATE_TOKEN
from tests.fakes.replicate import FakeReplicate
from tests.moto import moto_endpoint
from tests.rehearsal import runbook
from tests.rehearsal.lambda_host import FunctionUrl, LambdaFunction, function_url
from tests.rehearsal.ml_image import (
    TaskRoot,
    build_task_root,
    default_cache_dir,
    lambda_python,
    python_version_of,
)
from tests.rehearsal.package import REPO, Package, PackageBuild, resolve
from tests.s3_server import S3Server, s3_server, sync_client
from tests.servers import serve
from tests.sigv4_verifier import Principal

__all__ = ["s3_server"]

STAGE = "dev"
REGION = "eu-west-1"

# What the rehearsal prints at the end of the session: cold starts and build times.
REPORT: dict[str, str] = {}


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if REPORT:
        terminalreporter.section("production rehearsal")
        for line in REPORT.values():
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def runtime_python() -> tuple[Path, str]:
    python = lambda_python()
    version = python_version_of(python)
    REPORT["python"] = f"functions run on Python {version}" + (
        "" if version == "3.12" else " (the Lambda runtime's 3.12 is not on this machine)"
    )
    return python, version


_BUILD: list[PackageBuild] = []  # the session's package build, started after collection


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start packaging as soon as the session knows it will run the rehearsal (about two
    minutes of ``serverless package``, which overlaps the tests before it)."""
    here = Path(__file__).parent
    wanted = any(Path(str(item.path)).is_relative_to(here) for item in session.items)
    if not wanted or os.environ.get("REHEARSAL_PACKAGE"):
        return
    folder = Path(tempfile.mkdtemp(prefix="latina-rehearsal-")) / "serverless"
    _BUILD.append(PackageBuild(folder, python_version_of(lambda_python())))


def pytest_sessionfinish(session: pytest.Session) -> None:
    for build in _BUILD:
        build.stop()
        shutil.rmtree(build.folder.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def package(runtime_python: tuple[Path, str]) -> Package:
    reuse = os.environ.get("REHEARSAL_PACKAGE")  # while working on the rehearsal itself
    if reuse:
        REPORT["package"] = f"package reused from {reuse} (REHEARSAL_PACKAGE)"
        return Package(Path(reuse), 0.0)
    built = _BUILD[0].result()
    REPORT["package"] = f"make package-artifacts: {built.seconds:.0f} s (during the other tests)"
    return built


@pytest.fixture(scope="session")
def gateway_code(package: Package, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return package.unzip(tmp_path_factory.mktemp("task") / "gateway")


@pytest.fixture(scope="session")
def ml_image(
    runtime_python: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory
) -> TaskRoot:
    root = build_task_root(
        REPO,
        default_cache_dir(REPO),
        runtime_python[0],
        into=tmp_path_factory.mktemp("ml") / "image",
    )
    how = (
        "from the cache in .venv/rehearsal/"
        if root.cached
        else f"installed in {root.install_seconds:.0f} s"
    )
    REPORT["ml_image"] = f"ML image's task root from infra/Dockerfile.ml: packages {how}"
    return root


@pytest.fixture(scope="session")
def ssm_url() -> Iterator[str]:
    yield from moto_endpoint()


@dataclass
class Fakes:
    leonardo: FakeLeonardo
    replicate: FakeReplicate
    openai: FakeOpenAI
    urls: dict[str, str] = field(default_factory=dict)


@dataclass
class Deployment:
    """The stage as it runs: function URLs, the other functions, SSM and the buckets."""

    gateway_url: str
    ml_url: str
    ml_front: FunctionUrl
    functions: dict[str, LambdaFunction]
    schedule: dict[str, Any]  # the worker's scheduled event, from the template
    ssm: Any
    s3: Any
    buckets: dict[str, str]  # logical name -> bucket
    parameters: dict[str, str]  # what SSM holds under the stage's prefix, by setting name
    database_url: str
    fakes: Fakes
    ssm_url: str

    async def invoke(self, name: str, event: Any) -> Any:
        return await self.functions[name].invoke(event)


def operator_environment(ssm_url: str, **values: str) -> dict[str, str]:
    """An operator's shell for the runbook's blocks: AWS reached at moto, the stage set."""
    return {
        "STAGE": STAGE,
        "AWS_ENDPOINT_URL": ssm_url,
        "AWS_ACCESS_KEY_ID": "operator",
        "AWS_SECRET_ACCESS_KEY": "operator",
        "AWS_DEFAULT_REGION": REGION,
        **values,
    }


def stored_parameters(ssm: Any) -> dict[str, str]:
    pages = ssm.get_paginator("get_parameters_by_path").paginate(
        Path=f"/latina/{STAGE}/", WithDecryption=True
    )
    return {p["Name"].rsplit("/", 1)[-1]: p["Value"] for page in pages for p in page["Parameters"]}


@contextlib.asynccontextmanager
async def deployment(
    *,
    package: Package,
    gateway_code: Path,
    ml_image: TaskRoot,
    python: Path,
    s3_server: S3Server,
    ssm_url: str,
    database_url: str,
    workdir: Path,
) -> AsyncIterator[Deployment]:
    functions_in_template = package.functions()
    suffix = uuid.uuid4().hex[:8]
    buckets = {
        logical: f"latina-{STAGE}-{logical.removesuffix('Bucket').lower()}-{suffix}"
        for logical in ("UploadsBucket", "EnhancedBucket", "ModelsBucket", "PromptsBucket")
    }
    s3 = sync_client(s3_server)
    for bucket in buckets.values():
        s3.create_bucket(Bucket=bucket)  # the stack creates them; the functions must not
    ssm = boto3.client(
        "ssm",
        endpoint_url=ssm_url,
        region_name=REGION,
        aws_access_key_id="rehearsal",
        aws_secret_access_key="rehearsal",
    )
    leonardo = FakeLeonardo(s3_server, polls_before_complete=1)
    replicate = FakeReplicate(polls_before_success=1)
    openai = FakeOpenAI()
    fakes = Fakes(leonardo, replicate, openai)
    # The functions' keys: the S3 server's identity (it knows no temporary credentials, so
    # no session token, which a role's keys on Lambda would carry)
    principal = Principal(s3_server.access_key_id, s3_server.secret_access_key, None, REGION)
    async with contextlib.AsyncExitStack() as stack:
        leonardo_url = await stack.enter_async_context(serve(leonardo.app))
        replicate_url = await stack.enter_async_context(serve(replicate.app))
        openai_url = await stack.enter_async_context(serve(openai.app))
        # The runbook's first deploy, steps 2 and 3: its own commands store the secrets
        await runbook.run(
            "secrets",
            operator_environment(
                ssm_url,
                DATABASE_URL=database_url,
                LEONARDO_API_KEY=LEONARDO_KEY,
                REPLICATE_API_TOKEN=REPLICATE_TOKEN,
                OPENAI_API_KEY=OPENAI_KEY,
            ),
        )
        await runbook.run("ecr-repository", operator_environment(ssm_url))
        parameters = stored_parameters(ssm)
        # Everything the rehearsal adds to a function's environment: where things are.
        redirects = {
            "AWS_ENDPOINT_URL_SSM": ssm_url,
            "AWS_ENDPOINT_URL_S3": s3_server.endpoint_url,
            "LEONARDO_BASE_URL": leonardo_url + LEONARDO_PREFIX,
            "REPLICATE_BASE_URL": replicate_url,
            "OPENAI_BASE_URL": openai_url + "/v1",
        }
        lambda_environment = {
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": principal.key_id,
            "AWS_SECRET_ACCESS_KEY": principal.secret,
        }
        references = {logical: bucket for logical, bucket in buckets.items()}

        def environment(short: str) -> dict[str, str]:
            template = functions_in_template[short]
            resolved = {k: resolve(v, references) for k, v in template.environment.items()}
            return {**resolved, **lambda_environment, **redirects}

        running: dict[str, LambdaFunction] = {}

        def function(short: str, handler: str, code: list[Path], version: str) -> LambdaFunction:
            template = functions_in_template[short]
            created = LambdaFunction(
                template.name,
                handler,
                code,
                environment(short),
                python,
                workdir,
                timeout=template.timeout,
                memory_mb=template.memory_mb,
                runtime_version=version,
            )
            running[short] = created
            return created

        version = functions_in_template["gateway"].runtime or "python3.12"
        ml = function("ml", ml_image.handler, ml_image.sys_path, ml_image.python_version)
        stack.push_async_callback(ml.stop)
        ml_url, ml_front = await stack.enter_async_context(function_url(ml, iam=principal))
        references["MlLambdaFunctionUrl.FunctionUrl"] = ml_url + "/"
        for short in ("gateway", "worker", "migrate"):
            handler = functions_in_template[short].handler
            assert handler is not None
            started = function(short, handler, [gateway_code], version.removeprefix("python"))
            stack.push_async_callback(started.stop)
        gateway_url, _ = await stack.enter_async_context(function_url(running["gateway"]))
        fakes.urls = {"leonardo": leonardo_url, "replicate": replicate_url, "openai": openai_url}
        yield Deployment(
            gateway_url=gateway_url,
            ml_url=ml_url,
            ml_front=ml_front,
            functions=running,
            schedule=functions_in_template["worker"].schedule_input,
            ssm=ssm,
            s3=s3,
            buckets=buckets,
            parameters=parameters,
            database_url=database_url,
            fakes=fakes,
            ssm_url=ssm_url,
        )


@pytest.fixture(scope="session")
async def empty_database(pg_admin_dsn: str) -> AsyncIterator[str]:
    """A database with nothing in it: the migrate function creates the schema."""
    name = await pg.create_empty_database(pg_admin_dsn, "latina_rehearsal")
    yield pg.with_database(pg_admin_dsn, name)
    await pg.drop_database(pg_admin_dsn, name)


@pytest.fixture(scope="session")
async def stage(
    package: Package,
    gateway_code: Path,
    ml_image: TaskRoot,
    runtime_python: tuple[Path, str],
    s3_server: S3Server,
    ssm_url: str,
    empty_database: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Deployment]:
    started = time.perf_counter()
    async with deployment(
        package=package,
        gateway_code=gateway_code,
        ml_image=ml_image,
        python=runtime_python[0],
        s3_server=s3_server,
        ssm_url=ssm_url,
        database_url=empty_database,
        workdir=tmp_path_factory.mktemp("logs"),
    ) as deployed:
        yield deployed
        cold = ", ".join(
            f"{f.name.rsplit('-', 1)[-1]} {f.cold_start.init_seconds or 0:.2f} s import"
            f" + {f.cold_start.first_invocation_seconds or 0:.2f} s first request"
            for f in deployed.functions.values()
            if f.invocations
        )
        REPORT["cold"] = f"cold starts: {cold}"
        REPORT["stage"] = f"stage up for {time.perf_counter() - started:.0f} s"
    await asyncio.sleep(0)
