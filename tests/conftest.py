"""Session-wide fixtures: a real PostgreSQL, a database per test, the two apps over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager

from gateway.app import create_app as create_gateway
from gateway.flows import accounts
from gateway.flows.unit_of_work import UnitOfWorkFactory
from ml_service.app import create_app as create_ml
from shared.db.pool import create_pool
from shared.settings import Settings
from tests import pg

ML_TOKEN = "test-ml-token"


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    yield from pg.admin_dsn()


@pytest.fixture(scope="session")
async def pg_template(pg_admin_dsn: str) -> AsyncIterator[str]:
    name = await pg.create_template(pg_admin_dsn)
    yield name
    await pg.drop_database(pg_admin_dsn, name)


@pytest.fixture
async def database_url(pg_admin_dsn: str, pg_template: str) -> AsyncIterator[str]:
    """A fresh, migrated database for this test only."""
    name = await pg.create_database(pg_admin_dsn, pg_template)
    yield pg.with_database(pg_admin_dsn, name)
    await pg.drop_database(pg_admin_dsn, name)


@pytest.fixture
async def db_pool(database_url: str) -> AsyncIterator[asyncpg.Pool[Any]]:
    pool = await create_pool(database_url, min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Local-mode settings on this test's database; the ML service URL points nowhere."""
    return Settings(
        database_url=database_url,
        latina_data_dir=tmp_path / "data",
        migrate_on_start=False,
        ml_service_url="http://127.0.0.1:9",
        ml_service_token=ML_TOKEN,
        ml_service_timeout=1.0,
        ml_gp_workers=0,  # inline: tests of the worker processes ask for them
        ml_image_workers=0,
        ml_delivery_timeout=1.0,
        ml_delivery_retry_delay=0.0,
        gateway_worker=False,
        log_format="text",
        prompt_export_dir=tmp_path / "prompt-library",
        # tests upload faster than trainers: the limits' own tests turn them on
        render_rate_per_minute=0,
        paid_renders_per_day=0,
    )


@pytest.fixture
async def gateway(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The real gateway app, lifespan and all, over ``httpx.ASGITransport``."""
    app = create_gateway(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client


@pytest.fixture
async def ml_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_ml(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ml") as client:
            yield client


@pytest.fixture
async def trainer_token(db_pool: asyncpg.Pool[Any]) -> str:
    _, token = await accounts.create_user(UnitOfWorkFactory(db_pool), "tina", "trainer")
    return token


@pytest.fixture
async def admin_token(db_pool: asyncpg.Pool[Any]) -> str:
    _, token = await accounts.create_user(UnitOfWorkFactory(db_pool), "ada", "admin")
    return token
