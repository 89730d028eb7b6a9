"""The exact JSON of the gateway's main responses, pinned: keys, nulls and number types (an
int must stay an int, a float a float). Values that change per run (ids, times, signed URLs,
suggested parameters) are checked by their type and shape only."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx

from tests.images import interior
from tests.integration.test_training_http import client, ml_url, ratings_for, upload

__all__ = ["client", "ml_url"]


@dataclass(frozen=True)
class Like:
    """A placeholder for a value that varies per run: its type and, for strings, a pattern."""

    kind: type
    pattern: str | None = None

    def matches(self, value: Any) -> bool:
        if type(value) is not self.kind:
            return False
        return self.pattern is None or re.fullmatch(self.pattern, value) is not None


EXPERIMENT = Like(str, r"exp_[0-9a-z]+")
IMAGE_ID = Like(int)
FLOAT = Like(float)
TIME = Like(str, r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00")
PARAMETERS = Like(dict)


def signed(bucket: str, folder: str, ext: str) -> Like:
    return Like(
        str,
        rf"/objects/{bucket}/{folder}/\d{{4}}/\d\d/\d\d/[0-9a-f]{{32}}\.{ext}"
        r"\?expires=\d+&sig=[A-Za-z0-9_-]+",
    )


ORIGINAL_URL = signed("latina-uploads", "originals", "jpg")
ENHANCED_URL = signed("latina-leonardo-images", "enhanced", "png")


def assert_same(actual: Any, expected: Any, path: str = "$") -> None:
    """``actual`` equals ``expected`` with exact types (True is not 1, 5 is not 5.0)."""
    if isinstance(expected, Like):
        assert expected.matches(actual), f"{path}: {actual!r} is not like {expected}"
        return
    assert type(actual) is type(expected), f"{path}: {actual!r} is not a {type(expected)}"
    if isinstance(expected, dict):
        assert set(actual) == set(expected), f"{path}: keys {sorted(actual)} != {sorted(expected)}"
        for key, value in expected.items():
            assert_same(actual[key], value, f"{path}.{key}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), f"{path}: {len(actual)} items, not {len(expected)}"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_same(a, e, f"{path}[{i}]")
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


def option(name: str, api: str) -> dict[str, Any]:
    return {
        "option": name,
        "api": api,
        "prompt_version": "v1.0.0",
        "parameters": PARAMETERS,
        "strategy": "sobol",
        "image_id": IMAGE_ID,
        "provider": "local",
        "url": ENHANCED_URL,
    }


TRAIN = {
    "experiment_id": EXPERIMENT,
    "project_id": "villa-7",
    "mode": "ab",
    "prompt_version": "v1.0.0",
    "ab_test": None,
    "original": {"image_id": IMAGE_ID, "url": ORIGINAL_URL},
    "options": [option("A", "leonardo"), option("B", "stable_diffusion")],
}

RATE = {
    "success": True,
    "ml_updated": True,
    "sample_number": 1,
    "current_best_rating": 5.0,
    "samples_collected": 1,
    "phase_1_complete": False,
    "prompt_evolution": {
        "triggered": False,
        "waiting_for_ab_test": False,
        "new_version": None,
        "ab_test": None,
    },
}


def per_api(avg: float, best: int) -> dict[str, Any]:
    return {
        "samples": 1,
        "avg_rating": avg,
        "best_rating": best,
        "best_parameters": PARAMETERS,
        "predicted_best_rating": FLOAT,
        "uncertainty": None,
        "importance": None,
    }


STATUS = {
    "samples_collected": 1,
    "phase": 1,
    "phase_1_complete": False,
    "phase_1_target": 50,
    "current_best_rating": 5.0,
    "per_api": {"leonardo": per_api(2.0, 2), "stable_diffusion": per_api(5.0, 5)},
    "current_prompt": {"version": "v1.0.0", "performance_score": 3.5, "usage_count": 1},
    "ab_test": None,
    "prompt_evolution": {"last_round": None, "waiting_for_ab_test": False},
    "learning_curve": [{"sample": 1, "avg_rating": 3.5, "best_so_far": 5.0}],
    "ml_service": {
        "reachable": True,
        "pending_updates": 0,
        "busy": False,
        "queued_computations": 0,
    },
    "reward_model": {
        "trained": False,
        "version": None,
        "samples": 0,
        "pairwise_accuracy": None,
        "mae": None,
        "prediction_errors": [],
        "mean_abs_error": None,
    },
}


def rated_option(name: str, api: str, rating: int) -> dict[str, Any]:
    return {
        "option": name,
        "api": api,
        "provider": "local",
        "image_id": IMAGE_ID,
        "url": ENHANCED_URL,
        "parameters": PARAMETERS,
        "strategy": "sobol",
        "rating": rating,
        "comments": f"option {name}",
    }


HISTORY = {
    "items": [
        {
            "experiment_id": EXPERIMENT,
            "project_id": "villa-7",
            "mode": "ab",
            "prompt_version": "v1.0.0",
            "created_at": TIME,
            "created_by": "tina",
            "sample_number": 1,
            "rated_at": TIME,
            "rated_by": "tina",
            "rated_by_name": "tina",
            "original": {"image_id": IMAGE_ID, "url": ORIGINAL_URL},
            "options": [rated_option("A", "leonardo", 2), rated_option("B", "stable_diffusion", 5)],
        }
    ],
    "next_cursor": None,
}

PROMPTS = {
    "current": "v1.0.0",
    "items": [
        {
            "version": "v1.0.0",
            "parent_version": None,
            "prompt": Like(str),
            "negative_prompt": Like(str),
            "performance_score": 3.5,
            "usage_count": 1,
            "created_at": TIME,
            "is_current": True,
            "status": "active",
            "origin": "seed",
            "changes": [],
            "reasoning": Like(str),
        }
    ],
}


async def test_train_rate_status_history_and_prompt_bodies_keep_their_exact_json(
    client: httpx.AsyncClient,
) -> None:
    trained = await upload(client, project_id="villa-7")
    assert trained.status_code == 201, trained.text
    body = trained.json()
    assert_same(body, TRAIN)

    first = await client.post("/api/train/rate", json=ratings_for(body, 2, 5))
    assert first.status_code == 200, first.text
    assert_same(first.json(), RATE)
    # the same body again comes from the stored answer (jsonb): same JSON, same types
    again = await client.post("/api/train/rate", json=ratings_for(body, 2, 5))
    assert again.status_code == 200, again.text
    assert_same(again.json(), RATE)

    status = await client.get("/api/train/status")
    assert status.status_code == 200, status.text
    assert_same(status.json(), STATUS)

    history = await client.get("/api/train/history", params={"limit": 5})
    assert history.status_code == 200, history.text
    assert_same(history.json(), HISTORY)
    assert history.json()["items"][0]["experiment_id"] == body["experiment_id"]

    prompts = await client.get("/api/prompts")
    assert prompts.status_code == 200, prompts.text
    assert_same(prompts.json(), PROMPTS)

    tests = await client.get("/api/ab_tests")
    assert tests.status_code == 200, tests.text
    assert_same(tests.json(), {"items": []})


async def test_error_bodies_keep_their_exact_json(client: httpx.AsyncClient) -> None:
    missing = await client.post(
        "/api/train/rate",
        json={"experiment_id": "exp_nope", "ratings": [{"option": "A", "rating": 3}]},
    )
    assert missing.status_code == 404
    assert_same(
        missing.json(),
        {"error": {"code": "experiment_not_found", "message": "no experiment 'exp_nope'"}},
    )
    body = (await upload(client)).json()
    unknown = await client.post(
        "/api/train/rate",
        json={"experiment_id": body["experiment_id"], "ratings": [{"option": "C", "rating": 3}]},
    )
    assert unknown.status_code == 422
    assert_same(
        unknown.json(),
        {
            "error": {
                "code": "unknown_option",
                "message": "unknown option 'C'; options are A and B",
                "details": {"option": "C"},
            }
        },
    )


ENHANCE = {
    "image_id": IMAGE_ID,
    "url": ENHANCED_URL,
    "original": {"image_id": IMAGE_ID, "url": ORIGINAL_URL},
    "project_id": "shop",
    "api": "leonardo",
    "provider": "local",
    "parameters": PARAMETERS,
    "prompt_version": "v1.0.0",
    "predicted_rating": None,
    "uncertainty": None,
    "candidates": 1,
    "ranked_by": "optimizer",
}


async def test_enhance_body_keeps_its_exact_json(client: httpx.AsyncClient) -> None:
    # nothing learned yet: the first API with space-filling parameters, nothing predicted
    enhanced = await client.post(
        "/api/enhance",
        files={"image": ("room.jpg", interior(), "image/jpeg")},
        data={"project_id": "shop"},
    )
    assert enhanced.status_code == 201, enhanced.text
    assert_same(enhanced.json(), ENHANCE)
