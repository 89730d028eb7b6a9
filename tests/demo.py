"""``make demo``: a simulated trainer rates 50 samples on a fresh local stack.

The stack is what ``make run`` starts (embedded PostgreSQL, ML service, gateway with its job
worker, local image engine, heuristic prompt evolver) in a temporary data folder, so the demo
touches nothing of yours. The trainer uploads synthetic interiors, rates both options and writes
comments; when a sample triggers prompt evolution it pauses until the worker has produced the
new version, like a person taking a break. At the end it prints the learning curve, the prompt
lineage and the A/B decisions, and writes a PNG chart of the rating curve.

The simulated trainer judges each option by its parameters (the optimizer benchmark's smooth
objective, ``simulated_rater``) and by the prompt: it has four complaints of its own (a render
look, artificial light, a dark room, no depth), each costing 0.4 stars until the prompt
addresses it in words of its own vocabulary, and it writes those complaints into low ratings'
comments. So an evolved prompt that answers its comments can win an A/B test.

Past phase 1 (``--samples 80``; ``make demo DEMO_ARGS="--samples 80"``) the worker trains the
reward model at sample 50, uploads switch to active learning (candidates scored, the predicted
best and the most uncertain shown), and the demo reports the model's prediction error over time
and charts it in ``prediction-error.png``.

Options: ``--samples N`` (default 50), ``--out DIR`` (default ``demo-output``), ``--seed S``;
``--url URL --token TOKEN`` drive an already running gateway instead of starting one.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image, ImageDraw

from tests.benchmarks import simulated_rater as rater
from tests.servers import free_port

COMPLAINT_COST = 0.4
EVOLUTION_WAIT = 180.0
START_TIMEOUT = 120.0


@dataclass(frozen=True)
class Taste:
    """One of the trainer's complaints: what it writes, and the words that answer it."""

    comment: str
    fixed_by: tuple[str, ...]


TASTES: tuple[Taste, ...] = (
    Taste("looks like a 3d render, not a photo", ("real camera", "raw photo", "authentic photo")),
    Taste("the lighting looks artificial", ("window light", "bounce light", "light falloff")),
    Taste("too dark, the room feels gloomy", ("well-exposed", "bright", "airy", "open shadows")),
    Taste("flat, no depth", ("foreground", "three-dimensional", "depth with")),
)


def unaddressed(prompt: str) -> list[Taste]:
    text = prompt.lower()
    return [t for t in TASTES if not any(word in text for word in t.fixed_by)]


def judge(
    api: str, parameters: dict[str, Any], prompt: str, rng: np.random.Generator
) -> tuple[int, str]:
    """A star rating and a comment for one option."""
    open_complaints = unaddressed(prompt)
    value = rater.true_value(api, parameters) - COMPLAINT_COST * len(open_complaints)
    rating = int(np.clip(np.rint(value + rng.normal(0.0, rater.NOISE_SD)), 1, 5))
    if rating >= 4:
        return rating, str(rng.choice(["convincing, looks like a real photo", "nice and natural"]))
    voiced = [open_complaints[i] for i in sorted(rng.permutation(len(open_complaints))[:2])]
    words = [t.comment for t in voiced] or ["not convincing yet"]
    return rating, ", ".join(words)


def synthetic_interior(rng: np.random.Generator, width: int = 320, height: int = 240) -> bytes:
    """A different simple room each time: wall, floor, a window and some furniture."""
    wall = tuple(int(v) for v in rng.integers(150, 230, 3))
    image = Image.new("RGB", (width, height), wall)  # type: ignore[arg-type]
    draw = ImageDraw.Draw(image)
    horizon = int(height * rng.uniform(0.55, 0.72))
    floor = tuple(int(v) for v in rng.integers(60, 140, 3))
    draw.rectangle((0, horizon, width, height), fill=floor)  # type: ignore[arg-type]
    wx = int(width * rng.uniform(0.05, 0.4))
    draw.rectangle(
        (wx, int(height * 0.15), wx + width // 4, int(height * 0.5)), fill=(175, 210, 240)
    )
    for _ in range(int(rng.integers(1, 4))):
        x0 = int(rng.uniform(0, width * 0.7))
        y0 = int(rng.uniform(horizon - height * 0.25, horizon))
        colour = tuple(int(v) for v in rng.integers(30, 200, 3))
        draw.rectangle((x0, y0, x0 + width // 4, y0 + height // 6), fill=colour)  # type: ignore[arg-type]
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


# --- the stack ---------------------------------------------------------------------------------


@contextmanager
def local_stack(folder: Path) -> Iterator[tuple[str, str]]:
    """``latina run`` in ``folder``; yields the gateway URL and the admin token."""
    gateway_port, ml_port = free_port(), free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "MIGRATE_ON_START", "LATINA_ENV", "OPENAI_API_KEY")
    }
    env.update(
        {
            "LATINA_DATA_DIR": str(folder / "data"),
            "PROMPT_EXPORT_DIR": str(folder / "prompt-library"),
            "GATEWAY_PORT": str(gateway_port),
            "ML_PORT": str(ml_port),
            "LOG_LEVEL": "WARNING",
            # a simulated trainer rates faster than a person: the per-user limits are off
            "RENDER_RATE_PER_MINUTE": "0",
            "PAID_RENDERS_PER_DAY": "0",
            # phase 2 within a demo's patience: retrain often, render a few candidates
            "REWARD_RETRAIN_EVERY": "10",
            "ACTIVE_CANDIDATES": "6",
            "LOG_FORMAT": "text",
        }
    )
    lines: list[str] = []
    process = subprocess.Popen(
        [sys.executable, "-m", "latina_cli", "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    url = f"http://127.0.0.1:{gateway_port}"
    try:
        started = time.monotonic()
        while not any("Ctrl-C stops everything" in line for line in lines):
            if process.poll() is not None or time.monotonic() - started > START_TIMEOUT:
                raise SystemExit("the local stack did not start:\n" + "\n".join(lines))
            time.sleep(0.3)
        marker = next(i for i, line in enumerate(lines) if "API token, shown once" in line)
        yield url, lines[marker + 1].strip()
    finally:
        process.send_signal(2)  # SIGINT: the stack stops everything it started
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


# --- the trainer -------------------------------------------------------------------------------


@dataclass
class Run:
    # sample, mean rating, option -> (api, stars)
    curve: list[tuple[int, float, dict[str, tuple[str, int]]]] = field(default_factory=list)
    versions_used: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)


def _ok(response: httpx.Response) -> dict[str, Any]:
    if response.status_code >= 400:
        raise SystemExit(f"{response.request.method} {response.request.url}: {response.text}")
    body: dict[str, Any] = response.json()
    return body


def wait_for_evolution(client: httpx.Client, sample: int) -> dict[str, Any]:
    started = time.monotonic()
    while time.monotonic() - started < EVOLUTION_WAIT:
        last = _ok(client.get("/api/train/status"))["prompt_evolution"]["last_round"]
        if last and last["sample"] >= sample and last["status"] not in ("triggered", "running"):
            return dict(last)
        time.sleep(0.5)
    raise SystemExit(f"the evolution of sample {sample} did not finish in {EVOLUTION_WAIT:.0f} s")


def wait_for_reward_model(client: httpx.Client) -> dict[str, Any] | None:
    """After phase 1 the worker trains the reward model; a trainer would take a break."""
    started = time.monotonic()
    while time.monotonic() - started < EVOLUTION_WAIT:
        model = _ok(client.get("/api/train/status"))["reward_model"]
        if model["trained"]:
            return dict(model)
        time.sleep(1.0)
    return None


def train(client: httpx.Client, samples: int, seed: int) -> Run:
    rng = np.random.default_rng(seed)
    phase_1_target = _ok(client.get("/api/train/status"))["phase_1_target"]
    prompts: dict[str, str] = {}
    run = Run()
    for n in range(1, samples + 1):
        experiment = _ok(
            client.post(
                "/api/enhance/train",
                files={"image": (f"room-{n}.jpg", synthetic_interior(rng), "image/jpeg")},
                data={"project_id": "demo"},
            )
        )
        version = experiment["prompt_version"]
        if version not in prompts:
            prompts[version] = _ok(client.get(f"/api/prompts/{version}"))["prompt"]
        ratings = []
        given: dict[str, tuple[str, int]] = {}
        for option in experiment["options"]:
            if "image_id" not in option:
                continue
            stars, comment = judge(option["api"], option["parameters"], prompts[version], rng)
            given[option["option"]] = (option["api"], stars)
            ratings.append(
                {
                    "option": option["option"],
                    "image_id": option["image_id"],
                    "rating": stars,
                    "comments": comment,
                }
            )
        body = _ok(
            client.post(
                "/api/train/rate",
                json={"experiment_id": experiment["experiment_id"], "ratings": ratings},
            )
        )
        sample = body["sample_number"]
        run.curve.append((sample, sum(r for _, r in given.values()) / len(given), given))
        run.versions_used.append(version)
        slot = experiment.get("ab_test")
        tag = f" A/B slot {slot['slot']} ({slot['arm']})" if slot else ""
        if experiment["mode"] == "active":
            predicted = "/".join(f"{o['predicted_rating']:.1f}" for o in experiment["options"])
            tag = f" active: {experiment['candidates']} cand., shown {predicted}"
        print(
            f"  sample {sample:3d}  prompt {version}{tag:30s}  "
            + "  ".join(f"{o}:{api} {r}" for o, (api, r) in given.items()),
            flush=True,
        )
        if sample == phase_1_target:
            trained = wait_for_reward_model(client)
            line = f"sample {sample}: phase 1 complete; reward model " + (
                f"{trained['version']} trained on {trained['samples']} observations, "
                f"held-out pairwise accuracy {trained['pairwise_accuracy']}"
                if trained
                else "not trained yet"
            )
            run.events.append(line)
            print("  >> " + line, flush=True)
        evolution = body["prompt_evolution"]
        test = evolution["ab_test"]
        if test and test["status"] == "decided":
            line = (
                f"sample {sample}: A/B test {test['id']} decided: {test['old']} "
                f"{test['avg'][test['old']]} vs {test['new']} {test['avg'][test['new']]}, "
                f"winner {test['winner']} (p_new_better {test['p_new_better']})"
            )
            run.events.append(line)
            print("  >> " + line, flush=True)
            last = _ok(client.get("/api/train/status"))["prompt_evolution"]["last_round"]
            if last and last["status"] in ("triggered", "running"):  # a waiting round started
                last = wait_for_evolution(client, last["sample"])
                line = (
                    f"sample {sample}: the waiting evolution of sample {last['sample']} ran: "
                    f"new version {last['new_version']} by the {last['evolver']} evolver"
                )
                run.events.append(line)
                print("  >> " + line, flush=True)
        if evolution["triggered"]:
            if evolution["waiting_for_ab_test"]:
                line = f"sample {sample}: evolution triggered, waiting for the running A/B test"
            else:
                last = wait_for_evolution(client, sample)
                line = (
                    f"sample {sample}: evolution {last['status']}: new version "
                    f"{last['new_version']} by the {last['evolver']} evolver"
                    + (f" ({last['error']})" if last["error"] else "")
                )
            run.events.append(line)
            print("  >> " + line, flush=True)
    return run


# --- the report --------------------------------------------------------------------------------


def rolling(values: list[float], window: int = 5) -> list[float]:
    return [
        sum(values[max(0, i - window + 1) : i + 1]) / len(values[max(0, i - window + 1) : i + 1])
        for i in range(len(values))
    ]


def report(client: httpx.Client, run: Run, out: Path) -> None:
    status = _ok(client.get("/api/train/status"))
    library = _ok(client.get("/api/prompts"))
    tests = _ok(client.get("/api/ab_tests"))["items"]
    values = [avg for _, avg, _ in run.curve]
    smooth = rolling(values)
    best = [max(values[: i + 1]) for i in range(len(values))]
    print("\nLearning curve (mean of both options per sample, rolling mean of 5, best so far):")
    for (sample, avg, _), r, b, version in zip(
        run.curve, smooth, best, run.versions_used, strict=True
    ):
        bar = "#" * round(r * 8)
        print(f"  {sample:3d}  {avg:4.1f}  {r:4.2f}  {b:3.1f}  {version:8s} {bar}")
    first = sum(values[:10]) / min(10, len(values))
    last = sum(values[-10:]) / min(10, len(values))
    print(f"  mean of the first 10 samples {first:.2f}, of the last 10 {last:.2f}")

    print("\nPrompt lineage:")
    children: dict[str | None, list[dict[str, Any]]] = {}
    for item in library["items"]:
        children.setdefault(item["parent_version"], []).append(item)

    def show(version: dict[str, Any], depth: int) -> None:
        mark = " (current)" if version["is_current"] else ""
        score = version["performance_score"]
        print(
            f"  {'    ' * depth}{version['version']}{mark}  origin {version['origin']}, "
            f"status {version['status']}, used {version['usage_count']}x, "
            f"score {score if score is not None else '-'}"
        )
        for change in version["changes"]:
            print(f"  {'    ' * depth}    - {change}")
        for child in children.get(version["version"], []):
            show(child, depth + 1)

    for root in children.get(None, []):
        show(root, 0)

    print("\nA/B tests:")
    if not tests:
        print("  none")
    for t in reversed(tests):
        print(
            f"  #{t['id']} {t['old']} vs {t['new']}: {t['status']}, "
            f"means {t['avg']}, winner {t['winner']}, p_new_better {t['p_new_better']}"
            + (f" ({t['note']})" if t["note"] else "")
        )
    print("\nEvents:")
    for line in run.events:
        print(f"  {line}")
    print(
        f"\nFinal: {status['samples_collected']} samples, current prompt "
        f"{library['current']}, current best rating {status['current_best_rating']}"
    )
    chart = write_chart(run, values, smooth, best, tests, out)
    print(f"Chart: {chart}")
    reward = status["reward_model"]
    if reward["trained"] or reward["prediction_errors"]:
        print(
            f"\nReward model (phase 2): {reward['version']}, {reward['samples']} observations, "
            f"held-out pairwise accuracy {reward['pairwise_accuracy']}, MAE {reward['mae']}"
        )
        errors = reward["prediction_errors"]
        print("Prediction error of the shown options (actual - predicted), over time:")
        for e in errors:
            print(
                f"  sample {e['sample']:3d} {e['option']} {e['api']:17s} predicted "
                f"{e['predicted']:.2f}  actual {e['actual']}  error {e['error']:+.2f}"
            )
        if errors:
            half = len(errors) // 2 or 1
            early = sum(abs(e["error"]) for e in errors[:half]) / half
            late = sum(abs(e["error"]) for e in errors[half:]) / max(1, len(errors) - half)
            print(f"  mean absolute error: first half {early:.2f}, second half {late:.2f}")
            print(f"Chart: {write_error_chart(errors, out)}")


def write_chart(
    run: Run,
    values: list[float],
    smooth: list[float],
    best: list[float],
    tests: list[dict[str, Any]],
    out: Path,
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = [s for s, _, _ in run.curve]
    fig, ax = plt.subplots(figsize=(10, 5), dpi=110)
    for api, colour in (("leonardo", "tab:blue"), ("stable_diffusion", "tab:orange")):
        points = [(s, r) for s, _, g in run.curve for a, r in g.values() if a == api]
        ax.scatter(
            [p[0] for p in points],
            [p[1] for p in points],
            s=14,
            alpha=0.45,
            color=colour,
            label=f"{api} rating",
        )
    ax.plot(samples, values, color="grey", linewidth=0.8, alpha=0.6, label="mean per sample")
    ax.plot(samples, smooth, color="black", linewidth=2, label="rolling mean (5)")
    ax.plot(samples, best, color="green", linestyle="--", label="best so far")
    version_of = dict(zip(samples, run.versions_used, strict=True))
    for t in tests:
        if t["status"] == "decided" and t["promoted"]:
            firsts = [s for s, v in version_of.items() if v == t["new"]]
            if firsts:
                ax.axvline(min(firsts), color="purple", alpha=0.4)
                ax.text(min(firsts), 5.05, f"{t['new']}", color="purple", fontsize=8)
    ax.set_xlabel("sample")
    ax.set_ylabel("rating (1-5)")
    ax.set_ylim(0.8, 5.3)
    ax.set_title("Latina demo: ratings while the optimizer and the prompt learn")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "rating-curve.png"
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path.resolve()


def write_error_chart(errors: list[dict[str, Any]], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4), dpi=110)
    xs = [e["sample"] for e in errors]
    ys = [e["error"] for e in errors]
    ax.scatter(xs, ys, s=16, alpha=0.6, label="actual - predicted (shown options)")
    window = [abs(y) for y in ys]
    ax.plot(xs, rolling(window, 6), color="black", label="rolling mean absolute error")
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xlabel("sample")
    ax.set_ylabel("rating error")
    ax.set_title("Reward model: prediction error of the options active learning showed")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    path = out / "prediction-error.png"
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path.resolve()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("demo-output"))
    parser.add_argument("--url", help="a running gateway (default: start a fresh local stack)")
    parser.add_argument("--token", help="an API token for --url")
    args = parser.parse_args(argv)

    def drive(url: str, token: str) -> None:
        with httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=300
        ) as client:
            print(f"Simulated trainer: {args.samples} samples against {url}")
            run = train(client, args.samples, args.seed)
            report(client, run, args.out)

    if args.url:
        if not args.token:
            parser.error("--url needs --token")
        drive(args.url, args.token)
        return
    with tempfile.TemporaryDirectory(prefix="latina-demo-") as folder:
        print("Starting a fresh local stack (embedded PostgreSQL, ML service, gateway) ...")
        with local_stack(Path(folder)) as (url, token):
            drive(url, token)


if __name__ == "__main__":
    main()
