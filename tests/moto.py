"""moto's server on loopback, for AWS APIs the tests need no real server for (SSM, S3 units)."""

from __future__ import annotations

from collections.abc import Iterator

from moto.server import ThreadedMotoServer


def moto_endpoint() -> Iterator[str]:
    """Start moto on 127.0.0.1 and a free port; yield its URL; stop it afterwards."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
