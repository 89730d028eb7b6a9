"""What the gateway's lifespan opens and hands to every request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
from starlette.requests import Request

from gateway.adapters.prompt_export import PromptExporter
from gateway.flows.unit_of_work import UnitOfWorkFactory
from gateway.providers.base import ImageProvider
from shared.observability import HttpMetrics
from shared.search_space import SearchSpace
from shared.settings import Settings
from shared.storage import ObjectStore


@dataclass(frozen=True)
class Upstreams:
    """One long-lived ``httpx.AsyncClient`` per upstream, each with its own timeouts."""

    ml: httpx.AsyncClient
    leonardo: httpx.AsyncClient
    replicate: httpx.AsyncClient
    downloads: httpx.AsyncClient


@dataclass(frozen=True)
class GatewayState:
    settings: Settings
    pool: asyncpg.Pool[Any]  # the readiness check's; flows get ``uows``
    uows: UnitOfWorkFactory
    store: ObjectStore
    upstreams: Upstreams
    metrics: HttpMetrics
    providers: dict[str, ImageProvider]
    search_space: SearchSpace
    exporter: PromptExporter


def gateway_state(request: Request) -> GatewayState:
    state: GatewayState = request.state.gateway
    return state
