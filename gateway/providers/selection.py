"""Which provider renders each arm: the real API when its key is set, else the local engine."""

from __future__ import annotations

from gateway.providers.base import ImageProvider
from gateway.providers.leonardo import LeonardoProvider
from gateway.providers.local_engine import LocalEngine
from gateway.providers.replicate import ReplicateProvider
from gateway.state import Upstreams
from shared.settings import Settings


def build_providers(settings: Settings, upstreams: Upstreams) -> dict[str, ImageProvider]:
    local = LocalEngine()
    leonardo: ImageProvider = local
    if settings.leonardo_api_key:
        leonardo = LeonardoProvider(
            upstreams.leonardo,
            upstreams.downloads,
            model_id=settings.leonardo_model_id,
            controlnet_preprocessor_id=settings.leonardo_controlnet_preprocessor_id,
            deadline_seconds=settings.leonardo_deadline_seconds,
            poll_interval=settings.leonardo_poll_interval,
        )
    stable_diffusion: ImageProvider = local
    if settings.replicate_api_token:
        stable_diffusion = ReplicateProvider(
            upstreams.replicate,
            upstreams.downloads,
            model=settings.replicate_model,
            wait_seconds=settings.replicate_wait_seconds,
            deadline_seconds=settings.replicate_deadline_seconds,
            poll_interval=settings.replicate_poll_interval,
            controlnet_input=settings.replicate_controlnet_input,
        )
    return {"leonardo": leonardo, "stable_diffusion": stable_diffusion}
