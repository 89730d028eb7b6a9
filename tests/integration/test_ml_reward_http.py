"""The reward model through the ML service's HTTP API: train on stored features, score, status."""

from __future__ import annotations

import base64
import io
from typing import Any

import httpx
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from shared.settings import Settings
from tests.conftest import ML_TOKEN

AUTH = {"Authorization": f"Bearer {ML_TOKEN}"}
PARAMS = {
    "leonardo": {"init_strength": 0.4, "guidance_scale": 7.0, "controlnet_weight": 0.6},
    "stable_diffusion": {
        "prompt_strength": 0.5,
        "guidance_scale": 7.5,
        "num_inference_steps": 30,
        "controlnet_conditioning_scale": 0.6,
    },
}


def room(rng: np.random.Generator) -> Image.Image:
    image = Image.new("RGB", (192, 144), tuple(int(v) for v in rng.integers(140, 230, 3)))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 90, 192, 144), fill=tuple(int(v) for v in rng.integers(60, 140, 3)))
    for _ in range(6):
        x, y = int(rng.integers(0, 160)), int(rng.integers(10, 120))
        draw.rectangle((x, y, x + 24, y + 16), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return image


def jpeg(image: Image.Image) -> str:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return base64.b64encode(out.getvalue()).decode()


def variant(original: Image.Image, blur: float) -> str:
    return jpeg(original.filter(ImageFilter.GaussianBlur(blur)) if blur else original)


async def feed(client: httpx.AsyncClient, uploads: int) -> None:
    """Uploads whose two options differ in blur; the trainer rates sharpness."""
    rng = np.random.default_rng(3)
    for n in range(uploads):
        original = room(rng)
        observations = []
        for option, api in (("A", "leonardo"), ("B", "stable_diffusion")):
            blur = float(rng.choice([0.0, 0.8, 1.6, 2.4, 3.2]))
            observations.append(
                {
                    "observation_id": f"exp_{n}:{option}",
                    "api": api,
                    "parameters": PARAMS[api],
                    "rating": int(np.clip(round(5 - blur * 1.25), 1, 5)),
                    "image_b64": variant(original, blur),
                    "original_b64": jpeg(original),
                }
            )
        response = await client.post(
            "/ml/update_model", json={"observations": observations}, headers=AUTH
        )
        assert response.status_code == 200, response.text


async def test_train_then_score_prefers_the_sharper_image(ml_client: httpx.AsyncClient) -> None:
    status = (await ml_client.get("/ml/reward/status", headers=AUTH)).json()
    assert status["trained"] is False and status["samples_with_features"] == 0
    too_early = await ml_client.post("/ml/reward/train", json={}, headers=AUTH)
    assert too_early.status_code == 422
    assert too_early.json()["error"]["code"] == "not_enough_reward_data"
    not_trained = await ml_client.post(
        "/ml/reward/score", json={"candidates": [{"image_b64": "x"}]}, headers=AUTH
    )
    assert not_trained.status_code == 404

    await feed(ml_client, 40)
    trained = await ml_client.post("/ml/reward/train", json={}, headers=AUTH)
    assert trained.status_code == 200, trained.text
    body = trained.json()
    assert body["version"].startswith("rm-") and body["n_samples"] == 80
    assert body["pairwise_accuracy"] is not None and body["pairwise_accuracy"] > 0.7
    status = (await ml_client.get("/ml/reward/status", headers=AUTH)).json()
    assert status["trained"] is True and status["version"] == body["version"]

    original = room(np.random.default_rng(99))
    candidates = [
        {
            "id": name,
            "api": "stable_diffusion",
            "parameters": PARAMS["stable_diffusion"],
            "image_b64": variant(original, blur),
            "original_b64": jpeg(original),
        }
        for name, blur in (("sharp", 0.0), ("soft", 3.2))
    ]
    scored = await ml_client.post("/ml/reward/score", json={"candidates": candidates}, headers=AUTH)
    assert scored.status_code == 200, scored.text
    scores = {s["id"]: s for s in scored.json()["scores"]}
    assert scores["sharp"]["predicted_rating"] > scores["soft"]["predicted_rating"]
    assert all(1 <= s["predicted_rating"] <= 5 and s["uncertainty"] >= 0 for s in scores.values())
    bad = await ml_client.post(
        "/ml/reward/score", json={"candidates": [{"id": "x", "api": "leonardo"}]}, headers=AUTH
    )
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_candidate"


async def test_a_fresh_process_scores_with_the_stored_model(
    settings: Settings, ml_client: httpx.AsyncClient
) -> None:
    from asgi_lifespan import LifespanManager

    from ml_service.app import create_app

    await feed(ml_client, 20)
    version = (await ml_client.post("/ml/reward/train", json={}, headers=AUTH)).json()["version"]
    app = create_app(settings)  # another process: nothing cached, the model comes from the store
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ml2") as other:
            original = room(np.random.default_rng(5))
            scored = await other.post(
                "/ml/reward/score",
                json={
                    "candidates": [
                        {
                            "id": "c",
                            "api": "leonardo",
                            "parameters": PARAMS["leonardo"],
                            "image_b64": variant(original, 0.0),
                        }
                    ]
                },
                headers=AUTH,
            )
    assert scored.status_code == 200, scored.text
    assert scored.json()["version"] == version
    await app.state.resources.close()


async def test_the_cli_trains_with_progress(
    ml_client: httpx.AsyncClient, database_url: str, tmp_path: Any
) -> None:
    import os
    import subprocess
    import sys

    await feed(ml_client, 12)
    result = subprocess.run(
        [sys.executable, "-m", "latina_cli", "ml", "train-reward"],
        env={
            **os.environ,
            "DATABASE_URL": database_url,
            "LATINA_DATA_DIR": str(tmp_path),
            "MIGRATE_ON_START": "false",
            "REWARD_EPOCHS": "40",
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "epoch   40/40  (100%)" in result.stdout
    assert "reward model rm-" in result.stdout and "24 samples" in result.stdout
    status = (await ml_client.get("/ml/reward/status", headers=AUTH)).json()
    assert status["trained"] is True
