"""The ML service's JSON bodies, pinned: keys, their order, values, nulls and number types.

What the gateway and other clients parse must not move when the code behind a route does.
Deterministic bodies (a fresh study's Sobol suggestions, observed bests, the search space) are
compared whole; in the others, values that depend on a fit (ratings predicted by a GP or the
reward model, ids, times) are replaced by their JSON type before comparing.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest
from asgi_lifespan import LifespanManager

from ml_service.app import create_app
from shared.settings import Settings
from tests.conftest import ML_TOKEN
from tests.integration.test_ml_reward_http import PARAMS, feed, jpeg, room, variant

AUTH = {"Authorization": f"Bearer {ML_TOKEN}"}
LEO = {"init_strength": 0.3, "guidance_scale": 7.0, "controlnet_weight": 0.6}
SD = {
    "prompt_strength": 0.2,
    "guidance_scale": 8.0,
    "num_inference_steps": 40,
    "controlnet_conditioning_scale": 0.7,
}


def compact(value: Any) -> str:
    """JSON as Starlette's ``JSONResponse`` writes it."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def typed(value: Any) -> Any:
    """``value`` with every number and string replaced by its type (``"<float>"``, ...)."""
    if isinstance(value, dict):
        return {k: typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [typed(v) for v in value]
    if value is None or isinstance(value, bool):
        return value
    return f"<{type(value).__name__}>"


def masked(value: Any, volatile: set[str]) -> Any:
    """``value`` with the entries named in ``volatile`` (at any depth) replaced by ``typed``."""
    if isinstance(value, dict):
        return {k: typed(v) if k in volatile else masked(v, volatile) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v, volatile) for v in value]
    return value


def body(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    decoded = response.json()
    assert response.text == compact(decoded)  # compact, key order as sent
    return decoded


def assert_same(actual: Any, expected: Any) -> None:
    """Equal values with the keys in the same order (dict equality ignores order)."""
    assert compact(actual) == compact(expected)


@pytest.fixture
async def ml(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings.model_copy(update={"reward_epochs": 20, "reward_members": 2}))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://ml", headers=AUTH, timeout=120
        ) as client:
            yield client
    await app.state.resources.close()


NO_BEST = {
    "parameters": None,
    "predicted_rating": None,
    "uncertainty": None,
    "n_observations": 0,
    "source": "none",
    "importance": None,
    "fitted_observations": None,
    "model_age_seconds": None,
}
OBSERVED_LEO = {
    "parameters": {"init_strength": 0.3, "guidance_scale": 7.0, "controlnet_weight": 0.6},
    "predicted_rating": 4.0,
    "uncertainty": None,
    "n_observations": 1,
    "source": "observed",
    "importance": None,
    "fitted_observations": None,
    "model_age_seconds": None,
}


async def test_health_body(ml: httpx.AsyncClient) -> None:
    assert_same(
        body(await ml.get("/ml/health", headers={})),
        {
            "status": "ok",
            "service": "latina-ml",
            "version": "0.1.0",
            "database": "ok",
            "apis": ["leonardo", "stable_diffusion"],
            "n_observations": 0,
            "models": {},
            "gp": {
                "mode": "inline",
                "workers": 1,
                "running": 0,
                "queued": 0,
                "queue_limit": 32,
                "dropped": 0,
                "refused": 0,
                "completed": 0,
            },
        },
    )


async def test_search_space_body(ml: httpx.AsyncClient) -> None:
    assert_same(
        body(await ml.get("/ml/search_space")),
        {
            "search_space": {
                "leonardo": [
                    {"name": "init_strength", "type": "float", "bounds": [0.1, 0.6]},
                    {"name": "guidance_scale", "type": "float", "bounds": [3.0, 15.0]},
                    {"name": "controlnet_weight", "type": "float", "bounds": [0.0, 1.5]},
                ],
                "stable_diffusion": [
                    {"name": "prompt_strength", "type": "float", "bounds": [0.1, 0.6]},
                    {"name": "guidance_scale", "type": "float", "bounds": [3.0, 15.0]},
                    {"name": "num_inference_steps", "type": "int", "bounds": [20, 60]},
                    {
                        "name": "controlnet_conditioning_scale",
                        "type": "float",
                        "bounds": [0.0, 1.5],
                    },
                ],
            }
        },
    )


async def test_suggest_bodies_of_a_fresh_study(ml: httpx.AsyncClient) -> None:
    got = body(await ml.get("/ml/suggest_parameters", params={"study": "pin"}))
    assert all(s["suggestion_id"].startswith("sug_") for s in got["suggestions"])
    assert_same(
        masked(got, {"suggestion_id"}),
        {
            "suggestions": [
                {
                    "suggestion_id": "<str>",
                    "api": "leonardo",
                    "strategy": "sobol",
                    "parameters": {
                        "init_strength": 0.4783,
                        "guidance_scale": 5.0781,
                        "controlnet_weight": 0.8013,
                    },
                },
                {
                    "suggestion_id": "<str>",
                    "api": "stable_diffusion",
                    "strategy": "sobol",
                    "parameters": {
                        "prompt_strength": 0.5382,
                        "guidance_scale": 5.5159,
                        "num_inference_steps": 25,
                        "controlnet_conditioning_scale": 0.7663,
                    },
                },
            ],
            "n_observations": {"leonardo": 0, "stable_diffusion": 0},
        },
    )
    posted = body(
        await ml.post(
            "/ml/suggest_parameters", json={"apis": ["leonardo"], "study": "pin", "count": 2}
        )
    )
    assert_same(
        masked(posted, {"suggestion_id"}),
        {
            "suggestions": [
                {
                    "suggestion_id": "<str>",
                    "api": "leonardo",
                    "strategy": "sobol",
                    "parameters": {
                        "init_strength": 0.32,
                        "guidance_scale": 9.2621,
                        "controlnet_weight": 0.0921,
                    },
                },
                {
                    "suggestion_id": "<str>",
                    "api": "leonardo",
                    "strategy": "sobol",
                    "parameters": {
                        "init_strength": 0.1145,
                        "guidance_scale": 8.473,
                        "controlnet_weight": 1.1725,
                    },
                },
            ],
            "n_observations": {"leonardo": 0, "stable_diffusion": 0},
        },
    )


async def test_update_best_and_delete_bodies_from_observations(ml: httpx.AsyncClient) -> None:
    observation = {"observation_id": "e1:A", "api": "leonardo", "parameters": LEO, "rating": 4}
    updated = await ml.post(
        "/ml/update_model", json={"study": "pin", "observations": [observation]}
    )
    assert_same(
        body(updated),
        {
            "updated": True,
            "n_observations": {"leonardo": 1, "stable_diffusion": 0},
            "best": {"leonardo": OBSERVED_LEO, "stable_diffusion": NO_BEST},
        },
    )
    assert_same(
        body(await ml.get("/ml/best", params={"study": "pin"})),
        {"study": "pin", "best": {"leonardo": OBSERVED_LEO, "stable_diffusion": NO_BEST}},
    )
    assert_same(body(await ml.delete("/ml/studies/pin")), {"deleted": "pin"})


async def test_best_body_from_a_fitted_model(ml: httpx.AsyncClient) -> None:
    observations = [
        {
            "observation_id": f"m{i}",
            "api": "stable_diffusion",
            "parameters": {**SD, "guidance_scale": scale, "num_inference_steps": steps},
            "rating": rating,
        }
        for i, (scale, steps, rating) in enumerate([(4.0, 25, 2), (9.0, 40, 5), (13.0, 55, 3)])
    ]
    body(await ml.post("/ml/update_model", json={"observations": observations}))
    got = body(await ml.get("/ml/best", params={"fresh": "true"}))
    fitted = got["best"]["stable_diffusion"]
    assert fitted["parameters"] in [o["parameters"] for o in observations]
    assert_same(
        masked(got, {"parameters", "predicted_rating", "uncertainty", "importance"}),
        {
            "study": "default",
            "best": {
                "leonardo": NO_BEST,
                "stable_diffusion": {
                    "parameters": {
                        "prompt_strength": "<float>",
                        "guidance_scale": "<float>",
                        "num_inference_steps": "<int>",
                        "controlnet_conditioning_scale": "<float>",
                    },
                    "predicted_rating": "<float>",
                    "uncertainty": "<float>",
                    "n_observations": 3,
                    "source": "model",
                    "importance": {
                        "prompt_strength": "<float>",
                        "guidance_scale": "<float>",
                        "num_inference_steps": "<float>",
                        "controlnet_conditioning_scale": "<float>",
                    },
                    "fitted_observations": 3,
                    "model_age_seconds": 0.0,
                },
            },
        },
    )


REWARD_METRICS = {
    "n_train": "<int>",
    "n_test": "<int>",
    "pairwise_accuracy": "<float>",
    "mae": "<float>",
    "pairs_tested": "<int>",
}


async def test_reward_bodies_before_and_after_training(ml: httpx.AsyncClient) -> None:
    untrained = {
        "study": "default",
        "trained": False,
        "version": None,
        "trained_at": None,
        "samples": 0,
        "samples_with_features": 0,
        "pairwise_accuracy": None,
        "mae": None,
        "metrics": None,
        "feature_version": "f1",
    }
    assert_same(body(await ml.get("/ml/reward/status")), untrained)

    await feed(ml, 10)
    trained = body(await ml.post("/ml/reward/train", json={}))
    assert trained["version"].startswith("rm-")
    assert_same(
        masked(trained, {"version", *REWARD_METRICS}),
        {"study": "default", "version": "<str>", "n_samples": 20, **REWARD_METRICS},
    )

    status = body(await ml.get("/ml/reward/status"))
    assert status["version"] == trained["version"]
    assert status["metrics"] == {k: trained[k] for k in REWARD_METRICS}
    assert_same(
        masked(status, {"version", "trained_at", "pairwise_accuracy", "mae", "metrics"}),
        {
            "study": "default",
            "trained": True,
            "version": "<str>",
            "trained_at": "<str>",
            "samples": 20,
            "samples_with_features": 20,
            "pairwise_accuracy": "<float>",
            "mae": "<float>",
            # as PostgreSQL's jsonb keeps an object: shorter keys first
            "metrics": {
                "mae": "<float>",
                "n_test": "<int>",
                "n_train": "<int>",
                "pairs_tested": "<int>",
                "pairwise_accuracy": "<float>",
            },
            "feature_version": "f1",
        },
    )

    original = room(np.random.default_rng(7))
    candidates = [
        {
            "id": name,
            "api": "leonardo",
            "parameters": PARAMS["leonardo"],
            "image_b64": variant(original, blur),
            "original_b64": jpeg(original),
        }
        for name, blur in (("sharp", 0.0), ("soft", 3.2))
    ]
    scored = body(await ml.post("/ml/reward/score", json={"candidates": candidates}))
    assert scored["version"] == trained["version"]
    assert_same(
        masked(scored, {"version", "predicted_rating", "uncertainty"}),
        {
            "study": "default",
            "version": "<str>",
            "scores": [
                {"id": "sharp", "predicted_rating": "<float>", "uncertainty": "<float>"},
                {"id": "soft", "predicted_rating": "<float>", "uncertainty": "<float>"},
            ],
        },
    )
