"""Prompt evolution and A/B tests through the real gateway, ML service, database and worker."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import jsonschema
import pytest
from asgi_lifespan import LifespanManager

from gateway import jobs
from gateway.adapters import job_queue
from gateway.adapters.ml_client import HttpMLClient
from gateway.adapters.prompt_export import PROMPTS_DIR
from gateway.app import build_evolution_deps, create_app
from gateway.flows.unit_of_work import UnitOfWorkFactory
from ml_service.app import create_app as create_ml
from shared.db.pool import connect, create_pool
from shared.settings import Settings
from shared.storage.local import LocalObjectStore
from tests.fakes.openai import API_KEY, FakeOpenAI, failure, structured
from tests.images import interior
from tests.integration.test_gateway_response_bodies import TIME, Like, assert_same
from tests.servers import serve

SCHEMA = json.loads((PROMPTS_DIR / "schema.json").read_text())
LOW_COMMENT = "looks like a 3d render, lighting is artificial and the room is too dark"


@pytest.fixture
async def ml_url(settings: Settings) -> AsyncIterator[str]:
    app = create_ml(settings)
    async with serve(app) as url:
        yield url
    await app.state.resources.close()


class Stack:
    """The gateway (trainer and admin clients) plus a way to drain the job queue."""

    def __init__(
        self,
        settings: Settings,
        trainer: httpx.AsyncClient,
        admin: httpx.AsyncClient,
        pool: asyncpg.Pool[Any],
    ) -> None:
        self.settings, self.trainer, self.admin, self.pool = settings, trainer, admin, pool

    async def upload(self) -> dict[str, Any]:
        response = await self.trainer.post(
            "/api/enhance/train", files={"image": ("room.jpg", interior(), "image/jpeg")}
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    async def rate(self, body: dict[str, Any], a: int, b: int, comment: str = "") -> dict[str, Any]:
        values = {"A": a, "B": b}
        response = await self.trainer.post(
            "/api/train/rate",
            json={
                "experiment_id": body["experiment_id"],
                "ratings": [
                    {"option": o["option"], "rating": values[o["option"]], "comments": comment}
                    for o in body["options"]
                ],
            },
        )
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def sample(self, a: int = 2, b: int = 2, comment: str = LOW_COMMENT) -> dict[str, Any]:
        return await self.rate(await self.upload(), a, b, comment)

    async def drain(self) -> None:
        """Run the worker until no job is ready (evolution and ML updates)."""
        conn = await connect(str(self.settings.database_url))
        store = LocalObjectStore(self.settings.data_dir / "objects", b"test-secret-key" * 3)
        try:
            async with httpx.AsyncClient(
                base_url=self.settings.ml_service_url,
                headers={"Authorization": f"Bearer {self.settings.ml_service_token}"},
            ) as http:
                deps = build_evolution_deps(self.settings, UnitOfWorkFactory(self.pool), store)
                try:
                    await jobs.run_worker(conn, HttpMLClient(http), deps, drain=True)
                finally:
                    await deps.aclose()
        finally:
            await conn.close()

    async def status(self) -> dict[str, Any]:
        body: dict[str, Any] = (await self.trainer.get("/api/train/status")).json()
        return body

    async def prompts(self) -> dict[str, Any]:
        body: dict[str, Any] = (await self.trainer.get("/api/prompts")).json()
        return body


async def _stack(
    settings: Settings, trainer_token: str, admin_token: str, ml_url: str, **overrides: Any
) -> AsyncIterator[Stack]:
    settings = settings.model_copy(update={"ml_service_url": ml_url, **overrides})
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)

        def client(token: str) -> httpx.AsyncClient:
            return httpx.AsyncClient(
                transport=transport,
                base_url="http://gw",
                headers={"Authorization": f"Bearer {token}"},
                timeout=60,
            )

        async with client(trainer_token) as trainer, client(admin_token) as admin:
            pool = await create_pool(str(settings.database_url), min_size=1, max_size=4)
            try:
                yield Stack(settings, trainer, admin, pool)
            finally:
                await pool.close()


@pytest.fixture
async def stack(
    settings: Settings, trainer_token: str, admin_token: str, ml_url: str
) -> AsyncIterator[Stack]:
    """Evolution every 2 samples, A/B tests of 5 (the default)."""
    async for s in _stack(settings, trainer_token, admin_token, ml_url, evolution_every=2):
        yield s


async def _evolved(stack: Stack) -> dict[str, Any]:
    """Samples 1 and 2 (a trigger), then the worker: v1.0.1 exists and its A/B test runs."""
    await stack.sample()
    second = await stack.sample()
    assert second["prompt_evolution"]["triggered"] is True
    assert second["prompt_evolution"]["waiting_for_ab_test"] is False
    await stack.drain()
    return second


async def test_thirty_concurrent_ratings_across_a_trigger_make_one_job_and_one_version(
    settings: Settings, trainer_token: str, admin_token: str, ml_url: str
) -> None:
    async for stack in _stack(settings, trainer_token, admin_token, ml_url, evolution_every=20):
        bodies = [await stack.upload() for _ in range(30)]
        responses = await asyncio.gather(*(stack.rate(b, 2, 3, LOW_COMMENT) for b in bodies))
        triggered = [r["sample_number"] for r in responses if r["prompt_evolution"]["triggered"]]
        assert triggered == [20]
        async with stack.pool.acquire() as conn:
            queued = await conn.fetchval(
                "SELECT count(*) FROM pgqueuer WHERE entrypoint = $1", job_queue.EVOLUTION
            )
            assert queued == 1
        await stack.drain()
        library = await stack.prompts()
        assert [v["version"] for v in library["items"]] == ["v1.0.0", "v1.0.1"]
        new = library["items"][1]
        assert new["parent_version"] == "v1.0.0"
        assert new["origin"] == "heuristic"  # no OPENAI_API_KEY: the offline evolver
        assert new["prompt"] != library["items"][0]["prompt"]
        assert new["changes"] and "render" in new["reasoning"].lower()
        async with stack.pool.acquire() as conn:
            assert await conn.fetchval("SELECT status FROM evolution_rounds") == "done"
            assert await conn.fetchval("SELECT count(*) FROM ab_tests") == 1
        # the new version was exported, and validates against the schema
        exported = stack.settings.prompt_export_dir / "versions" / "v1.0.1.json"  # type: ignore[operator]
        document = json.loads(exported.read_text())
        jsonschema.validate(document, SCHEMA)
        assert document["prompt"] == new["prompt"]


async def test_concurrent_uploads_during_an_ab_test_keep_the_three_two_split(
    stack: Stack,
) -> None:
    await _evolved(stack)
    status = await stack.status()
    assert status["ab_test"]["old"] == "v1.0.0"
    assert status["ab_test"]["new"] == "v1.0.1"
    assert status["ab_test"]["samples"] == 0 and status["ab_test"]["of"] == 5
    bodies = await asyncio.gather(*(stack.upload() for _ in range(7)))
    in_test = [b for b in bodies if b["ab_test"] is not None]
    assert len(in_test) == 5
    assert sorted(b["ab_test"]["slot"] for b in in_test) == [1, 2, 3, 4, 5]
    for b in in_test:
        expected = "v1.0.0" if b["ab_test"]["slot"] % 2 else "v1.0.1"
        assert b["prompt_version"] == expected
        assert {o["prompt_version"] for o in b["options"]} == {expected}
    assert Counter(b["prompt_version"] for b in in_test) == {"v1.0.0": 3, "v1.0.1": 2}
    # uploads past the five slots render with the current version and are not in the test
    assert all(b["prompt_version"] == "v1.0.0" for b in bodies if b["ab_test"] is None)


async def _run_test(stack: Stack, old_rating: int, new_rating: int) -> list[dict[str, Any]]:
    bodies = [await stack.upload() for _ in range(5)]

    def rating(body: dict[str, Any]) -> int:
        return new_rating if body["ab_test"]["arm"] == "new" else old_rating

    return list(
        await asyncio.gather(*(stack.rate(b, rating(b), rating(b), "fine") for b in bodies))
    )


async def test_a_new_version_that_wins_is_promoted_and_the_test_exported(stack: Stack) -> None:
    await _evolved(stack)
    responses = await _run_test(stack, old_rating=2, new_rating=5)
    # the first sample rated after the version appeared names it; the others do not
    assert sorted(str(r["prompt_evolution"]["new_version"]) for r in responses) == [
        "None",
        "None",
        "None",
        "None",
        "v1.0.1",
    ]
    # every sample of the test reports it; the last one rated saw it decided
    assert len({r["prompt_evolution"]["ab_test"]["id"] for r in responses}) == 1
    last = max(responses, key=lambda r: r["sample_number"])
    test = last["prompt_evolution"]["ab_test"]
    assert test["status"] == "decided"
    assert test["winner"] == "v1.0.1" and test["promoted"] is True
    assert test["avg"] == {"v1.0.0": 2.0, "v1.0.1": 5.0}
    assert test["versions"]["v1.0.0"]["n"] == 3 and test["versions"]["v1.0.1"]["n"] == 2
    assert 0.95 < test["p_new_better"] <= 1.0
    library = await stack.prompts()
    assert library["current"] == "v1.0.1"
    assert (await stack.status())["current_prompt"]["version"] == "v1.0.1"
    folder: Path = stack.settings.prompt_export_dir  # type: ignore[assignment]
    assert json.loads((folder / "current.json").read_text()) == {"current": "v1.0.1"}
    record = json.loads((folder / "experiments" / f"experiment_{test['id']:03d}.json").read_text())
    assert record["winner"] == "v1.0.1" and len(record["slots"]) == 5
    assert [s["arm"] for s in record["slots"]] == ["old", "new", "old", "new", "old"]
    listed = (await stack.trainer.get("/api/ab_tests")).json()["items"]
    assert listed[0]["id"] == test["id"] and listed[0]["decided_at"]
    # the next upload renders with the promoted version
    assert (await stack.upload())["prompt_version"] == "v1.0.1"


async def test_a_new_version_that_loses_or_ties_is_not_promoted(stack: Stack) -> None:
    await _evolved(stack)
    responses = await _run_test(stack, old_rating=3, new_rating=3)
    test = max(responses, key=lambda r: r["sample_number"])["prompt_evolution"]["ab_test"]
    assert test["status"] == "decided"
    assert test["winner"] == "v1.0.0" and test["promoted"] is False
    assert 0.3 < test["p_new_better"] < 0.7  # a tie: no evidence either way
    library = await stack.prompts()
    assert library["current"] == "v1.0.0"
    rejected = next(v for v in library["items"] if v["version"] == "v1.0.1")
    assert rejected["status"] == "rejected" and rejected["is_current"] is False


async def test_a_trigger_during_an_ab_test_waits_and_runs_after_the_decision(
    stack: Stack,
) -> None:
    await _evolved(stack)
    bodies = [await stack.upload() for _ in range(5)]
    third = await stack.rate(bodies[0], 2, 2, LOW_COMMENT)
    fourth = await stack.rate(bodies[1], 2, 2, LOW_COMMENT)  # sample 4: a trigger
    assert third["prompt_evolution"]["triggered"] is False
    assert fourth["prompt_evolution"]["triggered"] is True
    assert fourth["prompt_evolution"]["waiting_for_ab_test"] is True
    assert fourth["prompt_evolution"]["ab_test"]["status"] == "running"
    assert fourth["prompt_evolution"]["ab_test"]["samples"] == 2
    status = await stack.status()
    assert status["prompt_evolution"]["waiting_for_ab_test"] is True
    assert status["prompt_evolution"]["last_round"]["sample"] == 4
    await stack.drain()  # nothing to run: the round waits
    assert [v["version"] for v in (await stack.prompts())["items"]] == ["v1.0.0", "v1.0.1"]
    await stack.rate(bodies[2], 2, 2, LOW_COMMENT)  # sample 5
    sixth = await stack.rate(bodies[3], 2, 2, LOW_COMMENT)  # sample 6: waits too
    assert sixth["prompt_evolution"]["waiting_for_ab_test"] is True
    seventh = await stack.rate(bodies[4], 2, 2, LOW_COMMENT)  # decides the test
    assert seventh["prompt_evolution"]["ab_test"]["status"] == "decided"
    await stack.drain()
    async with stack.pool.acquire() as conn:
        states = dict(await conn.fetch("SELECT sample_number, status FROM evolution_rounds"))
    assert states == {2: "done", 4: "done", 6: "done"}
    library = await stack.prompts()
    # the old version won the tie, so the newest waiting round (6) evolved v1.0.0 again; the
    # round of sample 4 was superseded
    assert [v["version"] for v in library["items"]] == ["v1.0.0", "v1.0.1", "v1.0.2"]
    assert library["items"][2]["parent_version"] == "v1.0.0"
    assert (await stack.status())["ab_test"]["new"] == "v1.0.2"


async def test_admin_promotes_and_rolls_back_and_a_trainer_cannot(stack: Stack) -> None:
    await _evolved(stack)
    refused = await stack.trainer.post("/api/prompts/v1.0.1/promote")
    assert refused.status_code == 403
    missing = await stack.admin.post("/api/prompts/v9.9.9/promote")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "prompt_version_not_found"
    promoted = await stack.admin.post("/api/prompts/v1.0.1/promote")
    assert promoted.status_code == 200
    body = promoted.json()
    assert body["current"] == "v1.0.1" and body["previous"] == "v1.0.0"
    assert body["ab_test"]["status"] == "cancelled"  # the operator overrode the running test
    assert (await stack.status())["ab_test"] is None
    folder: Path = stack.settings.prompt_export_dir  # type: ignore[assignment]
    assert json.loads((folder / "current.json").read_text()) == {"current": "v1.0.1"}
    rollback = await stack.admin.post("/api/prompts/v1.0.0/promote")
    assert rollback.json()["current"] == "v1.0.0"
    assert json.loads((folder / "current.json").read_text()) == {"current": "v1.0.0"}
    shown = (await stack.trainer.get("/api/prompts/v1.0.0")).json()
    assert shown["is_current"] is True and shown["origin"] == "seed"
    assert (await stack.trainer.get("/api/prompts/v7.7.7")).status_code == 404


async def test_an_abandoned_slot_goes_to_the_next_upload(stack: Stack) -> None:
    await _evolved(stack)
    first = await stack.upload()
    assert first["ab_test"]["slot"] == 1
    for _ in range(4):
        await stack.upload()
    assert (await stack.upload())["ab_test"] is None  # all five slots taken
    async with stack.pool.acquire() as conn:
        await conn.execute(
            "UPDATE ab_slots SET claimed_at = now() - interval '2 hours' WHERE experiment_id = $1",
            first["experiment_id"],
        )
    again = await stack.upload()
    assert again["ab_test"]["slot"] == 1 and again["prompt_version"] == "v1.0.0"


LLM_ANSWER = {
    "improved_prompt": (
        "professional interior photograph taken on a real camera, soft natural window light, "
        "bright well-exposed room, true-to-life materials, straight verticals"
    ),
    "negative_prompt": "3d render, cgi, cartoon, underexposed",
    "changes": ["asked for a real camera", "asked for a bright, well-exposed room"],
    "reasoning": "Comments said the images looked like renders and were too dark.",
}


async def test_the_llm_evolver_writes_the_version_through_the_worker(
    settings: Settings, trainer_token: str, admin_token: str, ml_url: str
) -> None:
    fake = FakeOpenAI()
    fake.queue(failure(429, "slow down"), structured(LLM_ANSWER))
    async with serve(fake.app) as llm:
        async for stack in _stack(
            settings,
            trainer_token,
            admin_token,
            ml_url,
            evolution_every=2,
            openai_api_key=API_KEY,
            openai_base_url=f"{llm}/v1",
            openai_model="fake-model",
            openai_max_retries=2,
        ):
            await _evolved(stack)
            library = await stack.prompts()
            new = library["items"][1]
            assert new["origin"] == "llm"
            assert new["prompt"] == LLM_ANSWER["improved_prompt"]
            assert new["negative_prompt"] == LLM_ANSWER["negative_prompt"]
            assert new["changes"] == LLM_ANSWER["changes"]
            bodies = fake.bodies()
            assert len(bodies) == 2  # the 429 was retried by the client
            user = bodies[-1]["messages"][1]["content"]
            assert "3d render" in user  # the comments reached the LLM, fenced as data
            assert (await stack.status())["prompt_evolution"]["last_round"]["evolver"] == "llm"


async def test_an_llm_that_keeps_failing_falls_back_and_says_so(
    settings: Settings, trainer_token: str, admin_token: str, ml_url: str
) -> None:
    fake = FakeOpenAI(default=failure(500, "model overloaded"))
    async with serve(fake.app) as llm:
        async for stack in _stack(
            settings,
            trainer_token,
            admin_token,
            ml_url,
            evolution_every=2,
            openai_api_key=API_KEY,
            openai_base_url=f"{llm}/v1",
            openai_max_retries=0,
            openai_attempts=2,
        ):
            await _evolved(stack)
            new = (await stack.prompts())["items"][1]
            assert new["origin"] == "heuristic" and new["prompt"]
            last = (await stack.status())["prompt_evolution"]["last_round"]
            assert last["new_version"] == "v1.0.1"
            assert "500" in last["fallback_reason"] or "overloaded" in last["fallback_reason"]


def _ab_view(
    status: str,
    samples: int,
    old: tuple[int, int, float | None],
    new: tuple[int, int, float | None],
    **decided: Any,
) -> dict[str, Any]:
    """The A/B test view's exact JSON; ``old``/``new`` are (samples, ratings, mean)."""
    versions = {
        name: {"n": n, "ratings": ratings, "mean": mean}
        for name, (n, ratings, mean) in (("v1.0.0", old), ("v1.0.1", new))
    }
    return {
        "id": Like(int),
        "old": "v1.0.0",
        "new": "v1.0.1",
        "status": status,
        "samples": samples,
        "of": 5,
        "avg": {name: v["mean"] for name, v in versions.items()},
        "versions": versions,
        "winner": None,
        "p_new_better": None,
        "promoted": None,
        "evolution_sample": 2,
        "note": None,
        "created_at": TIME,
        "decided_at": None,
        **decided,
    }


async def test_ab_test_prompt_and_account_bodies_keep_their_exact_json(stack: Stack) -> None:
    """The A/B test view inside rate, status, promote and the list; prompt versions; users."""
    await _evolved(stack)
    running = _ab_view("running", 0, (0, 0, None), (0, 0, None))
    assert_same((await stack.trainer.get("/api/ab_tests")).json(), {"items": [running]})
    assert_same((await stack.status())["ab_test"], running)

    rated = await stack.sample(2, 4)
    assert_same(
        rated["prompt_evolution"],
        {
            "triggered": False,
            "waiting_for_ab_test": False,
            "new_version": "v1.0.1",
            "ab_test": _ab_view("running", 1, (1, 2, 3.0), (0, 0, None)),
        },
    )
    version = {
        "version": "v1.0.1",
        "parent_version": "v1.0.0",
        "prompt": Like(str),
        "negative_prompt": Like(str),
        "performance_score": None,
        "usage_count": 0,
        "created_at": TIME,
        "is_current": False,
        "status": "testing",
        "origin": "heuristic",
        "changes": Like(list),
        "reasoning": Like(str),
    }
    assert_same((await stack.trainer.get("/api/prompts/v1.0.1")).json(), version)

    promoted = await stack.admin.post("/api/prompts/v1.0.1/promote")
    assert promoted.status_code == 200, promoted.text
    cancelled = _ab_view(
        "cancelled",
        1,
        (1, 2, 3.0),
        (0, 0, None),
        note="cancelled: ada promoted v1.0.1 by hand",
    )
    assert_same(
        promoted.json(),
        {"current": "v1.0.1", "previous": "v1.0.0", "changed": True, "ab_test": cancelled},
    )
    again = await stack.admin.post("/api/prompts/v1.0.1/promote")
    assert_same(
        again.json(), {"current": "v1.0.1", "previous": "v1.0.1", "changed": False, "ab_test": None}
    )

    user = {"id": Like(int), "name": "tina", "role": "trainer", "created_at": TIME}
    assert_same((await stack.trainer.get("/api/me")).json(), {**user, "disabled": False})
    users = (await stack.admin.get("/api/users")).json()
    assert_same(
        users,
        {
            "items": [
                {**user, "disabled": False},
                {**user, "name": "ada", "role": "admin", "disabled": False},
            ]
        },
    )


async def test_a_decided_ab_test_view_keeps_its_exact_json(stack: Stack) -> None:
    await _evolved(stack)
    responses = await _run_test(stack, old_rating=2, new_rating=5)
    last = max(responses, key=lambda r: r["sample_number"])["prompt_evolution"]["ab_test"]
    decided = _ab_view(
        "decided",
        5,
        (3, 6, 2.0),
        (2, 4, 5.0),
        winner="v1.0.1",
        p_new_better=Like(float),
        promoted=True,
        decided_at=TIME,
    )
    assert_same(last, decided)
    assert_same((await stack.trainer.get("/api/ab_tests")).json(), {"items": [decided]})
