"""ML service down while ratings arrive: nothing lost, each update delivered exactly once."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx

from gateway import jobs
from gateway.adapters.ml_client import HttpMLClient
from ml_service.app import create_app as create_ml
from shared.db.pool import connect
from shared.settings import Settings
from tests.conftest import ML_TOKEN
from tests.images import interior
from tests.servers import free_port, gateway_client, serve


async def test_ratings_while_ml_is_down_are_delivered_once_it_is_back(
    settings: Settings, trainer_token: str, db_pool: asyncpg.Pool[Any], database_url: str
) -> None:
    port = free_port()
    ml_url = f"http://127.0.0.1:{port}"
    async with gateway_client(
        settings.model_copy(update={"ml_service_url": ml_url}), trainer_token
    ) as client:
        for _ in range(3):
            train = await client.post(
                "/api/enhance/train", files={"image": ("r.jpg", interior(), "image/jpeg")}
            )
            assert train.status_code == 201, train.text
            body = train.json()
            assert {o["strategy"] for o in body["options"]} == {"fallback"}
            rate = await client.post(
                "/api/train/rate",
                json={
                    "experiment_id": body["experiment_id"],
                    "ratings": [{"option": o["option"], "rating": 4} for o in body["options"]],
                },
            )
            assert rate.status_code == 200, rate.text
            assert rate.json()["ml_updated"] is False
        status = (await client.get("/api/train/status")).json()
        assert status["ml_service"] == {
            "reachable": False,
            "pending_updates": 3,
            "busy": False,
            "queued_computations": 0,
        }

    ml_app = create_ml(settings)
    async with (
        serve(ml_app, port=port),
        httpx.AsyncClient(base_url=ml_url, headers={"Authorization": f"Bearer {ML_TOKEN}"}) as http,
    ):
        ml = HttpMLClient(http)
        for _ in range(2):  # a second pass must find nothing left to deliver
            conn = await connect(database_url)
            try:
                await jobs.run_worker(conn, ml, drain=True)
            finally:
                await conn.close()
    await ml_app.state.resources.close()

    async with db_pool.acquire() as conn:
        observed = await conn.fetch(
            "SELECT observation_id, count(*) AS n FROM ml.observations GROUP BY 1"
        )
        left = await conn.fetchval("SELECT count(*) FROM pgqueuer")
    assert len(observed) == 6
    assert all(r["n"] == 1 for r in observed)
    assert left == 0
