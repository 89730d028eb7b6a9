"""GP work apart from serving: a bounded queue that callers can leave, deadlines, 503 when full,
worker processes that leave the event loop free, and the gateway's fallback when busy."""

from __future__ import annotations

import asyncio
import base64
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import numpy as np
import pytest
from asgi_lifespan import LifespanManager
from starlette.applications import Starlette

from ml_service.app import create_app
from ml_service.errors import Busy, DeadlineExceeded
from ml_service.images.features import extract_bytes
from ml_service.optimizer.gp import AcquisitionConfig
from ml_service.optimizer.workers import GPWork, OptimizerConfig, _ready
from shared.priority import BACKGROUND_NICE
from shared.settings import Settings
from tests.conftest import ML_TOKEN
from tests.images import interior
from tests.servers import gateway_client, serve

AUTH = {"Authorization": f"Bearer {ML_TOKEN}"}
LEO = {"init_strength": 0.3, "guidance_scale": 7.0, "controlnet_weight": 0.6}


def wait_for_file(path: str) -> str:
    """A computation that runs until the test lets it finish (in a thread or a process), or
    30 s at most, so that a failing test cannot hang the run."""
    give_up = time.monotonic() + 30
    while not Path(path).exists() and time.monotonic() < give_up:
        time.sleep(0.01)
    return path


def gp_work(settings: Settings, *, workers: int, queue_limit: int = 4) -> GPWork:
    app = create_app(settings)
    config = OptimizerConfig(None, settings.ml_initial_samples, settings.ml_large_study)
    return GPWork(app.state.resources.optimizer, config, workers=workers, queue_limit=queue_limit)


async def until(condition: Any) -> None:
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition never held")


async def test_a_cancelled_caller_takes_its_work_out_of_the_queue(
    settings: Settings, tmp_path: Path
) -> None:
    gp = gp_work(settings, workers=0)
    release = tmp_path / "release"
    running = asyncio.create_task(gp.run(wait_for_file, str(release)))
    await until(lambda: gp.running == 1)
    ran: list[str] = []
    queued = asyncio.create_task(gp.run(ran.append, "should never run"))
    await until(lambda: gp.queued == 1)
    queued.cancel()
    await until(lambda: gp.queued == 0)
    release.touch()
    assert await running == str(release)
    assert ran == [] and gp.state()["running"] == 0


async def test_a_full_queue_refuses_at_once_with_retry_after(
    settings: Settings, tmp_path: Path
) -> None:
    gp = gp_work(settings, workers=0, queue_limit=1)
    release = tmp_path / "release"
    first = asyncio.create_task(gp.run(wait_for_file, str(release)))
    await until(lambda: gp.running == 1)
    second = asyncio.create_task(gp.run(wait_for_file, str(release)))
    await until(lambda: gp.queued == 1)
    with pytest.raises(Busy) as refused:
        await gp.run(wait_for_file, str(release))
    assert refused.value.retry_after > 0 and refused.value.details["queued"] == 1
    release.touch()
    assert await first == await second == str(release)
    assert gp.state()["refused"] == 1


async def test_work_whose_deadline_passed_in_the_queue_is_dropped(
    settings: Settings, tmp_path: Path
) -> None:
    gp = gp_work(settings, workers=0)
    release = tmp_path / "release"
    first = asyncio.create_task(gp.run(wait_for_file, str(release)))
    await until(lambda: gp.running == 1)
    ran: list[str] = []
    late = asyncio.create_task(gp.run(ran.append, "late", deadline=time.monotonic() + 0.05))
    await asyncio.sleep(0.1)
    release.touch()
    await first
    with pytest.raises(DeadlineExceeded):
        await late
    assert ran == [] and gp.state()["dropped"] == 1


async def test_a_running_computation_keeps_its_slot_after_its_caller_left(
    settings: Settings, tmp_path: Path
) -> None:
    gp = gp_work(settings, workers=0)
    release = tmp_path / "release"
    abandoned = asyncio.create_task(gp.run(wait_for_file, str(release)))
    await until(lambda: gp.running == 1)
    abandoned.cancel()
    ran: list[str] = []
    nxt = asyncio.create_task(gp.run(ran.append, "next"))
    await asyncio.sleep(0.05)
    assert gp.running == 1 and ran == []  # not started beside the one still computing
    release.touch()
    await nxt
    assert ran == ["next"]


async def test_worker_processes_compute_while_the_service_answers(
    settings: Settings, tmp_path: Path
) -> None:
    gp = gp_work(settings, workers=2)
    try:
        await gp.start()
        releases = [tmp_path / "a", tmp_path / "b"]
        jobs = [asyncio.create_task(gp.run(wait_for_file, str(p))) for p in releases]
        await until(lambda: gp.running == 2)
        # both slots busy in other processes: this loop still runs, the jobs still wait
        await asyncio.sleep(0.05)
        assert not any(job.done() for job in jobs)
        for path in releases:
            path.touch()
        assert await asyncio.gather(*jobs) == [str(p) for p in releases]
        # a real GP computation in a worker process
        observations = [({**LEO, "guidance_scale": 3.0 + i}, 1 + i % 5) for i in range(8)]
        proposals, best = await gp.propose("procs", "leonardo", observations, [], 8, k=3)
        assert len(proposals) == 3
        assert all(p.strategy in ("gp", "explore") for p in proposals)
        assert all(set(p.parameters) == set(LEO) for p in proposals)
        assert len({tuple(sorted(p.parameters.items())) for p in proposals}) == 3
        assert best is not None and best.source == "model"
        assert best.parameters in [o for o, _ in observations]
        # a crowd's batch: every point drawn from the posterior, apart from the pending ones
        pending = [p.parameters for p in proposals]
        drawn, _ = await gp.propose(
            "procs", "leonardo", observations, pending, 11, k=4, thompson=True
        )
        assert [p.strategy for p in drawn] == ["gp"] * 4
        points = [tuple(sorted(p.parameters.items())) for p in drawn]
        assert len(set(points)) == 4
        assert not set(points) & {tuple(sorted(p.items())) for p in pending}
        # before the start design is done, a batch stays Sobol whatever is asked
        early, _ = await gp.propose(
            "procs", "leonardo", observations[:2], [], 2, k=2, thompson=True
        )
        assert [p.strategy for p in early] == ["sobol", "sobol"]
    finally:
        await gp.close()


@pytest.fixture
async def ml_server(settings: Settings) -> AsyncIterator[tuple[str, Starlette]]:
    app = create_app(settings.model_copy(update={"ml_gp_queue_limit": 1}))
    app.state.resources.optimizer.acquisition = AcquisitionConfig(num_restarts=2, raw_samples=32)
    async with LifespanManager(app), serve(app) as url:
        yield url, app
    await app.state.resources.close()


async def seed(http: httpx.AsyncClient, study: str, n: int) -> None:
    """``n`` rated observations per API, enough that the next suggestion needs the GP."""
    for i in range(n):
        body = (await http.post("/ml/suggest_parameters", json={"study": study})).json()
        batch = [
            {
                "observation_id": f"{study}-{i}-{s['api']}",
                "suggestion_id": s["suggestion_id"],
                "api": s["api"],
                "parameters": s["parameters"],
                "rating": 1 + (i * 3 + len(s["api"])) % 5,
            }
            for s in body["suggestions"]
        ]
        response = await http.post("/ml/update_model", json={"study": study, "observations": batch})
        assert response.status_code == 200, response.text


async def test_health_answers_and_abandoned_suggestions_leave_nothing_behind(
    ml_server: tuple[str, Starlette], tmp_path: Path, db_pool: asyncpg.Pool[Any]
) -> None:
    url, app = ml_server
    gp: GPWork = app.state.resources.gp
    gp.queue_limit = 8
    release = tmp_path / "release"
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=60) as http:
        await seed(http, "gone", 6)
        await app.state.resources.work.drain()
        await drop_ready(db_pool, "gone")  # nothing ready: the next one needs the GP
        blocker = asyncio.create_task(gp.run(wait_for_file, str(release)))
        try:
            await until(lambda: gp.running == 1)
            health = await http.get("/ml/health")  # while the only GP slot is taken
            assert health.status_code == 200 and health.json()["gp"]["running"] == 1

            async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=0.5) as impatient:
                asked = asyncio.create_task(
                    impatient.post(
                        "/ml/suggest_parameters", json={"study": "gone", "apis": ["leonardo"]}
                    )
                )
                await until(lambda: gp.queued == 1)  # its computation waits for the slot
                with pytest.raises(httpx.TimeoutException):
                    await asked
            await until(lambda: gp.queued == 0)  # the caller gone, its work left the queue
            await asyncio.sleep(0.2)
            assert gp.queued == 0 and gp.running == 1 and not blocker.done()
        finally:
            release.touch()
            await blocker
        await app.state.resources.work.drain()
    async with db_pool.acquire() as conn:
        issued = await conn.fetchval(
            "SELECT count(*) FROM ml.suggestions WHERE study = 'gone' AND issued_at IS NOT NULL"
        )
    assert issued == 6 * 2  # the seeding's: none for the caller gone


async def test_a_full_queue_answers_503_and_the_gateway_trains_with_its_fallback(
    ml_server: tuple[str, Starlette],
    settings: Settings,
    trainer_token: str,
    tmp_path: Path,
    db_pool: asyncpg.Pool[Any],
) -> None:
    url, app = ml_server
    gp: GPWork = app.state.resources.gp
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=60) as http:
        await seed(http, "default", 6)
        await app.state.resources.work.drain()
        release = tmp_path / "release"
        blockers = [asyncio.create_task(gp.run(wait_for_file, str(release))) for _ in range(2)]
        await until(lambda: gp.running == 1 and gp.queued == 1)
        # the precomputed suggestion is claimed first; the one after must queue, and cannot
        first = await http.post("/ml/suggest_parameters", json={"apis": ["leonardo"]})
        assert first.status_code == 200
        await drop_ready(db_pool, "default")  # the reserve used up: the next ones need the GP

        busy = await http.post("/ml/suggest_parameters", json={"apis": ["leonardo"]})
        assert busy.status_code == 503
        assert busy.json()["error"]["code"] == "busy"
        assert int(busy.headers["Retry-After"]) >= 1

        patient = settings.model_copy(update={"ml_service_url": url, "ml_service_timeout": 30.0})
        async with gateway_client(patient, trainer_token) as client:
            train = await client.post(
                "/api/enhance/train", files={"image": ("r.jpg", interior(), "image/jpeg")}
            )
        assert train.status_code == 201, train.text
        assert {o["strategy"] for o in train.json()["options"]} == {"fallback"}
        release.touch()
        await asyncio.gather(*blockers)


async def test_a_burst_for_one_api_gets_distinct_points_from_shared_computations(
    ml_server: tuple[str, Starlette], db_pool: asyncpg.Pool[Any]
) -> None:
    url, app = ml_server
    gp: GPWork = app.state.resources.gp
    gp.queue_limit = 64
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=120) as http:
        await seed(http, "burst", 6)
        await app.state.resources.work.drain()
        before = gp.completed
        answers = await asyncio.gather(
            *(
                http.post("/ml/suggest_parameters", json={"study": "burst", "apis": ["leonardo"]})
                for _ in range(20)
            )
        )
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    points = {tuple(sorted(a.json()["suggestions"][0]["parameters"].items())) for a in answers}
    assert len(points) == 20
    strategies = {a.json()["suggestions"][0]["strategy"] for a in answers}
    assert strategies <= {"gp", "explore"}
    # waiting callers share a computation instead of queueing one each
    await app.state.resources.work.drain()
    assert gp.completed - before < 20
    # and after a burst, more than one is kept ready for the next callers
    async with db_pool.acquire() as conn:
        ready = await conn.fetchval(
            "SELECT count(*) FROM ml.suggestions WHERE study = 'burst' AND api = 'leonardo'"
            " AND issued_at IS NULL AND n_observations = 6"
        )
    assert ready > 1


async def test_best_answers_from_the_last_fit_while_the_gp_is_busy(
    ml_server: tuple[str, Starlette], tmp_path: Path
) -> None:
    url, app = ml_server
    gp: GPWork = app.state.resources.gp
    gp.queue_limit = 8
    release = tmp_path / "release"
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=60) as http:
        await seed(http, "reads", 6)
        await app.state.resources.work.drain()
        fresh = (await http.get("/ml/best", params={"study": "reads"})).json()["best"]["leonardo"]
        assert fresh["source"] == "model" and fresh["fitted_observations"] == 6

        blocker = asyncio.create_task(gp.run(wait_for_file, str(release)))
        try:
            await until(lambda: gp.running == 1)
            more = {**LEO, "guidance_scale": 14.0}
            update = await http.post(
                "/ml/update_model",
                json={
                    "study": "reads",
                    "observations": [
                        {"observation_id": "r7", "api": "leonardo", "parameters": more, "rating": 5}
                    ],
                },
            )
            assert update.status_code == 200
            stale = (await http.get("/ml/best", params={"study": "reads"})).json()["best"]
            assert not blocker.done()  # answered while the only GP slot was taken
            assert stale["leonardo"]["n_observations"] == 7
            assert stale["leonardo"]["fitted_observations"] == 6
            assert stale["leonardo"]["source"] == "model"
            assert stale["leonardo"]["model_age_seconds"] >= 0
        finally:
            release.touch()
            await blocker
        await app.state.resources.work.drain()
        await until(lambda: gp.idle())
        later = (await http.get("/ml/best", params={"study": "reads"})).json()["best"]
        assert later["leonardo"]["fitted_observations"] == 7


async def test_the_gateway_says_busy_not_unreachable_while_gp_work_waits(
    ml_server: tuple[str, Starlette], settings: Settings, trainer_token: str, tmp_path: Path
) -> None:
    url, app = ml_server
    gp: GPWork = app.state.resources.gp
    release = tmp_path / "release"
    blockers = [asyncio.create_task(gp.run(wait_for_file, str(release))) for _ in range(2)]
    try:
        await until(lambda: gp.running == 1 and gp.queued == 1)
        patient = settings.model_copy(update={"ml_service_url": url, "ml_service_timeout": 30.0})
        async with gateway_client(patient, trainer_token) as client:
            status = (await client.get("/api/train/status")).json()
        assert status["ml_service"]["reachable"] is True
        assert status["ml_service"]["busy"] is True
        assert status["ml_service"]["queued_computations"] == 1
    finally:
        release.touch()
        await asyncio.gather(*blockers)


async def test_the_service_with_worker_processes_suggests_and_answers_best(
    settings: Settings, db_pool: asyncpg.Pool[Any]
) -> None:
    app = create_app(settings.model_copy(update={"ml_gp_workers": 1, "ml_image_workers": 2}))
    try:
        async with (
            LifespanManager(app, startup_timeout=120),  # spawns a worker: torch imports there
            serve(app) as url,
            httpx.AsyncClient(base_url=url, headers=AUTH, timeout=120) as http,
        ):
            gp = app.state.resources.work.gp
            worker = await gp.run(_ready)
            assert worker != os.getpid()
            # serving goes first when the cores are short: the worker runs at a lower priority
            assert os.getpriority(os.PRIO_PROCESS, worker) == (
                os.getpriority(os.PRIO_PROCESS, 0) + BACKGROUND_NICE
            )
            # image features in their own worker processes, as the service computes them here
            images = app.state.resources.images
            workers = await asyncio.gather(
                *(asyncio.wrap_future(images._pool().submit(os.getpid)) for _ in range(4))
            )
            assert os.getpid() not in workers
            assert {os.getpriority(os.PRIO_PROCESS, w) for w in workers} == {
                os.getpriority(os.PRIO_PROCESS, 0) + BACKGROUND_NICE
            }
            original, results = interior(320, 240), [interior(160, 120), interior(320, 240)]
            shown = [
                {
                    "observation_id": f"img:{i}",
                    "api": "leonardo",
                    "parameters": LEO,
                    "rating": 3 + i,
                    "image_b64": base64.b64encode(r).decode(),
                    "original_b64": base64.b64encode(original).decode(),
                }
                for i, r in enumerate(results)
            ]
            stored = await http.post(
                "/ml/update_model", json={"study": "imgs", "observations": shown}
            )
            assert stored.status_code == 200, stored.text
            async with db_pool.acquire() as conn:
                rows = await conn.fetch(
                    "SELECT observation_id, features FROM ml.observation_features"
                    " WHERE study = 'imgs' ORDER BY observation_id"
                )
            assert [r["observation_id"] for r in rows] == ["img:0", "img:1"]
            for row, result in zip(rows, results, strict=True):
                expected = extract_bytes(result, original)
                assert np.allclose(row["features"], expected, atol=1e-6)
            broken = await http.post(
                "/ml/update_model",
                json={
                    "study": "imgs",
                    "observations": [
                        {**shown[0], "observation_id": "img:x", "image_b64": "bm90IGFuIGltYWdl"}
                    ],
                },
            )
            assert broken.status_code == 422
            assert broken.json()["error"]["details"] == {"observation_id": "img:x"}
            await seed(http, "procs", 3)
            best = await http.get("/ml/best", params={"study": "procs"})
            assert best.status_code == 200, best.text
            await seed(http, "more", 7)
            await app.state.resources.work.drain()
            best = await http.get("/ml/best", params={"study": "more", "fresh": "true"})
            assert best.status_code == 200, best.text
            assert best.json()["best"]["leonardo"]["source"] == "model"
    finally:
        await app.state.resources.close()


KILLED_SERVICE = """
import asyncio, os, sys
from ml_service.optimizer.workers import GPWork, OptimizerConfig, _ready
from ml_service.optimizer.facade import BayesianOptimizer
from shared.search_space import load_search_space

async def main():
    gp = GPWork(BayesianOptimizer(load_search_space(None)), OptimizerConfig(None, 5, 300),
                workers=1, queue_limit=1)
    await gp.start()
    with open(sys.argv[1] + ".tmp", "w") as out:
        out.write(str(await gp.run(_ready)))
    os.replace(sys.argv[1] + ".tmp", sys.argv[1])
    await asyncio.sleep(600)

asyncio.run(main())
"""


def running(pid: int) -> bool:
    """Whether ``pid`` still runs (an exited child of a dead parent may linger as a zombie)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


async def test_a_killed_service_leaves_no_gp_worker_behind(tmp_path: Path) -> None:
    told = tmp_path / "worker.pid"
    service = await asyncio.create_subprocess_exec(
        sys.executable, "-c", KILLED_SERVICE, str(told), stdout=asyncio.subprocess.DEVNULL
    )
    for _ in range(1200):  # the service imports torch and starts its worker first
        if told.exists() or service.returncode is not None:
            break
        await asyncio.sleep(0.1)
    worker = int(told.read_text())
    assert worker != service.pid and running(worker)
    service.kill()  # no shutdown: the pool is never told
    await service.wait()
    for _ in range(600):
        if not running(worker):
            break
        await asyncio.sleep(0.05)
    assert not running(worker), "the GP worker outlived its service"


async def drop_ready(pool: asyncpg.Pool[Any], study: str, computed_with: int | None = None) -> None:
    """Remove the study's precomputed, unissued suggestions (those computed with
    ``computed_with`` observations only): as if none were ready."""
    async with pool.acquire() as conn:
        await conn.execute(
            "DELETE FROM ml.suggestions WHERE study = $1 AND issued_at IS NULL"
            " AND ($2::int IS NULL OR n_observations = $2)",
            study,
            computed_with,
        )


async def issued_rows(pool: asyncpg.Pool[Any], study: str) -> dict[str, int]:
    """suggestion id -> the observation count it was computed for, of the issued ones."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT id, n_observations FROM ml.suggestions"
            " WHERE study = $1 AND api = 'leonardo' AND issued_at IS NOT NULL",
            study,
        )
    return {r["id"]: r["n_observations"] for r in rows}


async def test_count_asks_for_distinct_suggestions_per_api_in_one_batch(
    ml_server: tuple[str, Starlette],
) -> None:
    url, app = ml_server
    gp: GPWork = app.state.resources.gp
    gp.queue_limit = 8
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=120) as http:
        await seed(http, "batch", 6)
        await app.state.resources.work.drain()
        before = gp.completed
        answer = await http.post(
            "/ml/suggest_parameters",
            json={
                "study": "batch",
                "apis": ["leonardo", "stable_diffusion"],
                "count": {"leonardo": 5, "stable_diffusion": 2},
            },
        )
        assert answer.status_code == 200, answer.text
        got = answer.json()["suggestions"]
        assert [s["api"] for s in got] == ["leonardo"] * 5 + ["stable_diffusion"] * 2
        assert len({s["suggestion_id"] for s in got}) == 7
        leo = {tuple(sorted(s["parameters"].items())) for s in got if s["api"] == "leonardo"}
        assert len(leo) == 5
        # one computation per API (each made its precomputed one beside the batch)
        assert gp.completed - before <= 2

        same = await http.get(
            "/ml/suggest_parameters", params={"study": "batch", "apis": "leonardo", "count": 3}
        )
        assert same.status_code == 200, same.text
        assert len(same.json()["suggestions"]) == 3
        for bad in (0, 17, "many"):
            refused = await http.post(
                "/ml/suggest_parameters",
                json={"study": "batch", "apis": ["leonardo"], "count": bad},
            )
            assert refused.status_code == 422, refused.text
        other = await http.post(
            "/ml/suggest_parameters",
            json={"study": "batch", "apis": ["leonardo"], "count": {"stable_diffusion": 2}},
        )
        assert other.status_code == 422
        assert other.json()["error"]["code"] == "invalid_count"
    await app.state.resources.work.drain()


async def test_suggestions_a_few_observations_old_are_handed_out_only_in_a_burst(
    ml_server: tuple[str, Starlette], db_pool: asyncpg.Pool[Any], tmp_path: Path
) -> None:
    url, app = ml_server
    gp: GPWork = app.state.resources.gp
    gp.queue_limit = 64
    study = "stale"
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=120) as http:
        await seed(http, study, 6)
        await app.state.resources.work.drain()
        # a batch leaves suggestions precomputed for 6 observations, then one more arrives
        extra = await http.post(
            "/ml/suggest_parameters", json={"study": study, "apis": ["leonardo"], "count": 1}
        )
        await asyncio.gather(
            *(
                http.post("/ml/suggest_parameters", json={"study": study, "apis": ["leonardo"]})
                for _ in range(6)
            )
        )
        await app.state.resources.work.drain()
        s = extra.json()["suggestions"][0]
        rated = {
            "observation_id": "stale-extra",
            "suggestion_id": s["suggestion_id"],
            "api": "leonardo",
            "parameters": s["parameters"],
            "rating": 4,
        }
        response = await http.post(
            "/ml/update_model", json={"study": study, "observations": [rated]}
        )
        assert response.status_code == 200
        await app.state.resources.work.drain()
        async with db_pool.acquire() as conn:
            older = await conn.fetchval(
                "SELECT count(*) FROM ml.suggestions WHERE study = $1 AND api = 'leonardo'"
                " AND issued_at IS NULL AND n_observations = 6",
                study,
            )
        assert older > 0  # kept for a burst
        # as if the precomputation for today's data had not finished yet
        await drop_ready(db_pool, study, computed_with=7)

        # one caller at a time: computed for today's data, although older ones are ready
        known = await issued_rows(db_pool, study)
        alone = await http.post(
            "/ml/suggest_parameters", json={"study": study, "apis": ["leonardo"]}
        )
        assert alone.status_code == 200
        new = {k: v for k, v in (await issued_rows(db_pool, study)).items() if k not in known}
        assert list(new.values()) == [7]
        await app.state.resources.work.drain()

        # every GP slot busy with other work: a lone caller too takes an older one at once
        # rather than queue behind it
        release = tmp_path / "release"
        blocker = asyncio.create_task(gp.run(wait_for_file, str(release)))
        try:
            await until(lambda: gp.running == 1)
            await drop_ready(db_pool, study, computed_with=7)
            known = await issued_rows(db_pool, study)
            lone = await http.post(
                "/ml/suggest_parameters", json={"study": study, "apis": ["leonardo"]}
            )
            assert lone.status_code == 200 and not blocker.done()
            new = {k: v for k, v in (await issued_rows(db_pool, study)).items() if k not in known}
            assert list(new.values()) == [6]
        finally:
            release.touch()
            await blocker
        await app.state.resources.work.drain()

        # the turn held by a computation for today's data: after ``patience`` a lone caller
        # takes an older one rather than wait on
        work = app.state.resources.work
        work.patience = 0.2
        await drop_ready(db_pool, study, computed_with=7)
        known = await issued_rows(db_pool, study)
        async with work.turn(study, "leonardo", caller=False):
            patient = await http.post(
                "/ml/suggest_parameters",
                json={"study": study, "apis": ["leonardo"]},
                timeout=10,
            )
        assert patient.status_code == 200
        new = {k: v for k, v in (await issued_rows(db_pool, study)).items() if k not in known}
        assert list(new.values()) == [6]
        await app.state.resources.work.drain()

        # a burst: callers behind the first take the older ones instead of waiting for
        # suggestions for today's data (none ready: the reserve just made is removed)
        known = await issued_rows(db_pool, study)
        await drop_ready(db_pool, study, computed_with=7)
        burst = await asyncio.gather(
            *(
                http.post("/ml/suggest_parameters", json={"study": study, "apis": ["leonardo"]})
                for _ in range(8)
            )
        )
        assert all(b.status_code == 200 for b in burst)
        new = {k: v for k, v in (await issued_rows(db_pool, study)).items() if k not in known}
        assert len(new) == 8 and 6 in new.values()
        points = {tuple(sorted(b.json()["suggestions"][0]["parameters"].items())) for b in burst}
        assert len(points) == 8
    await app.state.resources.work.drain()
