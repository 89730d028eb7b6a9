"""Load (issue 15): many trainers, and other ML clients, at once on the system ``make run`` runs.

The stack is ``latina run`` on loopback (``load_stack``): the ML service and the gateway as two
uvicorn processes with the job worker inside the gateway, a fresh database on an embedded
PostgreSQL, and both image APIs faked (Leonardo and Replicate, real wire format) answering after
``RENDER_DELAY``. Every client talks HTTP to the real servers from this process.

One stack serves the whole run. Each scenario continues from the state the previous one left
(printed with each: samples, and the suggestions handed out but never rated, which stay pending
points of every later acquisition for ``ML_PENDING_TTL_SECONDS``), and each phase starts only
once the gateway's job queue is empty and the ML service idle (``Bench.settle``). They run in
this order, (b) last because it leaves the most work and pending suggestions behind:

(a) a few unmeasured uploads (past the optimizer's Sobol start), the idle baseline (one trainer,
    one request at a time), then 20 trainers at once, ``mode=ab`` (train, then rate). Then
    phase 2 is reached: uploads up to ``PHASE_1_TARGET`` samples, at the last of which the
    gateway's worker trains the reward model (as under ``make run``); waited for.
(c) one trainer's train+rate loop alone, then again while a second client drives a study of
    its own through the ML API (suggest, update, best) as fast as it is answered and a third
    polls ``/ml/health`` and ``/ml/best`` (the gateway's study), first alone for its baseline.
(d) 30 ratings at once of experiments prepared beforehand, beside ratings one at a time.
(e) 20 ``POST /ml/suggest_parameters`` (the gateway's study) abandoned by their client after
    1 s, then one fresh request: its latency, against the same request made idle.
(b) as (a) with ``mode=active``: 10 candidates per upload rendered, scored, two shown.

Every figure is client-side wall time of requests that succeeded: the expected status and a
sound body (a train whose option failed to render, or in the wrong mode, counts as failed).
Failures, client timeouts and requests cut off by a scenario's time cap are counted and printed.
Answers that succeeded only in a degraded way (the gateway's fallback parameters because the ML
service did not answer in time, ``ml_updated: false``, candidates shown unranked) are counted as
notes. Under each scenario the services' own logs for its time window (until the ML service is
idle again) show where the time went: per route how long the servers took, the GP work, and
what the services warned about; and how long the ML service stayed busy after the clients were
done.

The issue's targets (a 2-core machine) are printed beside the figures for information; nothing
is asserted. ``--quick``: fewer loops, half the concurrency in (b), (d) and (e), shorter caps.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from tests.benchmarks.load_clients import (
    ACTIVE_CANDIDATES,
    Trainers,
    bearer,
    best,
    drive_study,
    poll,
    seed_study,
    stop_background,
    suggest,
)
from tests.benchmarks.load_figures import (
    HEADER,
    Loop,
    Timings,
    capped,
    notes_lines,
    ratio,
    route_lines,
    seconds,
    server_lines,
    timed,
)
from tests.benchmarks.load_stack import Stack, running_stack

RENDER_DELAY = 0.300
CLIENT_TIMEOUT = 300.0
GATEWAY_STUDY = "default"
PROBE_STUDY = "bench-load-probe"
PROBE_ID = "bench-load-probe"  # its X-Request-ID: the probe's lines are left out of the figures
ABANDON_AFTER = 1.0
PENDING_TTL = 1800.0  # ML_PENDING_TTL_SECONDS, left at its default
PREPARE_WORKERS = 4
# Idle means: no job due, no ML work logged for QUIET_SECONDS, and twice in a row a GP-backed
# /ml/best on a tiny study answered at once (it waits for the process's one GP lock).
QUIET_SECONDS = 3.0
PROBE_FAST = 0.25
SETTLE_LIMIT = 300.0
# How long a scenario's report waits for the ML service to finish what its clients left behind
# (the next phase's settle waits for the rest, up to SETTLE_LIMIT).
DRAIN_LIMIT = 120.0
REWARD_WAIT = 300.0
SETTINGS = {
    # 10 candidates per active upload: the cost guard allows 2 per paid API by default, and
    # both (fake) APIs count as paid, which would make it 4
    "ACTIVE_MAX_PAID_CANDIDATES": "5",
    # the reward model is trained once, at the end of phase 1 (right after (a)); retraining
    # every 25 samples would land inside whichever scenario reaches sample 75, 100, ...
    "REWARD_RETRAIN_EVERY": "1000",
}
TARGETS = {
    "a": "train p95 <= 1.5 s",
    "b": "train p95 <= 6 s",
    "c": "trainer's train p95 <= 2x idle; /ml/health and /ml/best p99 <= 50 ms",
    "d": "rate p95 <= 250 ms and >= 100 ratings/s",
    "e": "fresh request answered within 1.5 s",
}


@dataclass(frozen=True)
class Sizes:
    a_warmup: int
    a_idle: int
    a_trainers: int
    a_rounds: int
    b_idle: int
    b_trainers: int
    c_loops: int
    c_poll_idle: int
    c_seed: int  # observations per API the second client's study starts with
    d_idle: int
    d_burst: int
    e_idle: int
    e_abandoned: int
    cap: dict[str, float]  # seconds the loaded part of each scenario may run


FULL = Sizes(
    a_warmup=4,
    a_idle=5,
    a_trainers=20,
    a_rounds=2,
    b_idle=3,
    b_trainers=20,
    c_loops=6,
    c_poll_idle=20,
    c_seed=40,
    d_idle=10,
    d_burst=30,
    e_idle=3,
    e_abandoned=20,
    cap={"a": 240.0, "b": 300.0, "c": 180.0, "d": 120.0, "e": 240.0},
)
QUICK = Sizes(
    a_warmup=4,
    a_idle=3,
    a_trainers=20,
    a_rounds=1,
    b_idle=2,
    b_trainers=10,
    c_loops=3,
    c_poll_idle=10,
    c_seed=20,
    d_idle=5,
    d_burst=15,
    e_idle=3,
    e_abandoned=10,
    cap={"a": 120.0, "b": 150.0, "c": 90.0, "d": 60.0, "e": 120.0},
)


def _say(message: str = "") -> None:
    print(message, flush=True)


def _now() -> datetime:
    return datetime.now(UTC)


def _load() -> str:
    """Other work on the machine competes for its cores: shown beside the figures."""
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


@dataclass
class Bench:
    stack: Stack
    trainers: Trainers
    ml: httpx.AsyncClient  # the ML service, with its token
    sizes: Sizes
    summary: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    timings: list[Timings] = field(default_factory=list)  # every request expected to succeed
    unsettled: int = 0
    previous: str = "a fresh stack"

    async def state(self) -> str:
        """What the next phase starts from."""
        pending = await self.stack.pending_suggestions(GATEWAY_STUDY, PENDING_TTL)
        return (
            f"{await self.stack.samples()} samples, {pending} suggestions handed out and never"
            " rated (pending) in the gateway's study"
        )

    async def settle(self, limit: float = SETTLE_LIMIT) -> bool:
        """Wait (at most ``limit`` seconds) until no job is due and the ML service is idle."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        while await self.stack.work_in_hand() and loop.time() - started < limit:
            await asyncio.sleep(0.5)
        calm = 0
        while calm < 2 and loop.time() - started < limit:
            await asyncio.sleep(1.0)
            last = self.stack.log.last_ml_work()
            quiet = last is None or (_now() - last).total_seconds() >= QUIET_SECONDS
            probed = time.perf_counter()
            response = await self.ml.get(
                "/ml/best", params={"study": PROBE_STUDY}, headers={"X-Request-ID": PROBE_ID}
            )
            fast = response.status_code == 200 and time.perf_counter() - probed < PROBE_FAST
            calm = calm + 1 if quiet and fast else 0
        if calm < 2 and limit == SETTLE_LIMIT:
            self.unsettled += 1
        return calm >= 2

    async def finish(self, title: str, lines: list[str], start: datetime) -> None:
        """Print the scenario, then, once the ML service is idle, the servers' side of it."""
        _say(title)
        for line in lines:
            _say(line)
        done = _now()
        idle = await self.settle(DRAIN_LIMIT)
        end = _now()
        last = self.stack.log.last_ml_work()
        busy = max(0.0, (last - done).total_seconds()) if last else 0.0
        _say(
            f"    the ML service's last request or computation ended {busy:.0f} s after the "
            "clients were done"
            if idle
            else f"    the ML service was STILL WORKING {DRAIN_LIMIT:.0f} s after the clients "
            "were done (what it did until then is below)"
        )
        window = self.stack.log.window(start, end, skip_request_id=PROBE_ID)
        for line in server_lines(window, (end - start).total_seconds()):
            _say(line)
        _say()

    def compare(self, label: str, loaded: Timings, idle: Timings, q: float, target: str) -> None:
        value, base = loaded.p(q), idle.p(q)
        self.summary.append((label, seconds(value), seconds(base), ratio(value, base), target))

    def track(self, *loops: Loop) -> None:
        for loop in loops:
            self.timings += [loop.train, loop.rate]


def _target(scenario: str) -> str:
    return f"  target (issue 15, 2 cores; information only): {TARGETS[scenario]}"


async def scenario_a(bench: Bench) -> None:
    sizes, trainers = bench.sizes, bench.trainers
    token = trainers.tokens[0]
    warmup, idle, loaded = Loop(), Loop(), Loop()
    await trainers.loop(token, "ab", sizes.a_warmup, warmup)
    await bench.settle()
    await trainers.loop(token, "ab", sizes.a_idle, idle)
    await bench.settle()
    before = await bench.state()
    start = _now()
    work = [
        trainers.loop(trainers.tokens[i], "ab", sizes.a_rounds, loaded)
        for i in range(sizes.a_trainers)
    ]
    wall, cut = await capped(sizes.cap["a"], work)
    lines = [
        f"  state: {bench.previous}; {sizes.a_warmup} unmeasured uploads, {sizes.a_idle} idle "
        f"loops; then {before}; then {sizes.a_trainers} trainers x {sizes.a_rounds} loops in "
        f"{wall:.0f} s (cap {sizes.cap['a']:.0f} s, {cut} trainers cut off)",
        HEADER,
        *route_lines("POST /api/enhance/train", loaded.train, idle.train),
        *route_lines("POST /api/train/rate", loaded.rate, idle.rate),
        *notes_lines(loaded.notes + idle.notes + warmup.notes),
        _target("a"),
    ]
    if warmup.train.failed() + warmup.rate.failed():
        lines.append(f"  warm-up failed: {warmup.train.first_failure or warmup.rate.first_failure}")
    await bench.finish(f"(a) {sizes.a_trainers} trainers at once, mode=ab", lines, start)
    bench.track(warmup, idle, loaded)
    bench.compare("(a) train p95", loaded.train, idle.train, 0.95, "<= 1.5 s")
    bench.compare("(a) rate p95", loaded.rate, idle.rate, 0.95, "-")
    bench.previous = "continues from (a)"


async def reach_phase_2(bench: Bench) -> None:
    """Uploads up to the phase-1 target; at the last sample the worker trains the reward model."""
    trainers = bench.trainers
    started = time.perf_counter()
    status = await trainers.status()
    missing = max(0, status["phase_1_target"] - status["samples_collected"])
    topup = Loop()
    queue = list(range(missing))

    async def worker(token: str) -> None:
        while queue:
            queue.pop()
            await trainers.loop(token, "ab", 1, topup)

    await asyncio.gather(*(worker(t) for t in trainers.tokens[:PREPARE_WORKERS]))
    how = "by the gateway's worker at the last sample"
    deadline = time.perf_counter() + REWARD_WAIT
    reward: dict[str, Any] = {}
    while time.perf_counter() < deadline:
        response = await bench.ml.get("/ml/reward/status", params={"study": GATEWAY_STUDY})
        reward = response.json() if response.status_code == 200 else {}
        if reward.get("trained"):
            break
        await asyncio.sleep(1.0)
    else:
        how = "by POST /ml/reward/train (the worker had not trained it)"
        trained = await bench.ml.post(
            "/ml/reward/train", json={"study": GATEWAY_STUDY}, timeout=600.0
        )
        trained.raise_for_status()
        reward = (await bench.ml.get("/ml/reward/status", params={"study": GATEWAY_STUDY})).json()
    await bench.settle()
    bench.track(topup)
    failed = topup.train.failed() + topup.rate.failed()
    _say(
        f"phase 2 reached: {missing} more uploads rated ({failed} failed); reward model "
        f"{reward.get('version')} on {reward.get('samples')} observations trained {how} "
        f"({time.perf_counter() - started:.0f} s); {await bench.state()}"
    )
    _say()
    bench.previous = "continues from phase 2"


async def scenario_b(bench: Bench) -> None:
    sizes, trainers = bench.sizes, bench.trainers
    token = trainers.tokens[0]
    warmup, idle, loaded = Loop(), Loop(), Loop()
    await trainers.loop(token, "active", 1, warmup)  # the service loads the reward model
    await bench.settle()
    await trainers.loop(token, "active", sizes.b_idle, idle)
    await bench.settle()
    before = await bench.state()
    start = _now()
    work = [trainers.loop(trainers.tokens[i], "active", 1, loaded) for i in range(sizes.b_trainers)]
    wall, cut = await capped(sizes.cap["b"], work)
    lines = [
        f"  state: {bench.previous}; 1 unmeasured upload, {sizes.b_idle} idle loops; then "
        f"{before}; then {sizes.b_trainers} trainers x 1 loop in {wall:.0f} s (cap "
        f"{sizes.cap['b']:.0f} s, {cut} trainers cut off); {ACTIVE_CANDIDATES} candidates per "
        "upload",
        HEADER,
        *route_lines("POST /api/enhance/train (mode=active)", loaded.train, idle.train),
        *route_lines("POST /api/train/rate", loaded.rate, idle.rate),
        *notes_lines(loaded.notes + idle.notes + warmup.notes),
        _target("b"),
    ]
    await bench.finish(f"(b) {sizes.b_trainers} trainers at once, mode=active", lines, start)
    bench.track(warmup, idle, loaded)
    bench.compare("(b) train p95", loaded.train, idle.train, 0.95, "<= 6 s")
    bench.compare("(b) rate p95", loaded.rate, idle.rate, 0.95, "-")
    bench.previous = "continues from (b)"


async def scenario_c(bench: Bench) -> None:
    sizes, trainers, stack = bench.sizes, bench.trainers, bench.stack
    token = trainers.tokens[0]
    idle_health, idle_best = Timings(), Timings()
    await bench.settle()
    (await best(bench.ml, GATEWAY_STUDY)()).raise_for_status()  # the model's first fit
    await asyncio.gather(
        poll(lambda: bench.ml.get("/ml/health"), idle_health, count=sizes.c_poll_idle),
        poll(best(bench.ml, GATEWAY_STUDY), idle_best, count=sizes.c_poll_idle),
    )
    await bench.settle()
    idle, loaded = Loop(), Loop()
    await trainers.loop(token, "ab", sizes.c_loops, idle)
    study = f"bench-load-{secrets.token_hex(4)}"
    await seed_study(bench.ml, study, sizes.c_seed)
    await bench.settle()
    before = await bench.state()
    start = _now()
    stop = asyncio.Event()
    driven = {"suggest": Timings(), "update": Timings(), "best": Timings()}
    health, gateway_best = Timings(), Timings()
    headers = bearer(stack.ml_token)
    async with (
        httpx.AsyncClient(base_url=stack.ml_url, headers=headers, timeout=CLIENT_TIMEOUT) as other,
        httpx.AsyncClient(base_url=stack.ml_url, headers=headers, timeout=CLIENT_TIMEOUT) as light,
    ):
        background = [
            asyncio.create_task(drive_study(other, study, stop, driven)),
            asyncio.create_task(poll(lambda: light.get("/ml/health"), health, stop=stop)),
            asyncio.create_task(poll(best(light, GATEWAY_STUDY), gateway_best, stop=stop)),
        ]
        await asyncio.sleep(2.0)  # the second client gets going first
        wall, cut = await capped(
            sizes.cap["c"], [trainers.loop(token, "ab", sizes.c_loops, loaded)]
        )
        await stop_background(stop, background)
    rounds = len(driven["update"].ok)
    lines = [
        f"  state: {bench.previous}; the trainer in mode=ab, {sizes.c_loops} loops alone; then "
        f"{before}; then {sizes.c_loops} loops in {wall:.0f} s (cap {sizes.cap['c']:.0f} s"
        f"{', CUT OFF' if cut else ''}) beside the second client (its study {study}: "
        f"{sizes.c_seed} seeded observations per API, then {rounds} suggest/update/best rounds, "
        f"{rounds / wall:.2f}/s)",
        HEADER,
        *route_lines("trainer POST /api/enhance/train", loaded.train, idle.train),
        *route_lines("trainer POST /api/train/rate", loaded.rate, idle.rate),
        *route_lines("poller GET /ml/health", health, idle_health),
        *route_lines(f"poller GET /ml/best (study {GATEWAY_STUDY})", gateway_best, idle_best),
        *route_lines("2nd client POST /ml/suggest_parameters", driven["suggest"]),
        *route_lines("2nd client POST /ml/update_model", driven["update"]),
        *route_lines("2nd client GET /ml/best (its study)", driven["best"]),
        *notes_lines(loaded.notes + idle.notes),
        _target("c"),
    ]
    await bench.finish("(c) one trainer beside another client of the ML service", lines, start)
    bench.track(idle, loaded)
    bench.timings += [idle_health, idle_best, health, gateway_best, *driven.values()]
    bench.compare("(c) trainer train p95", loaded.train, idle.train, 0.95, "<= 2x idle")
    bench.compare("(c) /ml/health p99", health, idle_health, 0.99, "<= 50 ms")
    bench.compare("(c) /ml/best p99", gateway_best, idle_best, 0.99, "<= 50 ms")
    bench.previous = "continues from (c)"


async def scenario_d(bench: Bench) -> None:
    sizes, trainers = bench.sizes, bench.trainers
    prepared, idle, loaded = Loop(), Loop(), Loop()
    await bench.settle()
    made = await trainers.prepare(sizes.d_idle + sizes.d_burst, PREPARE_WORKERS, prepared)
    await bench.settle()
    for token, body in made[: sizes.d_idle]:
        await trainers.rate(token, body, idle)
    await bench.settle()
    before = await bench.state()
    start = _now()
    burst = made[sizes.d_idle :]
    wall, cut = await capped(
        sizes.cap["d"], [trainers.rate(token, body, loaded) for token, body in burst]
    )
    per_second = len(loaded.rate.ok) / wall
    lines = [
        f"  state: {bench.previous}; {len(made)} experiments prepared (mode=ab, "
        f"{prepared.train.failed()} failed), {sizes.d_idle} rated one at a time; then {before};"
        f" then {len(burst)} ratings at once, each by its uploader: done in {wall:.2f} s (cap "
        f"{sizes.cap['d']:.0f} s, {cut} cut off): {per_second:.1f} ratings/s",
        HEADER,
        *route_lines("POST /api/train/rate", loaded.rate, idle.rate),
        *notes_lines(loaded.notes + idle.notes),
        _target("d"),
    ]
    if prepared.train.first_failure:
        lines.append(f"  preparation failed: {prepared.train.first_failure}")
    await bench.finish(f"(d) {len(burst)} ratings at once", lines, start)
    bench.track(prepared, idle, loaded)
    bench.compare("(d) rate p95", loaded.rate, idle.rate, 0.95, "<= 250 ms")
    bench.summary.append(("(d) ratings/s", f"{per_second:.1f}/s", "-", "-", ">= 100/s"))
    bench.previous = "continues from (d)"


async def scenario_e(bench: Bench) -> None:
    sizes, stack = bench.sizes, bench.stack
    idle = Timings()
    for _ in range(sizes.e_idle):
        await bench.settle()
        await timed(idle, 200, suggest(bench.ml, GATEWAY_STUDY))
    await bench.settle()
    before = await bench.state()
    start = _now()
    abandoned, fresh, health = Timings(), Timings(), Timings()
    async with httpx.AsyncClient(
        base_url=stack.ml_url, headers=bearer(stack.ml_token), timeout=ABANDON_AFTER
    ) as impatient:
        await asyncio.gather(
            *(
                timed(abandoned, 200, suggest(impatient, GATEWAY_STUDY))
                for _ in range(sizes.e_abandoned)
            )
        )
    stop = asyncio.Event()
    poller = [asyncio.create_task(poll(lambda: bench.ml.get("/ml/health"), health, stop=stop))]
    wall, _ = await capped(sizes.cap["e"], [timed(fresh, 200, suggest(bench.ml, GATEWAY_STUDY))])
    await stop_background(stop, poller)
    gave_up = abandoned.failures.get("client timeout", 0)
    other = abandoned.failed() - gave_up
    lines = [
        f"  state: {bench.previous}; in the gateway's study ({GATEWAY_STUDY}), {sizes.e_idle} "
        f"requests one at a time, each once the service was idle; then {before}; then "
        f"{sizes.e_abandoned} at once with a {ABANDON_AFTER:g} s client timeout: {gave_up} "
        f"abandoned, {len(abandoned.ok)} answered in time"
        + (f", {other} failed otherwise ({abandoned.first_failure})" if other else "")
        + f"; then one fresh request ({wall:.1f} s, cap {sizes.cap['e']:.0f} s)",
        HEADER,
        *route_lines("fresh POST /ml/suggest_parameters", fresh, idle),
        *route_lines("GET /ml/health meanwhile", health),
        _target("e"),
    ]
    title = f"(e) {sizes.e_abandoned} abandoned suggestions, then a fresh one"
    await bench.finish(title, lines, start)
    bench.timings += [idle, fresh, health]
    value = fresh.ok[0] if fresh.ok else None
    bench.summary.append(
        (
            "(e) fresh suggest after the abandoned",
            seconds(value) if fresh.ok else "FAILED",
            seconds(idle.p(0.5)),
            ratio(value, idle.p(0.5)),
            "<= 1.5 s",
        )
    )
    bench.previous = "continues from (e)"


def print_summary(bench: Bench) -> None:
    _say("summary (client-side; the issue's targets on a 2-core machine, for information only)")
    _say(f"  {'figure':<38} {'measured':>9} {'idle':>9} {'ratio':>7}   target")
    for label, value, idle, times, target in sorted(bench.summary, key=lambda row: row[0][:3]):
        _say(f"  {label:<38} {value:>9} {idle:>9} {times:>7}   {target}")
    failed = sum(t.failed() for t in bench.timings)
    timeouts = sum(t.failures.get("client timeout", 0) for t in bench.timings)
    cut = sum(t.cut for t in bench.timings)
    _say(
        f"  requests expected to succeed that did not: {failed} (client timeouts {timeouts});"
        f" cut off by a scenario's cap or end: {cut}"
        + (
            f"; phases started before the ML service was idle ({SETTLE_LIMIT:.0f} s):"
            f" {bench.unsettled}"
            if bench.unsettled
            else ""
        )
    )


async def run(stack: Stack, sizes: Sizes) -> None:
    users = max(sizes.a_trainers, sizes.b_trainers, sizes.d_burst, PREPARE_WORKERS)
    tokens = [await stack.trainer(f"load-trainer-{i}") for i in range(users)]
    async with (
        httpx.AsyncClient(
            base_url=stack.gateway_url,
            timeout=CLIENT_TIMEOUT,
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
        ) as gateway,
        httpx.AsyncClient(
            base_url=stack.ml_url, headers=bearer(stack.ml_token), timeout=CLIENT_TIMEOUT
        ) as ml,
    ):
        await seed_study(ml, PROBE_STUDY, 3)
        bench = Bench(stack, Trainers(gateway, tokens), ml, sizes)
        await scenario_a(bench)
        await reach_phase_2(bench)
        await scenario_c(bench)
        await scenario_d(bench)
        await scenario_e(bench)
        await scenario_b(bench)
        print_summary(bench)


async def main(quick: bool = False) -> None:
    sizes = QUICK if quick else FULL
    started = time.perf_counter()
    home = Path(tempfile.mkdtemp(prefix="latina-bench-load-"))
    _say("load benchmark (issue 15)" + (" (quick)" if quick else ""))
    _say(
        f"  {os.cpu_count()} CPUs; latina run (ML service and gateway as uvicorn processes, the "
        "worker in the gateway), a fresh database on an embedded PostgreSQL, fake Leonardo and "
        f"Replicate answering after {RENDER_DELAY * 1000:.0f} ms; client timeout "
        f"{CLIENT_TIMEOUT:.0f} s; settings: " + ", ".join(f"{k}={v}" for k, v in SETTINGS.items())
    )
    _say("  p50/p95/p99 client-side; idle: the same route one request at a time, in this run")
    _say(f"  machine load average (1, 5, 15 min) at the start: {_load()}")
    _say()
    stack: Stack | None = None
    try:
        async with running_stack(home, RENDER_DELAY, SETTINGS) as stack:
            await run(stack, sizes)
    except BaseException:
        if stack is not None:
            _say("the services' last log lines:")
            for line in stack.log.text().splitlines()[-30:]:
                _say(f"  {line[:300]}")
        raise
    finally:
        shutil.rmtree(home, ignore_errors=True)
    _say(f"(run took {time.perf_counter() - started:.0f} s; load average at the end: {_load()})")
