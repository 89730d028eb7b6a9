"""A killed ML service loses no acknowledged observation (a real process, SIGKILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx

from tests.conftest import ML_TOKEN
from tests.servers import free_port

AUTH = {"Authorization": f"Bearer {ML_TOKEN}"}


def start(database_url: str, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "ML_SERVICE_TOKEN": ML_TOKEN,
        "MIGRATE_ON_START": "false",
        "LOG_LEVEL": "WARNING",
        "ML_PORT": str(port),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "latina_cli", "ml", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ml/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise AssertionError("ML service did not start")


def test_observations_survive_a_killed_process(database_url: str) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start(database_url, port)
    acknowledged = 0
    try:
        for i in range(6):
            suggestion = httpx.get(
                f"{base}/ml/suggest_parameters?apis=leonardo", headers=AUTH, timeout=30
            ).json()["suggestions"][0]
            body = {
                "observations": [
                    {
                        "observation_id": f"k{i}",
                        "suggestion_id": suggestion["suggestion_id"],
                        "api": "leonardo",
                        "parameters": suggestion["parameters"],
                        "rating": 1 + i % 5,
                    }
                ]
            }
            response = httpx.post(f"{base}/ml/update_model", json=body, headers=AUTH, timeout=30)
            assert response.status_code == 200
            acknowledged += 1
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    restarted = start(database_url, port)
    try:
        best = httpx.get(f"{base}/ml/best", headers=AUTH, timeout=60).json()["best"]
        assert best["leonardo"]["n_observations"] == acknowledged == 6
        health = httpx.get(f"{base}/ml/health", timeout=5).json()
        assert health["n_observations"] == 6
        again = httpx.get(
            f"{base}/ml/suggest_parameters?apis=leonardo", headers=AUTH, timeout=60
        ).json()
        assert again["n_observations"]["leonardo"] == 6
        assert again["suggestions"][0]["strategy"] == "gp"
    finally:
        restarted.terminate()
        restarted.wait(timeout=15)
