"""How well and how fast the ML service optimises, through its real HTTP API.

Sample efficiency: a simulated trainer (``simulated_rater``) drives suggest -> rate -> update for
50 samples per seed; the figure is the simple regret of ``GET /ml/best``'s recommendation (true
optimum minus its true value), set beside uniform random search on the same objective and seeds.

Latency: suggest (precomputed hit, and the compute path on a miss), update, and a fresh
process's cold start, as p50/p95 on this machine for studies of 10 to 1,000 observations per API.

Everything runs in this process (``httpx.ASGITransport``) on an embedded PostgreSQL, except the
cold start, which spawns uvicorn.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import asyncpg
import gpytorch
import httpx
import numpy as np
from asgi_lifespan import LifespanManager

from ml_service.app import create_app
from ml_service.resources import Resources
from shared.db.embedded import embedded_server
from shared.settings import Settings
from tests.benchmarks import simulated_rater as rater

TOKEN = "x" * 32
AUTH = {"Authorization": f"Bearer {TOKEN}"}
APIS = rater.apis()
SAMPLES = 50
CHECKPOINTS = (10, 20, 50)
TARGET_SAMPLES = 20
TARGET_RATIO = 0.5
# Random search costs nothing: run it on many more seeds so its mean is not the noisy side.
RANDOM_SEEDS = 200
UPDATE_BATCH = 500  # the service's limit per update_model call
# Latency phases stop after MAX_REPS calls, or earlier once past PHASE_BUDGET with MIN_REPS done
# (the compute path at 1,000 observations takes seconds per call).
MIN_REPS = 5
PHASE_BUDGET_SECONDS = 90.0
COLD_START_OBSERVATIONS = 50
PROJECT_ROOT = Path(__file__).resolve().parents[2]

Observation = dict[str, Any]
Regrets = dict[int, dict[str, float]]  # checkpoint -> api -> regret


def _say(message: str) -> None:
    print(message, flush=True)


def _body(response: httpx.Response) -> Any:
    if response.status_code != 200:
        raise RuntimeError(
            f"{response.request.method} {response.request.url} -> "
            f"{response.status_code}: {response.text}"
        )
    return response.json()


async def _suggest(client: httpx.AsyncClient, study: str) -> list[dict[str, Any]]:
    params = {"apis": ",".join(APIS), "study": study}
    response = await client.get("/ml/suggest_parameters", params=params, headers=AUTH)
    suggestions: list[dict[str, Any]] = _body(response)["suggestions"]
    return suggestions


async def _timed_suggest(
    client: httpx.AsyncClient, study: str
) -> tuple[float, list[dict[str, Any]]]:
    started = time.perf_counter()
    suggestions = await _suggest(client, study)
    return time.perf_counter() - started, suggestions


async def _update(client: httpx.AsyncClient, study: str, observations: list[Observation]) -> None:
    body = {"study": study, "observations": observations}
    _body(await client.post("/ml/update_model", json=body, headers=AUTH))


async def _best(client: httpx.AsyncClient, study: str) -> dict[str, dict[str, Any]]:
    response = await client.get("/ml/best", params={"study": study, "fresh": "true"}, headers=AUTH)
    best: dict[str, dict[str, Any]] = _body(response)["best"]
    return best


async def _delete(client: httpx.AsyncClient, study: str) -> None:
    response = await client.delete(f"/ml/studies/{study}", headers=AUTH)
    if response.status_code != 404:
        _body(response)


def _observed_best(tried: Sequence[tuple[rater.Params, int]]) -> rater.Params:
    """The tried parameters with the best mean observed rating; ties go to the latest."""
    groups: dict[str, tuple[rater.Params, list[int]]] = {}
    for params, rating in tried:
        key = repr(sorted(params.items()))
        entry = groups.pop(key, (params, []))
        entry[1].append(rating)
        groups[key] = entry  # re-inserted, so dict order is order of latest try
    latest_first = reversed(list(groups.values()))
    return max(latest_first, key=lambda g: statistics.fmean(g[1]))[0]


def _regret(api: str, params: rater.Params) -> float:
    return rater.true_optimum(api)[1] - rater.true_value(api, params)


# --- sample efficiency ---------------------------------------------------------------------


@dataclass
class SearchRun:
    regrets: Regrets = field(default_factory=dict)
    tried_true: dict[str, list[float]] = field(default_factory=dict)  # api -> true values
    strategies: Counter[str] = field(default_factory=Counter)


async def _optimizer_run(client: httpx.AsyncClient, resources: Resources, seed: int) -> SearchRun:
    study = f"bench-eff-{seed}"
    await _delete(client, study)
    rng = np.random.default_rng([seed, 1])
    run = SearchRun(tried_true={api: [] for api in APIS})
    for sample in range(1, SAMPLES + 1):
        suggestions = await _suggest(client, study)
        observations = []
        for s in sorted(suggestions, key=lambda s: APIS.index(s["api"])):
            api, params = s["api"], s["parameters"]
            run.strategies[s["strategy"]] += 1
            run.tried_true[api].append(rater.true_value(api, params))
            observations.append(
                {
                    "observation_id": f"{study}-{sample}-{api}",
                    "suggestion_id": s["suggestion_id"],
                    "api": api,
                    "parameters": params,
                    "rating": rater.rate(api, params, rng),
                }
            )
        await _update(client, study, observations)
        # A trainer pauses for minutes between samples; the precompute always finishes there.
        await resources.work.drain()
        if sample in CHECKPOINTS:
            best = await _best(client, study)
            run.regrets[sample] = {api: _regret(api, best[api]["parameters"]) for api in APIS}
    await _delete(client, study)
    return run


def _random_run(seed: int) -> SearchRun:
    rng = np.random.default_rng([seed, 2])
    run = SearchRun(tried_true={api: [] for api in APIS})
    tried: dict[str, list[tuple[rater.Params, int]]] = {api: [] for api in APIS}
    for sample in range(1, SAMPLES + 1):
        for api in APIS:
            params = rater.random_parameters(api, rng)
            run.tried_true[api].append(rater.true_value(api, params))
            tried[api].append((params, rater.rate(api, params, rng)))
        if sample in CHECKPOINTS:
            run.regrets[sample] = {api: _regret(api, _observed_best(tried[api])) for api in APIS}
    return run


def _mean_se(values: Sequence[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0
    return mean, se


def _block_mean(runs: Sequence[SearchRun], lo: int, hi: int) -> float:
    return statistics.fmean(v for r in runs for api in APIS for v in r.tried_true[api][lo:hi])


def _efficiency_report(optimizer: list[SearchRun], random: list[SearchRun]) -> list[str]:
    lines = [
        "sample efficiency: simple regret = true optimum - true value of the recommended point,",
        f"mean +- standard error over {len(APIS)} APIs x {len(optimizer)} seeds "
        f"(random search: {len(random)} seeds) "
        f"(optimum: {', '.join(f'{a} {rater.true_optimum(a)[1]:.2f}' for a in APIS)})",
        "  samples   optimizer        random           ratio (optimizer/random)",
    ]
    for k in CHECKPOINTS:
        opt = _mean_se([r.regrets[k][api] for r in optimizer for api in APIS])
        rnd = _mean_se([r.regrets[k][api] for r in random for api in APIS])
        ratio = opt[0] / rnd[0] if rnd[0] > 0 else float("inf")
        lines.append(
            f"  {k:7d}   {opt[0]:.3f} +- {opt[1]:.3f}  {rnd[0]:.3f} +- {rnd[1]:.3f}  {ratio:6.2f}"
        )
    for api in APIS:
        per_k = "  ".join(
            f"@{k}: {statistics.fmean(r.regrets[k][api] for r in optimizer):.2f} vs "
            f"{statistics.fmean(r.regrets[k][api] for r in random):.2f}"
            for k in CHECKPOINTS
        )
        lines.append(f"  {api:17s} optimizer vs random regret  {per_k}")
    blocks = ((0, 5), (5, 10), (10, 20), (20, 50))
    for name, runs in (("optimizer", optimizer), ("random", random)):
        means = "  ".join(f"{lo + 1}-{hi}: {_block_mean(runs, lo, hi):.2f}" for lo, hi in blocks)
        lines.append(f"  mean true value of the points tried, {name:9s}  {means}")
    strategies = sum((r.strategies for r in optimizer), Counter())
    lines.append(
        "  optimizer strategies: " + ", ".join(f"{s} {n}" for s, n in sorted(strategies.items()))
    )
    opt20 = statistics.fmean(r.regrets[TARGET_SAMPLES][a] for r in optimizer for a in APIS)
    rnd20 = statistics.fmean(r.regrets[TARGET_SAMPLES][a] for r in random for a in APIS)
    ratio20 = opt20 / rnd20 if rnd20 > 0 else float("inf")
    verdict = "MET" if ratio20 <= TARGET_RATIO else "NOT MET"
    lines.append(
        f"  target: at {TARGET_SAMPLES} samples optimizer regret <= {TARGET_RATIO} x random: "
        f"{verdict} (ratio {ratio20:.2f})"
    )
    return lines


async def _sample_efficiency(
    client: httpx.AsyncClient, resources: Resources, seeds: Sequence[int]
) -> list[str]:
    optimizer_runs: list[SearchRun] = []
    random_runs: list[SearchRun] = []
    for seed in seeds:
        started = time.perf_counter()
        opt = await _optimizer_run(client, resources, seed)
        rnd = _random_run(seed)
        optimizer_runs.append(opt)

        def fmt(run: SearchRun) -> str:
            return " ".join(f"{statistics.fmean(run.regrets[k].values()):.2f}" for k in CHECKPOINTS)

        _say(
            f"  seed {seed}: regret @{'/'.join(map(str, CHECKPOINTS))} optimizer {fmt(opt)}"
            f" | random {fmt(rnd)}  ({time.perf_counter() - started:.0f} s)"
        )
    random_runs = [_random_run(seed) for seed in range(max(RANDOM_SEEDS, len(seeds)))]
    return _efficiency_report(optimizer_runs, random_runs)


# --- latency -------------------------------------------------------------------------------


@dataclass
class Latency:
    n: int
    n_end: int = 0
    hit: list[float] = field(default_factory=list)
    cold_miss: list[float] = field(default_factory=list)
    warm_miss: list[float] = field(default_factory=list)
    update: list[float] = field(default_factory=list)
    lazy_kernels: bool = True


def _lazy_kernels() -> bool:
    """gpytorch's process-wide lazy-kernel flag; its default is on.

    gpytorch flips it inside context managers that are not thread-safe, so GP work running in
    two threads at once can leave it off for good, and with it off the acquisition at n > 800
    is an order of magnitude slower. Reported so that a slow row can be told apart.
    """
    return bool(gpytorch.settings.lazily_evaluate_kernels.on())


def _no_precompute(*_args: object, **_kwargs: object) -> None:
    return None


@contextmanager
def _precompute_paused(resources: Resources) -> Iterator[None]:
    """No background precompute is scheduled: every suggest meets an empty shelf."""
    with mock.patch.object(resources.work, "schedule_precompute", _no_precompute):
        yield


async def _ready_ids(pool: asyncpg.Pool[Any], study: str) -> set[str]:
    rows = await pool.fetch(
        "SELECT id FROM ml.suggestions WHERE study = $1 AND issued_at IS NULL", study
    )
    return {r["id"] for r in rows}


async def _expire_pending(pool: asyncpg.Pool[Any], study: str, ttl_seconds: float) -> None:
    """Age the unobserved suggestions past the pending TTL, as for an abandoned image.

    Otherwise every timed suggest would leave one more pending point and later calls would pay
    for a growing ``X_pending`` that a single trainer never has.
    """
    await pool.execute(
        "UPDATE ml.suggestions SET issued_at = now() - make_interval(secs => $2)"
        " WHERE study = $1 AND issued_at IS NOT NULL AND observed_at IS NULL",
        study,
        2 * ttl_seconds,
    )


async def _drop_ready(pool: asyncpg.Pool[Any], study: str) -> None:
    await pool.execute("DELETE FROM ml.suggestions WHERE study = $1 AND issued_at IS NULL", study)


def _random_observations(
    study: str, tag: str, n: int, rng: np.random.Generator
) -> list[Observation]:
    out = []
    for i in range(n):
        for api in APIS:
            params = rater.random_parameters(api, rng)
            out.append(
                {
                    "observation_id": f"{study}-{tag}-{api}-{i}",
                    "api": api,
                    "parameters": params,
                    "rating": rater.rate(api, params, rng),
                }
            )
    return out


async def _seed_study(
    client: httpx.AsyncClient, resources: Resources, study: str, n: int, rng: np.random.Generator
) -> None:
    """``n`` random observations per API, then one precomputed suggestion ready per API."""
    await _delete(client, study)
    observations = _random_observations(study, "seed", n, rng)
    # Paused: otherwise each batch would start a fit that the next batch makes stale.
    with _precompute_paused(resources):
        for start in range(0, len(observations), UPDATE_BATCH):
            await _update(client, study, observations[start : start + UPDATE_BATCH])
    await _suggest(client, study)  # computes (untimed) and schedules the next precompute
    await resources.work.drain()
    await _expire_pending(await resources.pool(), study, resources.settings.ml_pending_ttl_seconds)


def _enough(done: int, started: float, max_reps: int) -> bool:
    if done >= max_reps:
        return True
    return done >= MIN_REPS and time.perf_counter() - started > PHASE_BUDGET_SECONDS


async def _latency_at(
    client: httpx.AsyncClient, resources: Resources, n: int, max_reps: int
) -> Latency:
    study = f"bench-lat-{n}"
    pool = await resources.pool()
    ttl = resources.settings.ml_pending_ttl_seconds
    rng = np.random.default_rng([n, 3])
    started = time.perf_counter()
    await _seed_study(client, resources, study, n, rng)
    _say(f"  n={n}: seeded {n} observations per API ({time.perf_counter() - started:.1f} s)")
    result = Latency(n, lazy_kernels=_lazy_kernels())

    # HIT: after a drain the precompute has left one suggestion per API on the shelf; the call
    # claims it. Its own follow-up precompute runs in the drain before the next call, untimed.
    started = time.perf_counter()
    while not _enough(len(result.hit), started, max_reps):
        await resources.work.drain()
        await _expire_pending(pool, study, ttl)
        ready = await _ready_ids(pool, study)
        seconds, claimed = await _timed_suggest(client, study)
        if not all(s["suggestion_id"] in ready for s in claimed):
            raise RuntimeError(f"n={n}: expected precomputed suggestions, got a miss")
        result.hit.append(seconds)
    await resources.work.drain()
    await _expire_pending(pool, study, ttl)

    # COLD MISS: the whole compute path from nothing cached, as in a fresh process or another
    # container: no suggestion on the shelf (precompute paused, ready rows dropped) and the
    # process's fitted GPs and warm-start hyperparameters forgotten, so each call loads the
    # observations, fits both GPs from default hyperparameters and maximises log-EI.
    started = time.perf_counter()
    suggestions: list[dict[str, Any]] = []
    with _precompute_paused(resources):
        await _drop_ready(pool, study)
        while not _enough(len(result.cold_miss), started, max_reps):
            resources.optimizer.forget(study)
            seconds, suggestions = await _timed_suggest(client, study)
            if any(s["strategy"] != "gp" for s in suggestions):
                raise RuntimeError(f"n={n}: expected GP suggestions, got {suggestions}")
            result.cold_miss.append(seconds)
            await _expire_pending(pool, study, ttl)

    # UPDATE, then WARM MISS: the trainer reports the last suggestions (one observation per
    # API), and asks again before any precompute (paused) could run. The update is the request
    # alone; the suggest refits on the new data from the previous fit's hyperparameters (this
    # process's usual miss: the precompute had not finished) and maximises log-EI. Each round
    # adds one observation per API, hence ``n_end``.
    started = time.perf_counter()
    last = suggestions
    with _precompute_paused(resources):
        while not _enough(len(result.warm_miss), started, max_reps):
            observations = [
                {
                    "observation_id": f"{study}-upd-{s['api']}-{len(result.update)}",
                    "suggestion_id": s["suggestion_id"],
                    "api": s["api"],
                    "parameters": s["parameters"],
                    "rating": rater.rate(s["api"], s["parameters"], rng),
                }
                for s in last
            ]
            update_started = time.perf_counter()
            await _update(client, study, observations)
            result.update.append(time.perf_counter() - update_started)
            seconds, last = await _timed_suggest(client, study)
            result.warm_miss.append(seconds)
    result.n_end = n + len(result.update)
    result.lazy_kernels &= _lazy_kernels()
    await _delete(client, study)
    _say(
        f"  n={n}: hit {_ms(result.hit)}  cold miss {_ms(result.cold_miss)}"
        f"  warm miss {_ms(result.warm_miss)}  update {_ms(result.update)}"
    )
    return result


def _p(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q))


def _ms(values: Sequence[float]) -> str:
    return f"{1000 * _p(values, 50):7.1f}/{1000 * _p(values, 95):7.1f} [{len(values):2d}]"


def _latency_report(results: list[Latency]) -> list[str]:
    lines = [
        "latency, ms p50/p95 [calls]; one suggest call asks for both APIs; in-process ASGI,",
        f"embedded PostgreSQL, {os.cpu_count()} CPUs, torch threads 1 (default)",
        "  n/API (end)   hit                  warm miss            cold miss"
        "            update               warm/hit  cold/hit",
    ]
    for r in results:
        warm, cold = (_p(v, 50) / _p(r.hit, 50) for v in (r.warm_miss, r.cold_miss))
        lines.append(
            f"  {r.n:5d} ({r.n_end:4d})  {_ms(r.hit)}  {_ms(r.warm_miss)}  {_ms(r.cold_miss)}"
            f"  {_ms(r.update)}  {warm:7.1f}x {cold:7.1f}x"
        )
    lines += [
        "  hit: a precomputed suggestion claimed. warm miss: none ready; refit on one new",
        "  observation from the last hyperparameters + log-EI. cold miss: none ready and no",
        "  fitted state (fresh process). update: one observation per API. n grows by one",
        "  per API with each update, to (end).",
    ]
    off = [str(r.n) for r in results if not r.lazy_kernels]
    lines.append(
        "  gpytorch lazily_evaluate_kernels: "
        + (f"OFF during n = {', '.join(off)} (left off by concurrent GP threads)" if off else "on")
    )
    return lines


# --- cold start ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ColdStart:
    label: str
    to_health: float
    to_suggest: float


async def _cold_start(
    dsn: str, folder: Path, study: str, label: str, expect_hit: set[str] | None
) -> ColdStart:
    """Spawn uvicorn and time process start -> ``/ml/health`` ok -> first suggest answered."""
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "ML_SERVICE_TOKEN": TOKEN,
        "LOG_LEVEL": "WARNING",
        "LOG_FORMAT": "text",
        "MIGRATE_ON_START": "false",
        "LATINA_DATA_DIR": str(folder / "data"),
    }
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "ml_service.app:app_from_environment",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    log_path = folder / f"uvicorn-{port}.log"
    with log_path.open("wb") as log:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=log)
        try:
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", timeout=120
            ) as client:
                while True:
                    if process.poll() is not None:
                        raise RuntimeError(f"uvicorn exited early:\n{log_path.read_text()}")
                    try:
                        if (await client.get("/ml/health")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if time.perf_counter() - started > 120:
                        raise RuntimeError(f"uvicorn not healthy in 120 s:\n{log_path.read_text()}")
                    await asyncio.sleep(0.02)
                to_health = time.perf_counter() - started
                suggestions = await _suggest(client, study)
                to_suggest = time.perf_counter() - started
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    if expect_hit is not None and not all(s["suggestion_id"] in expect_hit for s in suggestions):
        raise RuntimeError("cold start: expected the precomputed suggestions from the database")
    return ColdStart(label, to_health, to_suggest)


async def _cold_starts(
    client: httpx.AsyncClient, resources: Resources, dsn: str, folder: Path
) -> list[str]:
    study = "bench-cold"
    pool = await resources.pool()
    await _seed_study(client, resources, study, COLD_START_OBSERVATIONS, np.random.default_rng(7))
    results = [
        await _cold_start(
            dsn,
            folder,
            study,
            "a suggestion precomputed in the database",
            await _ready_ids(pool, study),
        )
    ]
    _say(f"  cold start, precomputed: {results[-1].to_suggest:.2f} s")
    await _drop_ready(pool, study)
    await _expire_pending(pool, study, resources.settings.ml_pending_ttl_seconds)
    results.append(
        await _cold_start(dsn, folder, study, "nothing precomputed (fit + log-EI)", None)
    )
    _say(f"  cold start, nothing precomputed: {results[-1].to_suggest:.2f} s")
    await _delete(client, study)
    lines = [
        f"cold start: fresh uvicorn process, study with {COLD_START_OBSERVATIONS} observations"
        " per API",
    ]
    for r in results:
        lines.append(
            f"  {r.label:42s} start -> health {r.to_health:5.2f} s, -> first suggest "
            f"{r.to_suggest:5.2f} s (suggest alone {1000 * (r.to_suggest - r.to_health):.0f} ms)"
        )
    return lines


# --- entry point ---------------------------------------------------------------------------


async def main(quick: bool = False, efficiency_only: bool = False) -> None:
    seeds = range(3) if quick else range(10)
    sizes = (10, 50) if quick else (10, 50, 200, 1000)
    max_reps = 10 if quick else 15
    run_started = time.perf_counter()
    folder = Path(tempfile.mkdtemp(prefix="latina-bench-ml-"))
    server = embedded_server(folder, cleanup_mode="delete")
    try:
        dsn = str(server.get_uri("postgres"))
        settings = Settings(
            latina_data_dir=folder / "data",
            database_url=dsn,
            migrate_on_start=True,
            ml_service_token=TOKEN,
            log_level="WARNING",
            log_format="text",
            # the optimizer itself, in this process (its model cache is what the latency figures
            # clear and warm); serving under load is `--only load`
            ml_gp_workers=0,
            ml_image_workers=0,
        )
        app = create_app(settings)
        resources: Resources = app.state.resources
        for api in APIS:
            rater.true_optimum(api)  # numeric search, once, outside any timing
        async with LifespanManager(app) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://bench", timeout=600
            ) as client:
                _say(f"ML optimizer benchmark ({'quick' if quick else 'full'})")
                _say(f"sample efficiency: {len(seeds)} seeds x {SAMPLES} samples")
                efficiency = await _sample_efficiency(client, resources, seeds)
                latencies: list[Latency] = []
                cold: list[str] = []
                if not efficiency_only:
                    _say(f"latency: n = {', '.join(map(str, sizes))} observations per API")
                    latencies = [await _latency_at(client, resources, n, max_reps) for n in sizes]
                    _say("cold start")
                    cold = await _cold_starts(client, resources, dsn, folder)
        elapsed = time.perf_counter() - run_started
        summary = [
            "",
            "=" * 100,
            f"ML optimizer benchmark summary ({'quick' if quick else 'full'} run)",
            "=" * 100,
            *efficiency,
            "",
            *(_latency_report(latencies) if latencies else []),
            "",
            *cold,
            "",
            f"total time {elapsed:.0f} s",
            "=" * 100,
        ]
        _say("\n".join(summary))
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)
