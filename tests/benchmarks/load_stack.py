"""The system as ``make run`` starts it, for the load benchmark (``bench_load``).

``python -m latina_cli run`` (what ``make run`` runs) with ``DATABASE_URL`` set to a fresh
database on an embedded PostgreSQL of the benchmark's own (a temporary folder, a Unix socket:
never a server on port 5432). It applies the migrations and starts the ML service and the
gateway as two uvicorn processes on free loopback ports, with the job worker inside the gateway.

Both image APIs are the fake Leonardo and Replicate servers of ``tests/fakes`` (their real wire
format, Leonardo's uploads into a real SeaweedFS), each holding its generation for
``render_delay`` seconds; they run in a process of their own so that their image work competes
neither with the services' event loops nor with the benchmark's clients for one GIL. The gateway
finds them through its settings (base URLs and keys), as it would find the real ones.

Both services log JSON lines to one file, among them one access line per request with its
server-side duration; ``ServerLog`` reads the lines of a time window back, which shows where a
request's time went (the gateway, or the ML service behind it).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import asyncpg

from gateway.adapters import job_queue
from gateway.flows import accounts
from gateway.flows.unit_of_work import UnitOfWorkFactory
from shared.db.embedded import embedded_server
from shared.db.pool import create_pool
from shared.settings import Settings
from tests.fakes.leonardo import API_KEY, PREFIX, FakeLeonardo
from tests.fakes.replicate import API_TOKEN, FakeReplicate
from tests.s3_server import running_s3_server
from tests.servers import free_port, serve

PROJECT_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 180.0
STOP_TIMEOUT = 30.0
READY_LINE = "Ctrl-C stops everything"
DATABASE = "latina_load"


def _serve_fakes(folder: str, render_delay: float, pipe: Connection) -> None:
    """The fakes' process: serve both until the parent sends anything down ``pipe``."""
    asyncio.run(_fakes(Path(folder), render_delay, pipe))


async def _fakes(folder: Path, render_delay: float, pipe: Connection) -> None:
    with running_s3_server(folder) as s3:
        # As in bench_training: Leonardo's first status poll answers COMPLETE after the hold,
        # Replicate's create is held like a ``Prefer: wait`` the model finishes within. The
        # other steps (Leonardo's presigned upload to S3, the downloads) are real.
        leonardo = FakeLeonardo(s3, polls_before_complete=0)
        leonardo.delay("GET /generations/{id}", render_delay)
        replicate = FakeReplicate(output_as="url")
        replicate.delay("POST /v1/models/{owner}/{name}/predictions", render_delay)
        async with serve(leonardo.app) as leonardo_url, serve(replicate.app) as replicate_url:
            pipe.send((leonardo_url + PREFIX, replicate_url))
            stopped = asyncio.create_task(asyncio.to_thread(pipe.recv))
            while not stopped.done():
                # the fakes record every request with its body; a long run needs none of them
                leonardo.requests.clear()
                replicate.requests.clear()
                await asyncio.wait({stopped}, timeout=5.0)


@dataclass(frozen=True)
class AccessLine:
    at: datetime
    service: str  # "gateway" or "ml"
    route: str  # "POST /api/enhance/train"
    status: int
    seconds: float


@dataclass(frozen=True)
class LogWindow:
    access: list[AccessLine]
    computations: list[tuple[float, float]]  # the ML service's GP fit and acquisition seconds
    warnings: list[tuple[str, str, str]]  # level, logger, message


# Lines that show the ML service at work (a health check or a cached /ml/best is not work).
_ML_WORK_ROUTES = ("/ml/suggest_parameters", "/ml/update_model", "/ml/reward/")


def _entries(text: str) -> list[tuple[datetime, dict[str, Any]]]:
    out = []
    for raw in text.splitlines():
        if not raw.startswith("{"):
            continue
        try:
            entry = json.loads(raw)
            out.append((datetime.fromisoformat(entry["ts"]), entry))
        except (ValueError, KeyError):
            continue
    return out


class ServerLog:
    """The services' JSON log lines, read back by time window."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._last_ml_work: datetime | None = None

    def text(self) -> str:
        return self.path.read_text(errors="replace")

    def last_ml_work(self) -> datetime | None:
        """When the ML service last finished a request or a computation (lines read so far)."""
        with self.path.open("rb") as stream:
            stream.seek(self._offset)
            chunk = stream.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._offset += len(complete)
        for at, entry in _entries(complete.decode(errors="replace")):
            path = str(entry.get("path", ""))
            if entry.get("logger") == "latina.ml.timing" or path.startswith(_ML_WORK_ROUTES):
                self._last_ml_work = max(at, self._last_ml_work or at)
        return self._last_ml_work

    def window(self, start: datetime, end: datetime, skip_request_id: str = "") -> LogWindow:
        """The lines logged from ``start`` to ``end``, but those of ``skip_request_id``."""
        access: list[AccessLine] = []
        computations: list[tuple[float, float]] = []
        warnings: list[tuple[str, str, str]] = []
        for at, entry in _entries(self.text()):
            if not start <= at <= end or (
                skip_request_id and entry.get("request_id") == skip_request_id
            ):
                continue
            if entry.get("logger") == "latina.access" and "duration_ms" in entry:
                path = str(entry.get("path", ""))
                access.append(
                    AccessLine(
                        at,
                        "ml" if path.startswith("/ml/") else "gateway",
                        f"{entry.get('method')} {entry.get('route')}",
                        int(entry.get("status", 0)),
                        float(entry["duration_ms"]) / 1000,
                    )
                )
            elif entry.get("logger") == "latina.ml.timing":
                computations.append(
                    (float(entry["fit_seconds"]), float(entry["acquisition_seconds"]))
                )
            elif entry.get("level") in ("WARNING", "ERROR", "CRITICAL"):
                warnings.append((entry["level"], str(entry.get("logger")), entry["message"]))
        return LogWindow(access, computations, warnings)


@dataclass(frozen=True)
class Stack:
    gateway_url: str
    ml_url: str
    ml_token: str
    pool: asyncpg.Pool[Any]  # the benchmark's own small pool: accounts, the job queue
    log: ServerLog
    settings: Mapping[str, str]  # what the benchmark set, for the report

    async def trainer(self, name: str) -> str:
        """A new trainer account; its API token."""
        _, token = await accounts.create_user(UnitOfWorkFactory(self.pool), name, "trainer")
        return token

    async def work_in_hand(self) -> int:
        """Jobs of the gateway's worker running now or due now."""
        async with self.pool.acquire() as conn:
            return await job_queue.work_in_hand(conn)

    async def pending_suggestions(self, study: str, ttl_seconds: float) -> int:
        """Suggestions the ML service handed out and never saw rated, still counted as pending
        (each one is a pending point of every later acquisition in its study)."""
        async with self.pool.acquire() as conn:
            value = await conn.fetchval(
                "SELECT count(*) FROM ml.suggestions WHERE study = $1 AND issued_at IS NOT NULL"
                " AND observed_at IS NULL AND issued_at > now() - make_interval(secs => $2)",
                study,
                ttl_seconds,
            )
        return int(value or 0)

    async def samples(self) -> int:
        """Rated samples so far (read from the database: asking the gateway costs a GP)."""
        async with self.pool.acquire() as conn:
            value = await conn.fetchval("SELECT samples FROM training_counters WHERE id")
        return int(value or 0)


def _environment(overrides: Mapping[str, str]) -> dict[str, str]:
    # Nothing of the caller's shell may change the system under test: every setting of the
    # project is dropped from the inherited environment, then the benchmark's are added.
    names = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in names}
    env.update(overrides)
    return env


async def _wait_ready(process: subprocess.Popen[bytes], log: ServerLog) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    while READY_LINE not in log.text():
        if process.poll() is not None or loop.time() - started > START_TIMEOUT:
            tail = "\n".join(log.text().splitlines()[-40:])
            raise SystemExit(f"the local stack did not start:\n{tail}")
        await asyncio.sleep(0.3)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)  # latina run stops both services it started
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@asynccontextmanager
async def running_stack(
    home: Path, render_delay: float, settings: Mapping[str, str]
) -> AsyncIterator[Stack]:
    """Database, fake image APIs and ``latina run`` under ``home``; all stopped on exit."""
    server = await asyncio.to_thread(embedded_server, home / "pg", cleanup_mode="delete")
    spawn = multiprocessing.get_context("spawn")
    ours, theirs = spawn.Pipe()
    fakes = spawn.Process(
        target=_serve_fakes, args=(str(home / "s3"), render_delay, theirs), daemon=True
    )
    process: subprocess.Popen[bytes] | None = None
    pool: asyncpg.Pool[Any] | None = None
    try:
        await asyncio.to_thread(server.psql, f"CREATE DATABASE {DATABASE};")
        dsn = str(server.get_uri(DATABASE))
        fakes.start()
        if not await asyncio.to_thread(ours.poll, START_TIMEOUT):
            raise SystemExit("the fake image APIs did not start")
        leonardo_url, replicate_url = ours.recv()
        gateway_port, ml_port = free_port(), free_port()
        ml_token = secrets.token_hex(16)
        chosen = {
            # measured, not limited: the per-user render limits are off
            "RENDER_RATE_PER_MINUTE": "0",
            "PAID_RENDERS_PER_DAY": "0",
            "DATABASE_URL": dsn,
            "LATINA_DATA_DIR": str(home / "data"),
            "PROMPT_EXPORT_DIR": str(home / "prompt-library"),
            "GATEWAY_PORT": str(gateway_port),
            "ML_PORT": str(ml_port),
            "ML_SERVICE_TOKEN": ml_token,
            "LEONARDO_API_KEY": API_KEY,
            "LEONARDO_BASE_URL": leonardo_url,
            "REPLICATE_API_TOKEN": API_TOKEN,
            "REPLICATE_BASE_URL": replicate_url,
            # access lines (one per request, with its duration) are logged at INFO
            "LOG_LEVEL": "INFO",
            "LOG_FORMAT": "json",
            # latina run's own lines (the ready line above all) reach the file at once
            "PYTHONUNBUFFERED": "1",
            **settings,
        }
        log = ServerLog(home / "services.log")
        with log.path.open("wb") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "latina_cli", "run"],
                env=_environment(chosen),
                cwd=PROJECT_ROOT,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        await _wait_ready(process, log)
        pool = await create_pool(dsn, min_size=1, max_size=2)
        yield Stack(
            gateway_url=f"http://127.0.0.1:{gateway_port}",
            ml_url=f"http://127.0.0.1:{ml_port}",
            ml_token=ml_token,
            pool=pool,
            log=log,
            settings=dict(settings),
        )
    finally:
        if pool is not None:
            await pool.close()
        if process is not None:
            await asyncio.to_thread(_stop, process)
        if fakes.is_alive():
            ours.send("stop")
            await asyncio.to_thread(fakes.join, STOP_TIMEOUT)
            if fakes.is_alive():
                fakes.terminate()
        await asyncio.to_thread(server.cleanup)
