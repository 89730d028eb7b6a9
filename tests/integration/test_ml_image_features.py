"""Phase 2 data: observations that carry their images leave image features in the ML schema."""

from __future__ import annotations

import base64
import io
from typing import Any

import asyncpg
import httpx
from PIL import Image, ImageFilter

from ml_service.images import features as fx
from tests.conftest import ML_TOKEN
from tests.images import interior

AUTH = {"Authorization": f"Bearer {ML_TOKEN}"}
PARAMS = {"init_strength": 0.4, "guidance_scale": 7.0, "controlnet_weight": 0.6}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def blurred(data: bytes) -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(data)).filter(ImageFilter.GaussianBlur(3)).save(out, "JPEG")
    return out.getvalue()


def observation(oid: str, rating: int, image: bytes | None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "observation_id": oid,
        "api": "leonardo",
        "parameters": PARAMS,
        "rating": rating,
        **extra,
    }
    if image is not None:
        body["image_b64"] = b64(image)
        body["original_b64"] = b64(interior(320, 240))
    return body


async def test_features_are_stored_per_observation_with_their_group(
    ml_client: httpx.AsyncClient, db_pool: asyncpg.Pool[Any]
) -> None:
    sharp, soft = interior(320, 240), blurred(interior(320, 240))
    batch = [
        observation("exp_a:A", 4, sharp),
        observation("exp_a:B", 2, soft),
        observation("exp_b:A", 3, None),  # no image: an observation like before, no features
    ]
    response = await ml_client.post("/ml/update_model", json={"observations": batch}, headers=AUTH)
    assert response.status_code == 200, response.text
    again = await ml_client.post("/ml/update_model", json={"observations": batch}, headers=AUTH)
    assert again.status_code == 200  # idempotent
    async with db_pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT observation_id, group_id, feature_version, features"
            " FROM ml.observation_features ORDER BY observation_id"
        )
    assert [(r["observation_id"], r["group_id"]) for r in rows] == [
        ("exp_a:A", "exp_a"),
        ("exp_a:B", "exp_a"),
    ]
    assert {r["feature_version"] for r in rows} == {fx.FEATURE_VERSION}
    vectors = [list(r["features"]) for r in rows]
    assert all(len(v) == len(fx.FEATURE_NAMES) for v in vectors)
    assert vectors[0] != vectors[1]  # the blurred one differs


async def test_a_broken_image_is_422_and_stores_nothing(
    ml_client: httpx.AsyncClient, db_pool: asyncpg.Pool[Any]
) -> None:
    cases = [
        ({"image_b64": "not base64!!"}, "invalid_image"),
        ({"image_b64": b64(b"not an image at all")}, "corrupt_image"),
    ]
    for bad, code in cases:
        body = observation("exp_c:A", 3, None, **bad)
        response = await ml_client.post(
            "/ml/update_model", json={"observations": [body]}, headers=AUTH
        )
        assert response.status_code == 422
        assert response.json()["error"]["code"] == code
    async with db_pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM ml.observations") == 0
