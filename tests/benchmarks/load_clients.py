"""The load benchmark's clients: trainers on the gateway, and other clients of the ML service."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import httpx
import numpy as np

from tests.benchmarks import simulated_rater as rater
from tests.benchmarks.load_figures import Check, Loop, Timings, timed
from tests.demo import synthetic_interior

UPLOAD_SIZE = (640, 480)
IMAGES = 12  # distinct uploads, used in turn
ACTIVE_CANDIDATES = 10
POLL_INTERVAL = 0.25
BACKGROUND_GRACE = 30.0


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _check_train(mode: str) -> Check:
    def check(response: httpx.Response) -> str | None:
        body = response.json()
        if body.get("mode") != mode:
            return f"mode {body.get('mode')!r}, asked for {mode!r}"
        for option in body["options"]:
            if "error" in option or "image_id" not in option:
                return f"option {option['option']} failed: {option.get('error')}"
        if mode == "active" and body.get("candidates") != ACTIVE_CANDIDATES:
            return f"{body.get('candidates')} candidates, expected {ACTIVE_CANDIDATES}"
        return None

    return check


def _check_rate(response: httpx.Response) -> str | None:
    return None if response.json().get("success") is True else response.text


class Trainers:
    """Trainers uploading and rating through the gateway, each with an account of its own.

    Ratings come from the optimizer benchmark's simulated trainer (``simulated_rater``), so the
    ML service learns from them as it would from a person.
    """

    def __init__(self, http: httpx.AsyncClient, tokens: list[str], seed: int = 15) -> None:
        self.http = http
        self.tokens = tokens
        self.rng = np.random.default_rng(seed)
        self.images = [synthetic_interior(self.rng, *UPLOAD_SIZE) for _ in range(IMAGES)]
        self.uploads = 0

    async def train(self, token: str, mode: str, into: Loop) -> dict[str, Any] | None:
        image = self.images[self.uploads % len(self.images)]
        self.uploads += 1
        response = await timed(
            into.train,
            201,
            lambda: self.http.post(
                "/api/enhance/train",
                files={"image": ("room.jpg", image, "image/jpeg")},
                data={"mode": mode},
                headers=bearer(token),
            ),
            _check_train(mode),
        )
        if response is None:
            return None
        body: dict[str, Any] = response.json()
        for option in body["options"]:
            if option.get("strategy") == "fallback":
                into.notes["train: an option with fallback parameters (ML suggest failed)"] += 1
            if mode == "active" and option.get("predicted_rating") is None:
                into.notes["train: an option shown unranked (reward model did not answer)"] += 1
        return body

    async def rate(self, token: str, experiment: dict[str, Any], into: Loop) -> None:
        ratings = [
            {
                "option": o["option"],
                "image_id": o["image_id"],
                "rating": rater.rate(o["api"], o["parameters"], self.rng),
            }
            for o in experiment["options"]
        ]
        response = await timed(
            into.rate,
            200,
            lambda: self.http.post(
                "/api/train/rate",
                json={"experiment_id": experiment["experiment_id"], "ratings": ratings},
                headers=bearer(token),
            ),
            _check_rate,
        )
        if response is not None and not response.json()["ml_updated"]:
            into.notes["rate: ml_updated false (the update was left to the worker)"] += 1

    async def loop(self, token: str, mode: str, rounds: int, into: Loop) -> None:
        """Upload, then rate what came back; ``rounds`` times, one request at a time."""
        for _ in range(rounds):
            body = await self.train(token, mode, into)
            if body is not None:
                await self.rate(token, body, into)

    async def prepare(self, n: int, workers: int, into: Loop) -> list[tuple[str, dict[str, Any]]]:
        """``n`` experiments (mode=ab) left unrated, each with its uploader's token."""
        made: list[tuple[str, dict[str, Any]]] = []
        queue = list(range(n))

        async def worker() -> None:
            while queue:
                token = self.tokens[queue.pop() % len(self.tokens)]
                body = await self.train(token, "ab", into)
                if body is not None:
                    made.append((token, body))

        await asyncio.gather(*(worker() for _ in range(workers)))
        return made

    async def status(self) -> dict[str, Any]:
        response = await self.http.get("/api/train/status", headers=bearer(self.tokens[0]))
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body


def suggest(http: httpx.AsyncClient, study: str) -> Callable[[], Awaitable[httpx.Response]]:
    return lambda: http.post("/ml/suggest_parameters", json={"apis": rater.apis(), "study": study})


def best(http: httpx.AsyncClient, study: str) -> Callable[[], Awaitable[httpx.Response]]:
    return lambda: http.get("/ml/best", params={"study": study})


async def poll(
    send: Callable[[], Awaitable[httpx.Response]],
    into: Timings,
    *,
    stop: asyncio.Event | None = None,
    count: int | None = None,
) -> None:
    """One request at a time every ``POLL_INTERVAL``, until ``stop`` or ``count`` requests."""
    done = 0
    while (stop is None or not stop.is_set()) and (count is None or done < count):
        await timed(into, 200, send)
        done += 1
        await asyncio.sleep(POLL_INTERVAL)


async def stop_background(stop: asyncio.Event, tasks: list[asyncio.Task[Any]]) -> None:
    """Let background clients finish the request in hand, then cut off what still runs."""
    stop.set()
    _, pending = await asyncio.wait(tasks, timeout=BACKGROUND_GRACE)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def drive_study(
    http: httpx.AsyncClient, study: str, stop: asyncio.Event, into: dict[str, Timings]
) -> None:
    """Suggest, rate (simulated), update, ask for the best: as fast as the service answers."""
    rng = np.random.default_rng(3)
    n = 0
    while not stop.is_set():
        response = await timed(into["suggest"], 200, suggest(http, study))
        if response is None:
            await asyncio.sleep(POLL_INTERVAL)
            continue
        observations = [
            {
                "observation_id": f"{study}-{n}-{s['api']}",
                "suggestion_id": s["suggestion_id"],
                "api": s["api"],
                "parameters": s["parameters"],
                "rating": rater.rate(s["api"], s["parameters"], rng),
                "prompt_version": "v1.0.0",
            }
            for s in response.json()["suggestions"]
        ]
        n += 1
        body = {"study": study, "observations": observations}
        await timed(into["update"], 200, partial(http.post, "/ml/update_model", json=body))
        await timed(into["best"], 200, best(http, study))


async def seed_study(http: httpx.AsyncClient, study: str, per_api: int, seed: int = 4) -> None:
    """Random observations (simulated ratings) for a study of the benchmark's own."""
    rng = np.random.default_rng(seed)
    observations = []
    for api in rater.apis():
        for i in range(per_api):
            parameters = rater.random_parameters(api, rng)
            observations.append(
                {
                    "observation_id": f"seed-{i}-{api}",
                    "api": api,
                    "parameters": parameters,
                    "rating": 1 + i % 5 if per_api < 5 else rater.rate(api, parameters, rng),
                    "prompt_version": "v1.0.0",
                }
            )
    response = await http.post(
        "/ml/update_model", json={"study": study, "observations": observations}
    )
    response.raise_for_status()
