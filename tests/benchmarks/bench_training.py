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
(immediate delivery) and with it unreachable (the update stays queued for the worker).
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
            _, token = await accounts.create_user(state.pool, f"bench{time.time_ns()}", "trainer")
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
    pool_max: int
    times: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    delivered: int = 0
    per_second: float = 0.0
    pool_full: float = 0.0  # share of samples with every pooled connection checked out
    first_error: str | None = None


async def _watch_pool(state: GatewayState, stop: asyncio.Event, samples: list[bool]) -> None:
    # asyncpg does not count waits for a connection, so sample instead: with every connection
    # checked out, any further acquire queues.
    pool = state.pool
    while not stop.is_set():
        samples.append(pool.get_size() >= pool.get_max_size() and pool.get_idle_size() == 0)
        await asyncio.sleep(POOL_SAMPLE_SECONDS)


async def _rate_round(label: str, settings: Settings, n: int) -> RateRow:
    row = RateRow(label, n, settings.database_pool_max)
    async with _gateway(settings) as (client, state):
        pending = []
        for i in range(n):
            response = await client.post(
                "/api/enhance/train", files={"image": ("room.jpg", interior(), "image/jpeg")}
            )
            assert response.status_code == 201, response.text
            pending.append(response.json())
            if (i + 1) % 50 == 0 or i + 1 == n:
                _say(f"    prepared {i + 1}/{n} experiments")

        async def rater() -> None:
            # each experiment is taken by exactly one client: the loop has no await between
            # the emptiness check and the pop
            while pending:
                body = pending.pop()
                ratings = [
                    {"option": o["option"], "rating": 1 + (len(pending) + j) % 5}
                    for j, o in enumerate(body["options"])
                ]
                started = time.perf_counter()
                response = await client.post(
                    "/api/train/rate",
                    json={"experiment_id": body["experiment_id"], "ratings": ratings},
                )
                row.times.append(time.perf_counter() - started)
                row.statuses[response.status_code] += 1
                if response.status_code == 200:
                    row.delivered += bool(response.json()["ml_updated"])
                elif row.first_error is None:
                    row.first_error = f"{response.status_code} {response.text[:300]}"

        stop = asyncio.Event()
        samples: list[bool] = []
        watcher = asyncio.create_task(_watch_pool(state, stop, samples))
        started = time.perf_counter()
        await asyncio.gather(*(rater() for _ in range(CLIENTS)))
        row.per_second = n / (time.perf_counter() - started)
        stop.set()
        await watcher
        row.pool_full = sum(samples) / max(1, len(samples))
    return row


def _row_line(row: RateRow) -> str:
    ok = row.statuses.get(200, 0)
    errors = row.n - ok
    return (
        f"  {row.label:<26} p50 {_ms(statistics.median(row.times))}   "
        f"p95 {_ms(_p95(row.times))}   {row.per_second:6.1f} req/s   "
        f"ml_updated {row.delivered}/{ok}   pool full {row.pool_full:4.0%}"
        + (f"   ERRORS {errors}" if errors else "")
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
            log_level="WARNING",
            log_format="text",
        )
        n_train, n_rate = (10, 60) if quick else (30, 200)
        _say("training-loop benchmark" + (" (quick)" if quick else ""))
        ml_app = create_ml(base)
        # uvicorn serves it with lifespan off, so its resources are closed here
        try:
            async with serve(ml_app) as ml_url:
                up = base.model_copy(update={"ml_service_url": ml_url})
                _say(f"train ({n_train} uploads, both providers holding {RENDER_DELAY}s)")
                lines = await _train_bench(up, home, n_train)
                # A closed loopback port refuses at once: this is the cheap way for the ML
                # service to be down. A host that drops packets would cost up to the timeout.
                down = base.model_copy(
                    update={
                        "ml_service_url": f"http://127.0.0.1:{free_port()}",
                        "ml_delivery_timeout": 0.5,
                        "ml_service_timeout": 0.5,
                    }
                )
                rounds = [
                    (f"ML up, pool {DEFAULT_POOL_MAX}", up),
                    (f"ML down, pool {DEFAULT_POOL_MAX}", down),
                    # the same as the first row with a connection per client: whether the
                    # default pool is what limits rating
                    (
                        f"ML up, pool {CLIENTS}",
                        up.model_copy(update={"database_pool_max": CLIENTS}),
                    ),
                ]
                rows: list[RateRow] = []
                for label, settings in rounds:
                    _say(f"rate ({label}): {n_rate} experiments, {CLIENTS} clients")
                    quiet = settings is down
                    # every rating logs a warning when the ML service is down, by design
                    logging.getLogger("latina").setLevel(logging.ERROR if quiet else logging.NOTSET)
                    try:
                        row = await _rate_round(label, settings, n_rate)
                    finally:
                        logging.getLogger("latina").setLevel(logging.NOTSET)
                    rows.append(row)
                    _say(_row_line(row))
                    if row.first_error:
                        _say(f"    first error: {row.first_error}")
        finally:
            await ml_app.state.resources.close()
        lines.append(
            f"rate: {CLIENTS} concurrent clients, {n_rate} distinct experiments per row, "
            "embedded PostgreSQL"
        )
        lines += [_row_line(row) for row in rows]
        up_row, down_row, wide_row = rows
        lines.append(
            "  ML up / ML down           "
            f"p50 {statistics.median(up_row.times) / statistics.median(down_row.times):.2f}x   "
            f"throughput {up_row.per_second / down_row.per_second:.2f}x"
            "   (what delivering at once costs)"
        )
        lines.append(
            f"  pool {CLIENTS} / pool {DEFAULT_POOL_MAX} (ML up)      "
            f"throughput {wide_row.per_second / up_row.per_second:.2f}x"
        )
        _say("")
        for line in lines:
            _say(line)
        _say(f"(run took {time.perf_counter() - run_started:.0f} s)")
    finally:
        server.cleanup()
        shutil.rmtree(home, ignore_errors=True)
