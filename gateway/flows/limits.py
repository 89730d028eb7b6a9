"""The per-user render limits, counted before anything is rendered (``gateway.domain.limits``
decides, ``render_requests`` remembers)."""

from __future__ import annotations

from collections.abc import Iterable

from gateway.domain.limits import RenderLimits, refusal
from gateway.errors import RateLimited
from gateway.flows.unit_of_work import UnitOfWorkFactory
from gateway.providers.base import ImageProvider
from gateway.repositories.users import User


def paid_calls(renders: Iterable[tuple[ImageProvider, int]]) -> int:
    """The paid provider calls of ``(provider, renders)`` pairs: the local engine is free."""
    return sum(count for provider, count in renders if provider.name != "local")


async def reserve_renders(
    uows: UnitOfWorkFactory, user: User, paid: int, limits: RenderLimits
) -> None:
    """Count this render request (and its ``paid`` calls) against ``user``'s limits.

    Raises:
        RateLimited: ``render_rate_limited`` or ``paid_render_cap``, with how long to wait.
    """
    if not (limits.per_minute or limits.paid_per_day):
        return
    async with uows() as uow:
        usage = await uow.renders.usage_of(user.id)
        refused = refusal(usage, paid, limits)
        if refused is None:
            await uow.renders.record(user.id, paid)
    if refused is not None:
        raise RateLimited(
            refused.message,
            retry_after=refused.retry_after,
            code=refused.code,
            details={"retry_after_seconds": round(refused.retry_after)},
        )
