"""The per-user render limits (``gateway.domain.limits``), without a database."""

from __future__ import annotations

import pytest

from gateway.domain.limits import DAY, NO_LIMITS, RenderLimits, RenderUsage, refusal

LIMITS = RenderLimits(per_minute=3, paid_per_day=10)
IDLE = RenderUsage(last_minute=0, oldest_in_minute_age=None, paid_by_age=[])


def test_nothing_limits_an_idle_user_or_no_limits() -> None:
    assert refusal(IDLE, 2, LIMITS) is None
    busy = RenderUsage(99, 1.0, [(10.0, 1000)])
    assert refusal(busy, 2, NO_LIMITS) is None


def test_the_rate_limit_waits_for_the_oldest_request_of_the_minute() -> None:
    usage = RenderUsage(last_minute=3, oldest_in_minute_age=45.0, paid_by_age=[])
    refused = refusal(usage, 0, LIMITS)
    assert refused is not None and refused.code == "render_rate_limited"
    assert refused.retry_after == pytest.approx(15.0)


def test_the_daily_cap_counts_paid_calls_and_waits_until_enough_age_out() -> None:
    # 9 of 10 used: 4 calls 20 h ago, 5 calls 1 h ago
    usage = RenderUsage(0, None, [(20 * 3600.0, 4), (3600.0, 5)])
    assert refusal(usage, 1, LIMITS) is None  # exactly the cap
    refused = refusal(usage, 2, LIMITS)  # one over: the 20 h old calls must age out
    assert refused is not None and refused.code == "paid_render_cap"
    assert refused.retry_after == pytest.approx(DAY - 20 * 3600.0)
    six_over = refusal(usage, 6, LIMITS)  # five over: both entries must age out
    assert six_over is not None and six_over.retry_after == pytest.approx(DAY - 3600.0)


def test_free_renders_never_meet_the_daily_cap() -> None:
    spent = RenderUsage(0, None, [(60.0, 10)])
    assert refusal(spent, 0, LIMITS) is None
    assert refusal(spent, 1, LIMITS) is not None
