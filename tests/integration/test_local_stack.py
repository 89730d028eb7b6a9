"""``latina run`` (what ``make run`` starts): up within 60 s, data kept across restarts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tests.servers import free_port

START_TIMEOUT = 180.0  # the ML service imports torch and spawns its workers: slow on a busy machine


class Stack:
    def __init__(self, data_dir: Path, gateway_port: int, ml_port: int) -> None:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("DATABASE_URL", "MIGRATE_ON_START", "LATINA_ENV")
        }
        env.update(
            {
                "LATINA_DATA_DIR": str(data_dir),
                "PROMPT_EXPORT_DIR": str(data_dir / "prompt-library"),
                "GATEWAY_PORT": str(gateway_port),
                "ML_PORT": str(ml_port),
                "LOG_FORMAT": "text",
            }
        )
        self.gateway = f"http://127.0.0.1:{gateway_port}"
        self.ml = f"http://127.0.0.1:{ml_port}"
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "latina_cli", "run"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_until_up(self) -> float:
        started = time.monotonic()
        urls = [f"{self.gateway}/healthz", f"{self.gateway}/readyz", f"{self.ml}/ml/health"]
        while time.monotonic() - started < START_TIMEOUT:
            assert self.process.poll() is None, "\n".join(self.lines)
            try:
                answered = all(httpx.get(u, timeout=1).status_code == 200 for u in urls)
                # the banner is printed once both answer
                if answered and any("Ctrl-C stops everything" in line for line in self.lines):
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError("stack did not come up:\n" + "\n".join(self.lines))

    def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout=30)
        self._reader.join(timeout=5)
        assert self.process.stdout is not None
        self.process.stdout.close()
        return code


def test_local_stack_answers_and_keeps_rows_across_restarts(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    gateway_port, ml_port = free_port(), free_port()
    stack = Stack(data_dir, gateway_port, ml_port)
    try:
        assert stack.wait_until_up() < START_TIMEOUT
        banner = stack.lines[
            stack.lines.index(next(line for line in stack.lines if "API token, shown once" in line))
            + 1
        ]
        token = banner.strip()
        headers = {"Authorization": f"Bearer {token}"}
        me = httpx.get(f"{stack.gateway}/api/me", headers=headers, timeout=5)
        assert me.status_code == 200 and me.json()["name"] == "admin"
        unauthorized = httpx.get(f"{stack.gateway}/api/train/status", timeout=5)
        assert unauthorized.status_code == 401
        assert unauthorized.json()["error"]["code"] == "unauthenticated"
        status = httpx.get(f"{stack.gateway}/api/train/status", headers=headers, timeout=5)
        assert status.json()["ml_service"]["reachable"] is True
    finally:
        assert stack.stop() == 0
    # everything is down
    for url in (f"{stack.gateway}/healthz", f"{stack.ml}/ml/health"):
        try:
            httpx.get(url, timeout=1)
            raise AssertionError(f"{url} still answers after Ctrl-C")
        except httpx.ConnectError:
            pass

    again = Stack(data_dir, gateway_port, ml_port)
    try:
        again.wait_until_up()
        assert not any("API token, shown once" in line for line in again.lines)
        me = httpx.get(f"{again.gateway}/api/me", headers=headers, timeout=5)
        assert me.status_code == 200 and me.json()["name"] == "admin"
    finally:
        assert again.stop() == 0
