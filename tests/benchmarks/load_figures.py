"""The load benchmark's figures: timed requests, what failed, and the lines that report them."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.benchmarks.load_stack import LogWindow

# The gateway's defaults, to read the ML service's own durations against.
ML_SERVICE_TIMEOUT = 10.0
ML_DELIVERY_TIMEOUT = 3.0
LABEL = 40


def quantile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between order statistics; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def seconds(value: float | None) -> str:
    if value is None:
        return "      -"
    if value < 1:
        return f"{value * 1000:4.0f} ms"
    return f"{value:5.2f} s" if value < 100 else f"{value:5.0f} s"


def ratio(value: float | None, base: float | None) -> str:
    if value is None or not base:
        return "   -  "
    quotient = value / base
    return f"{quotient:5.1f}x" if quotient < 100 else f"{quotient:5.0f}x"


@dataclass
class Timings:
    """One route's latencies (successful requests only) and what went wrong with the rest."""

    ok: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    first_failure: str | None = None
    cut: int = 0  # in flight when their scenario ended (its cap, or a background client's end)

    def fail(self, kind: str, detail: str) -> None:
        self.failures[kind] += 1
        if self.first_failure is None:
            self.first_failure = f"{kind}: {' '.join(detail.split())[:240]}"

    def failed(self) -> int:
        return sum(self.failures.values())

    def p(self, q: float) -> float | None:
        return quantile(self.ok, q)


@dataclass
class Loop:
    """Train and rate figures of one or many trainers, and the degraded answers they got."""

    train: Timings = field(default_factory=Timings)
    rate: Timings = field(default_factory=Timings)
    notes: Counter[str] = field(default_factory=Counter)


Check = Callable[[httpx.Response], str | None]


async def timed(
    timings: Timings,
    expect: int,
    send: Callable[[], Awaitable[httpx.Response]],
    check: Check | None = None,
) -> httpx.Response | None:
    """Send, time, and record a success or its failure; the response when it succeeded."""
    started = time.perf_counter()
    try:
        response = await send()
    except asyncio.CancelledError:
        timings.cut += 1
        raise
    except httpx.TimeoutException as exc:
        elapsed = time.perf_counter() - started
        timings.fail("client timeout", f"{type(exc).__name__} after {elapsed:.1f} s")
        return None
    except httpx.HTTPError as exc:
        timings.fail(type(exc).__name__, str(exc))
        return None
    elapsed = time.perf_counter() - started
    if response.status_code != expect:
        timings.fail(f"HTTP {response.status_code}", response.text)
        return None
    problem = check(response) if check else None
    if problem:
        timings.fail("unsound body", problem)
        return None
    timings.ok.append(elapsed)
    return response


async def capped(cap: float, work: Sequence[Coroutine[Any, Any, Any]]) -> tuple[float, int]:
    """Run ``work`` concurrently for at most ``cap`` seconds; wall time and tasks cut off."""
    tasks = [asyncio.create_task(w) for w in work]
    started = time.perf_counter()
    _, pending = await asyncio.wait(tasks, timeout=cap)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    wall = time.perf_counter() - started
    for task in tasks:
        if not task.cancelled():
            task.result()  # a bug in the benchmark itself must not pass silently
    return wall, len(pending)


HEADER = (
    f"  {'route':<{LABEL}} {'ok':>4} {'fail':>4}  {'p50':>7}  {'p95':>7}  {'p99':>7}"
    f"   {'idle p50':>8} {'idle p95':>8}   {'p50/idle':>8} {'p95/idle':>8}"
)


def route_lines(label: str, timings: Timings, idle: Timings | None = None) -> list[str]:
    """One row of the table, then what failed, if anything did."""
    base50, base95 = (idle.p(0.5), idle.p(0.95)) if idle else (None, None)
    lines = [
        f"  {label:<{LABEL}} {len(timings.ok):>4} {timings.failed():>4}  "
        f"{seconds(timings.p(0.5))}  {seconds(timings.p(0.95))}  {seconds(timings.p(0.99))}   "
        f"{seconds(base50):>8} {seconds(base95):>8}   "
        f"{ratio(timings.p(0.5), base50):>8} {ratio(timings.p(0.95), base95):>8}"
    ]
    if timings.failed():
        kinds = ", ".join(f"{kind} x{n}" for kind, n in timings.failures.most_common())
        lines.append(f"      FAILED {timings.failed()}: {kinds}")
        lines.append(f"      first: {timings.first_failure}")
    if timings.cut:
        lines.append(f"      CUT OFF {timings.cut} (still in flight when the scenario ended)")
    if idle and idle.failed():
        lines.append(f"      idle baseline FAILED {idle.failed()}: {idle.first_failure}")
    return lines


def notes_lines(notes: Counter[str]) -> list[str]:
    return [f"      note: {note} x{n}" for note, n in notes.most_common()]


def server_lines(window: LogWindow, wall: float) -> list[str]:
    """Per route, the services' own durations in the window; the GP work; the warnings."""
    groups: dict[tuple[str, str], list[tuple[float, int]]] = {}
    for line in window.access:
        groups.setdefault((line.service, line.route), []).append((line.seconds, line.status))
    lines = [
        "    server side, from the services' logs (n, p50, p95, max; statuses other than 2xx):"
    ]
    ordered = sorted(groups.items(), key=lambda kv: (kv[0][0] != "gateway", -len(kv[1])))
    for (service, route), entries in ordered:
        durations = [s for s, _ in entries]
        odd = Counter(str(status) for _, status in entries if not 200 <= status < 300)
        lines.append(
            f"      {service:<7} {route:<36} {len(entries):>5}  {seconds(quantile(durations, 0.5))}"
            f"  {seconds(quantile(durations, 0.95))}  {seconds(max(durations))}"
            + (f"   non-2xx {dict(odd)}" if odd else "")
        )
    if window.computations:
        fits = [f for f, _ in window.computations]
        acquisitions = [a for _, a in window.computations]
        busy = sum(fits) + sum(acquisitions)
        lines.append(
            f"      ML GP suggestions computed: {len(fits)}; fit p50 {seconds(quantile(fits, 0.5))}"
            f" max {seconds(max(fits))}; acquisition p50 {seconds(quantile(acquisitions, 0.5))}"
            f" max {seconds(max(acquisitions))}; {busy:.0f} s of GP work in {wall:.0f} s"
        )
    suggest = [a.seconds for a in window.access if a.route == "POST /ml/suggest_parameters"]
    update = [a.seconds for a in window.access if a.route == "POST /ml/update_model"]
    late_suggest = sum(s > ML_SERVICE_TIMEOUT for s in suggest)
    late_update = sum(s > ML_DELIVERY_TIMEOUT for s in update)
    if late_suggest or late_update:
        lines.append(
            f"      ML answers after the gateway stops waiting: {late_suggest} of {len(suggest)} "
            f"suggestions > {ML_SERVICE_TIMEOUT:g} s (ML_SERVICE_TIMEOUT), {late_update} of "
            f"{len(update)} updates > {ML_DELIVERY_TIMEOUT:g} s (ML_DELIVERY_TIMEOUT)"
        )
    warned = Counter(
        f"{level} {logger}: {message[:100]}" for level, logger, message in window.warnings
    )
    lines += [f"      logged x{n}: {message}" for message, n in warned.most_common(8)]
    return lines
