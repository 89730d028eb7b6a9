"""Liveness, readiness and metrics."""

from __future__ import annotations

import asyncio
import hmac
import logging

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.errors import Forbidden, NotReady, StorageError
from gateway.state import gateway_state
from shared.settings import is_loopback

READINESS_TIMEOUT = 2.0
log = logging.getLogger("latina.ops")


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    state = gateway_state(request)
    try:
        async with asyncio.timeout(READINESS_TIMEOUT):
            async with state.uows.read() as uow:
                await uow.health.ping()
    except (OSError, TimeoutError, Exception) as exc:
        # which dependency, not its exception text (hosts, users): that goes to the log
        log.warning("not ready: database: %s", exc)
        raise NotReady("database is not reachable", details={"database": "unreachable"}) from exc
    checks = {"database": "ok"}
    try:
        async with asyncio.timeout(READINESS_TIMEOUT):
            await state.store.ping()
        checks["object_store"] = "ok"
    except (StorageError, TimeoutError) as exc:
        log.warning("not ready: object store: %s", exc)
        raise NotReady(
            "object store is not reachable", details={"object_store": "unreachable"}
        ) from exc
    return JSONResponse({"status": "ready", "checks": checks})


async def metrics(request: Request) -> Response:
    """Prometheus metrics: with ``METRICS_TOKEN`` set, to a caller bearing it; without, to
    callers on this machine only (they name routes, volumes and timings)."""
    state = gateway_state(request)
    token = state.settings.metrics_token
    if token is not None:
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise Forbidden("metrics need the metrics token", code="forbidden")
    elif request.client is None or not is_loopback(request.client.host):
        raise Forbidden(
            "metrics are served on this machine only; set METRICS_TOKEN to scrape them",
            code="forbidden",
        )
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
