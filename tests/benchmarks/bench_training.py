"""The training loop's speed: train with slow providers, rate under 20 concurrent clients.

Everything runs in this process on loopback: the gateway (ASGI, lifespan and all), the real ML
service (uvicorn), an embedded PostgreSQL shared by both, and for train the fake Leonardo and
Replicate servers with a real SeaweedFS behind Leonardo's uploads.

Train: both arms use the real Leonardo and Replicate clients, each fake holding its generation
for ``RENDER_DELAY`` seconds, so one render costs about that much upstream waiting. The two arms
render concurrently, so train's p50 divided by ``RENDER_DELAY`` stays near 1 (plus validation,
storage, the ML suggestion and the database), not 2. The same run measures the providers alone,
called directly, so the gateway's own overhead can be read off.

Rate: experiments are made first with the local engine; then 20 clients rate distinct
experiments as fast as they can against the real PostgreSQL, with the real ML service answering
(immediate delivery) and with it unreachable (the update stays queued for the worker), and once
more with a pool as large as the number of clients. Beside latency and throughput each row
shows why it is what it is: how often the gateway's pool was fully checked out, how many
backends waited for a row lock (and on which statement), how late the event loop ran and how
much CPU this process used. The ML service shares this process, so its background model fits
compete with the gateway for the CPU; deployed, it runs elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import shutil
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager

from gateway.adapters.ml_client import fallback_suggestion
from gateway.app import create_app
from gateway.flows import accounts
from gateway.providers.base import ApiName, RenderRequest
from gateway.state import GatewayState
from ml_service.app import create_app as create_ml
from shared.db.embedded import embedded_server
from shared.db.pool import connect
from shared.settings import Settings
from tests.fakes.leonardo import API_KEY, PREFIX, FakeLeonardo
from tests.fakes.replicate import API_TOKEN, FakeReplicate
from tests.images import interior
from tests.s3_server import running_s3_server
from tests.servers import free_port, serve

RENDER_DELAY = 0.300
CLIENTS = 20
# Train uploads a photo-sized image so decoding, re-encoding and storage cost what they would.
UPLOAD_SIZE = (640, 480)
DEFAULT_POOL_MAX = Settings.model_fields["database_pool_max"].default
# How often the pool watcher looks; fine enough for ratings that take milliseconds.
POOL_SAMPLE_SECONDS = 0.002
LOCK_SAMPLE_SECONDS = 0.01


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[94]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f} ms"


def _say(message: str) -> None:
    print(message, flush=True)


@asynccontextmanager
async def _gateway(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, GatewayState]]:
    """The real gateway over ASGI, with a fresh trainer's token on every request."""
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench", timeout=120
        ) as client:
            state: GatewayState = manager._state["gateway"]
            _, token = await accounts.create_user(state.uows, f"bench{time.time_ns()}", "trainer")
            client.headers["Authorization"] = f"Bearer {token}"
            yield client, state


async def _timed(n: int, call: Callable[[], Awaitable[Any]]) -> list[float]:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        times.append(time.perf_counter() - started)
    return times


async def _train_bench(base: Settings, home: Path, n: int) -> list[str]:
    image = interior(*UPLOAD_SIZE)
    with running_s3_server(home / "s3") as s3:
        # Where each fake spends the 300 ms: in the one request of its flow that stands for the
        # model running. Leonardo's first status poll answers COMPLETE after the hold (the real
        # API would answer PENDING for a while; a tiny poll interval makes that equivalent
        # without adding up to a poll interval of slack). Replicate's create is held like a
        # ``Prefer: wait`` that the model finishes within, so no poll follows at all. The
        # remaining steps (Leonardo's presigned upload to S3, the downloads) are real and cost
        # what they cost; the providers-alone rows show how much that is.
        leonardo = FakeLeonardo(s3, polls_before_complete=0)
        leonardo.delay("GET /generations/{id}", RENDER_DELAY)
        replicate = FakeReplicate(output_as="url")
        replicate.delay("POST /v1/models/{owner}/{name}/predictions", RENDER_DELAY)
        async with serve(leonardo.app) as leo_url, serve(replicate.app) as rep_url:
            settings = base.model_copy(
                update={
                    "leonardo_api_key": API_KEY,
                    "leonardo_base_url": leo_url + PREFIX,
                    "leonardo_poll_interval": 0.005,
                    "replicate_api_token": API_TOKEN,
                    "replicate_base_url": rep_url,
                    "replicate_poll_interval": 0.005,
                }
            )
            async with _gateway(settings) as (client, state):

                def request(api: ApiName) -> RenderRequest:
                    return RenderRequest(
                        api=api,
                        image=image,
                        content_type="image/jpeg",
                        width=UPLOAD_SIZE[0],
                        height=UPLOAD_SIZE[1],
                        prompt="a bright, photorealistic living room",
                        negative_prompt="",
                        parameters=dict(fallback_suggestion(state.search_space, api).parameters),
                        seed=secrets.randbelow(2**31),
                    )

                leo, sd = state.providers["leonardo"], state.providers["stable_diffusion"]
                assert (leo.name, sd.name) == ("leonardo", "replicate"), (leo.name, sd.name)
                alone = max(5, n // 2)
                _say(f"  providers called directly, {alone} renders each")
                leo_alone = await _timed(alone, lambda: leo.render(request("leonardo")))
                sd_alone = await _timed(alone, lambda: sd.render(request("stable_diffusion")))
                both = await _timed(
                    alone,
                    lambda: asyncio.gather(
                        leo.render(request("leonardo")), sd.render(request("stable_diffusion"))
                    ),
                )

                async def train() -> None:
                    response = await client.post(
                        "/api/enhance/train", files={"image": ("room.jpg", image, "image/jpeg")}
                    )
                    assert response.status_code == 201, response.text
                    options = response.json()["options"]
                    assert [o.get("provider") for o in options] == ["leonardo", "replicate"], (
                        options
                    )
                    assert all(o["strategy"] != "fallback" for o in options), options

                times: list[float] = []
                for i in range(n):
                    times += await _timed(1, train)
                    if (i + 1) % 10 == 0 or i + 1 == n:
                        _say(f"  train {i + 1}/{n}: p50 so far {_ms(statistics.median(times))}")
    p50 = statistics.median(times)
    floor = statistics.median(both)
    return [
        f"train: both providers holding {RENDER_DELAY * 1000:.0f} ms, {n} uploads of "
        f"{UPLOAD_SIZE[0]}x{UPLOAD_SIZE[1]} JPEG, real ML suggestions",
        f"  Leonardo render alone       p50 {_ms(statistics.median(leo_alone))}"
        f"   p95 {_ms(_p95(leo_alone))}",
        f"  Replicate render alone      p50 {_ms(statistics.median(sd_alone))}"
        f"   p95 {_ms(_p95(sd_alone))}",
        f"  both renders concurrently   p50 {_ms(floor)}   p95 {_ms(_p95(both))}",
        f"  POST /api/enhance/train     p50 {_ms(p50)}   p95 {_ms(_p95(times))}",
        f"  train p50 / {RENDER_DELAY * 1000:.0f} ms            {p50 / RENDER_DELAY:.2f}x"
        "   (rendering one arm after the other would be >= 2.00x)",
        f"  gateway overhead (train p50 - both-renders p50)   {_ms(p50 - floor)}",
    ]


@dataclass
class RateRow:
    label: str
    n: int
    times: list[float] = field(default_factory=list)
    solo: list[float] = field(default_factory=list)  # one client, one rating at a time
    ml_updates: list[float] = field(default_factory=list)  # gateway -> ML update round trips
    statuses: Counter[int] = field(default_factory=Counter)
    delivered: int = 0
    per_second: float = 0.0
    pool_full: float = 0.0  # share of samples with every pooled connection checked out
    loop_lag: list[float] = field(default_factory=list)  # how late the watcher's sleeps end
    lock_waiters: list[int] = field(default_factory=list)  # backends waiting for a lock
    waiting_on: Counter[str] = field(default_factory=Counter)  # the statements that wait
    cpu: float = 0.0  # this process's CPU seconds per wall second (threads included)
    first_error: str | None = None


async def _watch(state: GatewayState, stop: asyncio.Event, row: RateRow) -> None:
    # asyncpg does not count waits for a connection, so sample instead: with every connection
    # checked out, any further acquire queues. Everything shares this process's event loop
    # (and GIL), so how late a short sleep wakes up shows how busy the process is.
    pool = state.pool
    full = []
    while not stop.is_set():
        full.append(pool.get_size() >= pool.get_max_size() and pool.get_idle_size() == 0)
        asleep = time.perf_counter()
        await asyncio.sleep(POOL_SAMPLE_SECONDS)
        row.loop_lag.append(time.perf_counter() - asleep - POOL_SAMPLE_SECONDS)
    row.pool_full = sum(full) / max(1, len(full))


async def _watch_locks(dsn: str, stop: asyncio.Event, row: RateRow) -> None:
    # A connection of its own, so watching takes nothing from the gateway's pool. Ratings
    # that wait here are queued behind another transaction's row lock, not behind the pool.
    conn = await connect(dsn)
    try:
        while not stop.is_set():
            waiting = await conn.fetch(
                "SELECT query FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            )
            row.lock_waiters.append(len(waiting))
            row.waiting_on.update(" ".join(r["query"].split())[:60] for r in waiting)
            await asyncio.sleep(LOCK_SAMPLE_SECONDS)
    finally:
        await conn.close()


def _time_ml_updates(state: GatewayState, into: list[float]) -> None:
    """Record how long each ML update takes from the gateway's side (headers back)."""

    async def sent(request: httpx.Request) -> None:
        request.extensions["bench_sent"] = time.perf_counter()

    async def answered(response: httpx.Response) -> None:
        if response.request.url.path.endswith("/ml/update_model"):
            into.append(time.perf_counter() - response.request.extensions["bench_sent"])

    state.upstreams.ml.event_hooks["request"].append(sent)
    state.upstreams.ml.event_hooks["response"].append(answered)


async def _rate_round(
    label: str, settings: Settings, n: int, solo: int, settle: Callable[[], Awaitable[None]]
) -> RateRow:
    """Prepare ``n + solo`` experiments; rate ``solo`` one at a time, then ``n`` concurrently.

    ``settle`` waits for the ML service's background work (the fits that suggestions and
    updates schedule) so that one phase's leftovers do not slow the next one down.
    """
    row = RateRow(label, n)
    async with _gateway(settings) as (client, state):
        pending = []
        for i in range(n + solo):
            response = await client.post(
                "/api/enhance/train", files={"image": ("room.jpg", interior(), "image/jpeg")}
            )
            assert response.status_code == 201, response.text
            pending.append(response.json())
            if (i + 1) % 50 == 0 or i + 1 == n + solo:
                _say(f"    prepared {i + 1}/{n + solo} experiments")

        async def rate(times: list[float]) -> None:
            body = pending.pop()
            ratings = [
                {"option": o["option"], "rating": 1 + (len(pending) + j) % 5}
                for j, o in enumerate(body["options"])
            ]
            started = time.perf_counter()
            response = await client.post(
                "/api/train/rate", json={"experiment_id": body["experiment_id"], "ratings": ratings}
            )
            times.append(time.perf_counter() - started)
            row.statuses[response.status_code] += 1
            if response.status_code == 200:
                row.delivered += bool(response.json()["ml_updated"])
            elif row.first_error is None:
                row.first_error = f"{response.status_code} {response.text[:300]}"

        await settle()
        for _ in range(solo):
            await rate(row.solo)
        await settle()
        # only the concurrent phase's updates: what delivery costs under load
        _time_ml_updates(state, row.ml_updates)

        async def rater() -> None:
            # each experiment is taken by exactly one client: nothing is awaited between the
            # emptiness check and the pop
            while pending:
                await rate(row.times)

        stop = asyncio.Event()
        watchers = [
            asyncio.create_task(_watch(state, stop, row)),
            asyncio.create_task(_watch_locks(str(settings.database_url), stop, row)),
        ]
        started, cpu_started = time.perf_counter(), time.process_time()
        await asyncio.gather(*(rater() for _ in range(CLIENTS)))
        wall = time.perf_counter() - started
        row.per_second = n / wall
        row.cpu = (time.process_time() - cpu_started) / wall
        stop.set()
        await asyncio.gather(*watchers)
    return row


def _row_line(row: RateRow) -> str:
    ok = row.statuses.get(200, 0)
    errors = row.n + len(row.solo) - ok
    ml = f"{_ms(statistics.median(row.ml_updates))}" if row.ml_updates else "        -  "
    return (
        f"  {row.label:<18} {_ms(statistics.median(row.solo))}  "
        f"{_ms(statistics.median(row.times))}  {_ms(_p95(row.times))}  "
        f"{row.per_second:6.1f}  {ml}  {row.delivered:>3}/{ok:<3}  {row.pool_full:4.0%}  "
        f"{_ms(_p95(row.loop_lag))}  {statistics.fmean(row.lock_waiters):9.1f}  {row.cpu:4.0%}"
        + (f"   ERRORS {errors}" if errors else "")
    )


RATE_HEADER = (
    f"  {'':<18} {'1 client':>10}  {'p50':>10}  {'p95':>10}  {'req/s':>6}  {'ML update':>10}"
    f"  ml_updated  pool full  {'loop lag p95':>10}  lock wait  CPU"
)


async def main(quick: bool = False) -> None:
    run_started = time.perf_counter()
    home = Path(tempfile.mkdtemp(prefix="latina-bench-train-"))
    server = embedded_server(home, cleanup_mode="delete")
    try:
        base = Settings(
            latina_data_dir=home / "data",
            database_url=str(server.get_uri("postgres")),
            migrate_on_start=True,
            ml_service_token=secrets.token_hex(16),
            ml_service_timeout=10.0,
            # no worker: an update that was not delivered at once stays queued, as in the
            # tests; nothing in the background competes with the measured requests
            gateway_worker=False,
            ml_delivery_retry_delay=0.0,
            render_rate_per_minute=0,  # measured, not limited
            log_level="WARNING",
            log_format="text",
        )
        n_train, n_rate, n_solo = (10, 60, 10) if quick else (30, 200, 20)
        _say("training-loop benchmark" + (" (quick)" if quick else ""))
        ml_app = create_ml(base)
        # uvicorn serves it with lifespan off, so its resources are closed here
        try:
            async with serve(ml_app) as ml_url:
                up = base.model_copy(update={"ml_service_url": ml_url})
                _say(f"train ({n_train} uploads, both providers holding {RENDER_DELAY}s)")
                lines = await _train_bench(
                    up.model_copy(update={"ml_study": "bench-train"}), home, n_train
                )
                # A closed loopback port refuses at once: this is the cheap way for the ML
                # service to be down. A host that drops packets would cost up to the timeout.
                down = base.model_copy(
                    update={
                        "ml_service_url": f"http://127.0.0.1:{free_port()}",
                        "ml_delivery_timeout": 0.5,
                        "ml_service_timeout": 0.5,
                    }
                )
                # Each round has a study of its own: the ML service's work per update grows with
                # the study's observations, and rows must not inherit each other's.
                rounds = [
                    (
                        f"ML up, pool {DEFAULT_POOL_MAX}",
                        up.model_copy(update={"ml_study": "bench-up"}),
                    ),
                    (f"ML down, pool {DEFAULT_POOL_MAX}", down),
                    # the first row again with a connection per client: whether the default
                    # pool is what limits rating
                    (
                        f"ML up, pool {CLIENTS}",
                        up.model_copy(
                            update={"ml_study": "bench-up-wide", "database_pool_max": CLIENTS}
                        ),
                    ),
                ]
                rows: list[RateRow] = []
                settle = ml_app.state.resources.work.drain
                await settle()
                for label, settings in rounds:
                    _say(f"rate ({label}): {n_rate} experiments, {CLIENTS} clients")
                    quiet = settings is down
                    # every rating logs a warning when the ML service is down, by design
                    logging.getLogger("latina").setLevel(logging.ERROR if quiet else logging.NOTSET)
                    try:
                        row = await _rate_round(label, settings, n_rate, n_solo, settle)
                    finally:
                        logging.getLogger("latina").setLevel(logging.NOTSET)
                    rows.append(row)
                    _say(RATE_HEADER)
                    _say(_row_line(row))
                    if row.waiting_on:
                        statement, _ = row.waiting_on.most_common(1)[0]
                        _say(f"    waiting for a lock, mostly: {statement}")
                    if row.first_error:
                        _say(f"    first error: {row.first_error}")
        finally:
            await ml_app.state.resources.close()
        lines += [
            f"rate: {CLIENTS} concurrent clients rating {n_rate} distinct experiments per row "
            f"(1 client: {n_solo} ratings one at a time first), embedded PostgreSQL; "
            "ML update = gateway-side round trip",
            RATE_HEADER,
            *(_row_line(row) for row in rows),
        ]
        up_row, down_row, wide_row = rows
        lines += [
            f"  ML up / ML down      p50 "
            f"{statistics.median(up_row.times) / statistics.median(down_row.times):.2f}x   "
            f"throughput {up_row.per_second / down_row.per_second:.2f}x"
            "   (what delivering at once costs)",
            f"  pool {CLIENTS} / pool {DEFAULT_POOL_MAX} (ML up)  throughput "
            f"{wide_row.per_second / up_row.per_second:.2f}x",
        ]
        _say("")
        for line in lines:
            _say(line)
        _say(f"(run took {time.perf_counter() - run_started:.0f} s)")
    finally:
        server.cleanup()
        shutil.rmtree(home, ignore_errors=True)
