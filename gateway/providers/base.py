"""The ``ImageProvider`` protocol: one image-to-image render with the learned parameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from gateway.domain.arms import ApiName

ProviderName = Literal["leonardo", "replicate", "local"]


@dataclass(frozen=True)
class RenderRequest:
    """What a provider renders: the validated original, the prompt and the arm's parameters."""

    api: ApiName
    image: bytes  # the original, EXIF-orientated, metadata stripped
    content_type: str  # image/png, image/jpeg or image/webp
    width: int
    height: int
    prompt: str
    negative_prompt: str
    parameters: dict[str, float | int]  # the arm's parameters from the search space
    seed: int


@dataclass(frozen=True)
class RenderResult:
    image: bytes
    content_type: str
    width: int
    height: int
    provider: ProviderName
    metadata: dict[str, Any] = field(default_factory=dict)  # generation ids, credit cost ...


class ImageProvider(Protocol):
    """Renders one variant. Failures raise the project's errors (``shared.errors``):
    ``UpstreamError`` / ``UpstreamTimeout`` / ``UpstreamUnavailable`` / ``RateLimited``,
    with ``upstream`` naming the provider; never a library exception."""

    name: ProviderName

    async def render(self, request: RenderRequest) -> RenderResult: ...
