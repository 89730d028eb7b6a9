"""The training loop's speed: train with slow providers, rate under 20 concurrent clients.

Train: both arms use the real Leonardo and Replicate clients against the fake servers, each
holding its generation for ``RENDER_DELAY`` seconds (Leonardo's status poll, Replicate's create),
so one render costs about that much upstream waiting. Because the two arms render concurrently,
train's p50 divided by ``RENDER_DELAY`` stays near 1 (plus validation, storage and database),
not 2. The baseline in the same run is one provider render alone.

Rate: experiments are made first with the local engine; then 20 clients rate distinct
experiments as fast as they can against the real PostgreSQL, once with the real ML service
answering (immediate delivery) and once with it unreachable (the update stays queued).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager

from gateway.app import create_app
from gateway.flows import accounts
from gateway.providers.base import RenderRequest
from ml_service.app import create_app as create_ml
from shared.db.embedded import embedded_server
from shared.settings import Settings
from tests.fakes.leonardo import API_KEY, PREFIX, FakeLeonardo
from tests.fakes.replicate import API_TOKEN, FakeReplicate
from tests.images import interior
from tests.s3_server import running_s3_server
from tests.servers import free_port, serve

RENDER_DELAY = 0.300
TOKEN = "x" * 32


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _say(message: str) -> None:
    print(message, flush=True)


@asynccontextmanager
async def _gateway(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench", timeout=120
        ) as client:
            state = manager._state["gateway"]
            _, token = await accounts.create_user(state.pool, f"b{time.time_ns()}", "trainer")
            client.headers["Authorization"] = f"Bearer {token}"
            yield client, state


async def _train_bench(base: Settings, home: Path, n: int) -> list[str]:
    image = interior(640, 480)
    with running_s3_server(home / "s3") as s3:
        leonardo = FakeLeonardo(s3, polls_before_complete=0)
        leonardo.delay("GET /generations/{id}", RENDER_DELAY)
        replicate = FakeReplicate(output_as="url")
        replicate.delay("POST /v1/models/{owner}/{name}/predictions", RENDER_DELAY)
        async with serve(leonardo.app) as leo_url, serve(replicate.app) as rep_url:
            settings = base.model_copy(
                update={
                    "leonardo_api_key": API_KEY,
                    "leonardo_base_url": leo_url + PREFIX,
                    "leonardo_poll_interval": 0.01,
                    "replicate_api_token": API_TOKEN,
                    "replicate_base_url": rep_url,
                    "replicate_poll_interval": 0.01,
                }
            )
            async with _gateway(settings) as (client, state):
                alone: list[float] = []
                for i in range(max(5, n // 3)):
                    request = RenderRequest(
                        api="stable_diffusion",
                        image=image,
                        content_type="image/jpeg",
                        width=640,
                        height=480,
                        prompt="p",
                        negative_prompt="",
                        parameters={
                            "prompt_strength": 0.3,
                            "guidance_scale": 7.0,
                            "num_inference_steps": 30,
                            "controlnet_conditioning_scale": 0.5,
                        },
                        seed=i,
                    )
                    started = time.perf_counter()
                    await state.providers["stable_diffusion"].render(request)
                    alone.append(time.perf_counter() - started)
                times: list[float] = []
                for i in range(n):
                    started = time.perf_counter()
                    response = await client.post(
                        "/api/enhance/train", files={"image": ("r.jpg", image, "image/jpeg")}
                    )
                    times.append(time.perf_counter() - started)
                    assert response.status_code == 201, response.text
                    providers = [o["provider"] for o in response.json()["options"]]
                    assert providers == ["leonardo", "replicate"], providers
                    if (i + 1) % 10 == 0:
                        _say(f"  train: {i + 1}/{n}")
    p50 = statistics.median(times)
    return [
        f"train, both providers holding {RENDER_DELAY * 1000:.0f} ms, {n} uploads of 640x480:",
        f"  one provider render alone  p50 {statistics.median(alone) * 1000:7.1f} ms",
        f"  train (both arms)          p50 {p50 * 1000:7.1f} ms"
        f"   p95 {_p(times, 0.95) * 1000:7.1f} ms",
        f"  train p50 / {RENDER_DELAY * 1000:.0f} ms         {p50 / RENDER_DELAY:.2f}x"
        "   (sequential rendering would be >= 2.00x)",
    ]


async def _rate_round(settings: Settings, n: int, clients: int) -> tuple[list[float], float, int]:
    async with _gateway(settings) as (client, _):
        bodies = []
        for i in range(n):
            response = await client.post(
                "/api/enhance/train", files={"image": ("r.jpg", interior(), "image/jpeg")}
            )
            assert response.status_code == 201, response.text
            bodies.append(response.json())
            if (i + 1) % 50 == 0:
                _say(f"  prepared {i + 1}/{n} experiments")
        queue = list(bodies)
        times: list[float] = []
        delivered = 0

        async def rater() -> None:
            nonlocal delivered
            while queue:
                body = queue.pop()
                request = {
                    "experiment_id": body["experiment_id"],
                    "ratings": [
                        {"option": o["option"], "rating": 1 + (len(queue) % 5)}
                        for o in body["options"]
                    ],
                }
                started = time.perf_counter()
                response = await client.post("/api/train/rate", json=request)
                times.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text
                delivered += bool(response.json()["ml_updated"])

        started = time.perf_counter()
        await asyncio.gather(*(rater() for _ in range(clients)))
        return times, n / (time.perf_counter() - started), delivered


async def main(quick: bool = False) -> None:
    # expected failures (the ML-down round) would print one warning per rating
    logging.getLogger("latina").setLevel(logging.ERROR)
    home = Path(tempfile.mkdtemp(prefix="latina-bench-train-"))
    server = embedded_server(home, cleanup_mode="delete")
    try:
        base = Settings(
            latina_data_dir=home / "data",
            database_url=str(server.get_uri("postgres")),
            migrate_on_start=True,
            ml_service_token=TOKEN,
            log_level="WARNING",
            log_format="text",
            gateway_worker=False,
            ml_delivery_retry_delay=3600,
            database_pool_max=25,
        )
        _say("training-loop benchmark" + (" (quick)" if quick else ""))
        lines = await _train_bench(base, home, 10 if quick else 30)
        n, clients = (60, 20) if quick else (200, 20)
        ml_app = create_ml(base)
        rows = []
        async with serve(ml_app) as ml_url:
            for label, url, timeout in (
                ("ML service up     ", ml_url, 3.0),
                ("ML service down   ", f"http://127.0.0.1:{free_port()}", 0.5),
            ):
                _say(f"  rating with {label.strip()}")
                times, rate, delivered = await _rate_round(
                    base.model_copy(update={"ml_service_url": url, "ml_delivery_timeout": timeout}),
                    n,
                    clients,
                )
                rows.append((label, times, rate, delivered))
        await ml_app.state.resources.close()
        lines.append(f"rate, {clients} concurrent clients, {n} experiments each round:")
        for label, times, rate, delivered in rows:
            lines.append(
                f"  {label} p50 {statistics.median(times) * 1000:7.1f} ms   "
                f"p95 {_p(times, 0.95) * 1000:7.1f} ms   {rate:6.1f} req/s   "
                f"ml_updated {delivered}/{n}"
            )
        up, down = rows[0][2], rows[1][2]
        lines.append(f"  throughput ML down / ML up  {down / up:.2f}x")
        _say("")
        for line in lines:
            _say(line)
    finally:
        server.cleanup()
        shutil.rmtree(home, ignore_errors=True)
