"""Which provider renders each arm: the real API when its key is set, else the local engine."""

from __future__ import annotations

from typing import Protocol

import httpx

from gateway.providers.base import ImageProvider
from gateway.providers.leonardo import LeonardoProvider
from gateway.providers.local_engine import LocalEngine
from gateway.providers.replicate import ReplicateProvider
from shared.settings import Settings


class ProviderClients(Protocol):
    """The HTTP clients the real providers use (``gateway.state.Upstreams`` is one)."""

    @property
    def leonardo(self) -> httpx.AsyncClient: ...

    @property
    def replicate(self) -> httpx.AsyncClient: ...

    @property
    def downloads(self) -> httpx.AsyncClient:
        """Fetches rendered images from the URLs the APIs answer with."""
        ...


def build_providers(settings: Settings, clients: ProviderClients) -> dict[str, ImageProvider]:
    local = LocalEngine()
    leonardo: ImageProvider = local
    if settings.leonardo_api_key:
        leonardo = LeonardoProvider(
            clients.leonardo,
            clients.downloads,
            model_id=settings.leonardo_model_id,
            controlnet_preprocessor_id=settings.leonardo_controlnet_preprocessor_id,
            deadline_seconds=settings.leonardo_deadline_seconds,
            poll_interval=settings.leonardo_poll_interval,
            max_download_bytes=settings.download_max_bytes,
            max_pixels=settings.upload_max_pixels,
        )
    stable_diffusion: ImageProvider = local
    if settings.replicate_api_token:
        stable_diffusion = ReplicateProvider(
            clients.replicate,
            clients.downloads,
            model=settings.replicate_model,
            wait_seconds=settings.replicate_wait_seconds,
            deadline_seconds=settings.replicate_deadline_seconds,
            poll_interval=settings.replicate_poll_interval,
            controlnet_input=settings.replicate_controlnet_input,
            max_download_bytes=settings.download_max_bytes,
            max_pixels=settings.upload_max_pixels,
        )
    return {"leonardo": leonardo, "stable_diffusion": stable_diffusion}
