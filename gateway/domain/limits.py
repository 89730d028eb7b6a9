"""Per-user limits on renders: a request rate, and a daily cap of paid provider calls."""

from __future__ import annotations

from dataclasses import dataclass

MINUTE = 60.0
DAY = 86400.0


@dataclass(frozen=True)
class RenderLimits:
    per_minute: int  # render requests per user per minute; 0: no limit
    paid_per_day: int  # paid provider calls per user per 24 h; 0: no limit


NO_LIMITS = RenderLimits(per_minute=0, paid_per_day=0)


@dataclass(frozen=True)
class RenderUsage:
    """A user's render requests: in the last minute (and the age of the oldest of them), and
    the paid calls of the last 24 h, oldest first with their ages in seconds."""

    last_minute: int
    oldest_in_minute_age: float | None
    paid_by_age: list[tuple[float, int]]  # (age in seconds, paid calls), oldest first


@dataclass(frozen=True)
class Refusal:
    code: str
    message: str
    retry_after: float


def refusal(usage: RenderUsage, paid_calls: int, limits: RenderLimits) -> Refusal | None:
    """Why a request that may make ``paid_calls`` paid calls must wait, and how long."""
    if limits.per_minute and usage.last_minute >= limits.per_minute:
        age = usage.oldest_in_minute_age or 0.0
        return Refusal(
            "render_rate_limited",
            f"at most {limits.per_minute} renders a minute",
            max(1.0, MINUTE - age),
        )
    if limits.paid_per_day and paid_calls:
        used = sum(calls for _, calls in usage.paid_by_age)
        if used + paid_calls > limits.paid_per_day:
            # wait until enough of the day's calls age out to make room for this request
            excess, wait = used + paid_calls - limits.paid_per_day, DAY
            for age, calls in usage.paid_by_age:
                excess -= calls
                if excess <= 0:
                    wait = DAY - age
                    break
            return Refusal(
                "paid_render_cap",
                f"at most {limits.paid_per_day} paid renders a day (this request needs"
                f" {paid_calls}, {used} used)",
                max(1.0, wait),
            )
    return None
