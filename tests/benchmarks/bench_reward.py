"""The reward model on images it has never seen: does it rank them better than the parameters do?

Data: synthetic interiors (layout, materials, colours, size, and how badly each was shot: exposure,
colour cast, flat contrast, softness, sensor noise all vary), each turned into two options, one
per API, with parameters drawn uniformly from the search space and rendered by ``LocalEngine``
with the seed prompt. A simulated trainer rates every option from the *image*: a hidden quality
computed from the result and its original with measures of its own (CIELAB exposure, contrast,
cast and chroma; clipping; acutance and noise against the original; gradient structure kept),
not from the service's feature extractor and never from the parameters, which matter only through
what they do to the picture. The trainer sees the upload beside the options (as in the trainer UI),
so the true rating is how the result looks plus extra credit for the improvement over the
original; a star rating is that + N(0, 0.5), rounded and clipped to 1..5.

Reported, for the reward model and the parameters-only baseline trained on the same samples:
pairwise accuracy on held-out uploads kept apart from training (pairs whose true, noise-free
ratings differ by >= 1; a predicted tie counts half), over all pairs (most are across uploads,
where how well the upload was shot dominates) and over the two options of one upload only (the
parameters' own effect; few pairs, as the engine's options differ little), MAE, the
model's own internal held-out metric, training time at 200 and 2,000 samples, and scoring
throughput from image bytes (decode + features + model) and of the model alone.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import multiprocessing
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image, ImageDraw, ImageFilter
from scipy import ndimage

from gateway.providers.base import ApiName, RenderRequest
from gateway.providers.local_engine import LocalEngine
from ml_service.images import features as fx
from ml_service.reward.model import (
    Candidate,
    RewardModel,
    Sample,
    TrainConfig,
    train,
    train_parameters_only,
)
from shared.search_space import load_search_space
from shared.settings import Settings
from tests.benchmarks import simulated_rater

F64 = npt.NDArray[np.float64]

APIS: tuple[ApiName, ...] = ("leonardo", "stable_diffusion")
SEED_PROMPT = Path(__file__).resolve().parents[2] / "prompts" / "versions" / "v1.0.0.json"
NOISE_SD = 0.5
IMPROVEMENT_WEIGHT = 2.0
MIN_GAP = 1.0
TARGET_ACCURACY = 0.85
DATA_SEED = 7
HELD_OUT_SEED_OFFSET = 1_000_000  # held-out uploads come from seeds no training upload uses
# (width, height): landscape, square and portrait, all under the feature extractor's 512 px.
SIZES = ((320, 240), (384, 288), (360, 240), (448, 336), (288, 288), (256, 320), (300, 400))


def _say(message: str) -> None:
    print(message, flush=True)


# --- uploads -------------------------------------------------------------------------------


def synthetic_room(seed: int) -> bytes:
    """A JPEG interior, the same for the same seed: a furnished room, shot well or badly."""
    rng = np.random.default_rng([DATA_SEED, seed])
    width, height = SIZES[int(rng.integers(len(SIZES)))]
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)

    def colour(low: float, high: float, tint: float = 0.25) -> tuple[int, int, int]:
        base = rng.uniform(low, high)
        rgb = np.clip(base * (1 + rng.uniform(-tint, tint, 3)), 0, 255)
        return (int(rgb[0]), int(rgb[1]), int(rgb[2]))

    x0, x1 = int(width * rng.uniform(0.12, 0.35)), int(width * rng.uniform(0.65, 0.88))
    y0, y1 = int(height * rng.uniform(0.12, 0.3)), int(height * rng.uniform(0.55, 0.72))
    wall = colour(150, 235, 0.15)
    shade = rng.uniform(0.7, 0.9)
    draw.rectangle((x0, y0, x1, y1), fill=wall)
    draw.polygon([(0, 0), (x0, y0), (x0, y1), (0, height)], fill=_scale(wall, shade))
    draw.polygon([(width, 0), (x1, y0), (x1, y1), (width, height)], fill=_scale(wall, shade**2))
    draw.polygon([(0, 0), (width, 0), (x1, y0), (x0, y0)], fill=_scale(wall, 1.05))
    floor = colour(60, 170, 0.35)
    draw.polygon([(0, height), (x0, y1), (x1, y1), (width, height)], fill=floor)
    vanishing = ((x0 + x1) / 2, (y0 + y1) / 2)
    for k in range(int(rng.integers(4, 14))):  # planks or tiles converging on the back wall
        u = (k + 0.5) / 14
        bottom = (u * width * 1.6 - 0.3 * width, height)
        top_x = vanishing[0] + (bottom[0] - vanishing[0]) * (y1 - vanishing[1]) / (
            height - vanishing[1]
        )
        draw.line([bottom, (top_x, y1)], fill=_scale(floor, 0.8), width=1)
    for _ in range(int(rng.integers(1, 3))):  # windows: bright sky, mullions
        wx = int(rng.uniform(x0 + 5, x1 - 0.25 * (x1 - x0)))
        ww = int(rng.uniform(0.12, 0.25) * (x1 - x0))
        wy, wh = int(rng.uniform(y0 + 4, y0 + 0.2 * (y1 - y0))), int(0.5 * (y1 - y0))
        draw.rectangle((wx, wy, wx + ww, wy + wh), fill=colour(215, 255, 0.08))
        draw.line([(wx + ww // 2, wy), (wx + ww // 2, wy + wh)], fill=_scale(wall, 0.6), width=2)
        draw.rectangle((wx, wy, wx + ww, wy + wh), outline=_scale(wall, 0.6), width=2)
    if rng.random() < 0.8:  # a framed picture
        px, py = int(rng.uniform(x0, x1 - 40)), int(rng.uniform(y0 + 5, y0 + 20))
        pw, ph = int(rng.uniform(20, 45)), int(rng.uniform(15, 35))
        draw.rectangle((px, py, px + pw, py + ph), fill=colour(20, 240, 0.8), outline=(30, 25, 20))
    sofa = colour(40, 200, 0.6)
    sx, sw = int(width * rng.uniform(0.05, 0.45)), int(width * rng.uniform(0.3, 0.5))
    sy, sh = int(y1 - 0.15 * height), int(rng.uniform(0.15, 0.25) * height)
    draw.rectangle((sx, sy, sx + sw, sy + sh), fill=sofa)
    draw.rectangle((sx, sy - sh // 3, sx + sw, sy), fill=_scale(sofa, 0.85))
    for c in range(int(rng.integers(1, 4))):  # cushions
        cx = sx + 6 + c * (sw // 3)
        draw.ellipse((cx, sy - sh // 4, cx + sw // 4, sy + sh // 5), fill=colour(30, 230, 0.7))
    rug = (int(width * 0.2), int(height * 0.82), int(width * 0.8), int(height * 0.97))
    draw.ellipse(rug, fill=colour(40, 220, 0.6))
    if rng.random() < 0.7:  # a plant
        bx, by = int(rng.uniform(0.7, 0.92) * width), int(rng.uniform(0.6, 0.8) * height)
        for _ in range(8):
            dx, dy, r = rng.uniform(-12, 12), rng.uniform(-25, 0), rng.uniform(5, 10)
            leaf = (int(rng.uniform(20, 70)), int(rng.uniform(90, 160)), int(rng.uniform(20, 70)))
            draw.ellipse((bx + dx - r, by + dy - r, bx + dx + r, by + dy + r), fill=leaf)
        draw.rectangle((bx - 7, by, bx + 7, by + 16), fill=colour(80, 160, 0.3))
    return _shoot(image, rng)


def _scale(rgb: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    r, g, b = (min(255, int(v * factor)) for v in rgb)
    return (r, g, b)


def _shoot(image: Image.Image, rng: np.random.Generator) -> bytes:
    """Texture, light fall-off and the camera's faults, then a JPEG."""
    height, width = image.height, image.width
    x = np.asarray(image, dtype=np.float64) / 255.0
    texture = ndimage.gaussian_filter(rng.standard_normal((height, width)), 1.0)
    x *= 1 + 0.06 * texture[..., None]  # materials are not flat colour
    xs = np.linspace(-1, 1, width)[None, :]
    ys = np.linspace(-1, 1, height)[:, None]
    side = rng.uniform(-1, 1)
    x *= (1 - 0.25 * np.abs(xs - side) - 0.15 * ys**2)[..., None]  # light from one side
    shot = rng.choice(["dark", "fine", "bright"], p=[0.35, 0.4, 0.25])
    gain = {"dark": rng.uniform(0.45, 0.75), "fine": rng.uniform(0.95, 1.2)}.get(
        str(shot), rng.uniform(1.3, 1.6)
    )
    x = x * gain
    cast = rng.uniform(-0.1, 0.1, 2)
    x *= np.array([1 + cast[0], 1.0, 1 + cast[1]])
    flatten = rng.uniform(0.0, 0.5) if rng.random() < 0.5 else 0.0
    x = x + flatten * (x.mean() - x)
    x = np.clip(x, 0, 1) ** rng.uniform(0.85, 1.2)
    out = Image.fromarray((x * 255 + 0.5).astype(np.uint8))
    blur = float(rng.choice([0.0, 0.0, 0.6, 1.0, 1.6]))
    if blur:
        out = out.filter(ImageFilter.GaussianBlur(blur))
    noisy = np.asarray(out, dtype=np.float64) + rng.normal(0, rng.uniform(0, 6), (height, width, 1))
    out = Image.fromarray(np.clip(noisy + 0.5, 0, 255).astype(np.uint8))
    data = io.BytesIO()
    out.save(data, format="JPEG", quality=90)
    return data.getvalue()


# --- the simulated trainer -----------------------------------------------------------------


@dataclass(frozen=True)
class View:
    """What the simulated trainer notices, each on its own scale (CIELAB L* is 0-100)."""

    lightness: float  # mean L*
    contrast: float  # std of L*
    cast: float  # distance of mid-tones' mean (a*, b*) from a slightly warm neutral
    chroma: float  # mean C*ab
    clipped: float  # fraction of pixels with L* > 97 or < 3
    acutance: float  # log2 of acutance, result / original
    noise: float  # flat-area noise, L* units
    structure: float  # correlation of the original's and result's coarse gradient maps


def _lab(rgb: F64) -> F64:
    """sRGB ``h x w x 3`` in [0, 1] -> CIELAB (D65)."""
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = linear @ np.array(
        [[0.4124, 0.2126, 0.0193], [0.3576, 0.7152, 0.1192], [0.1805, 0.0722, 0.9505]]
    )
    xyz /= np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])],
        axis=-1,
    )


def _acutance(lightness: F64) -> float:
    """Mean absolute high-pass: L* minus its 5 x 5 box mean."""
    return float(np.mean(np.abs(lightness - ndimage.uniform_filter(lightness, 5))))


def _coarse_gradient(lightness: F64) -> F64:
    gy, gx = np.gradient(ndimage.uniform_filter(lightness, 3))
    magnitude = np.hypot(gx, gy)
    h, w = (s // 4 * 4 for s in magnitude.shape)
    blocks: F64 = magnitude[:h, :w].reshape(h // 4, 4, w // 4, 4).mean(axis=(1, 3))
    return blocks


def look(result: bytes, original: bytes) -> View:
    """The trainer's view of ``result`` beside the ``original`` it was made from."""
    lab = _lab(_rgb(result))
    base = _lab(_rgb(original))
    if base.shape != lab.shape:
        raise ValueError("the result must keep the original's size")
    lightness, a, b = lab[..., 0], lab[..., 1], lab[..., 2]
    mid = (lightness > 20) & (lightness < 85)
    cast = math.hypot(float(a[mid].mean()), float(b[mid].mean()) - 4.0) if mid.any() else 0.0
    # noise: robust spread of what a 3 x 3 median removes, where the scene is smooth
    residual = lightness - ndimage.median_filter(lightness, 3)
    dy, dx = np.gradient(ndimage.uniform_filter(lightness, 5))
    flat = np.abs(dy) + np.abs(dx) < 0.5
    noise = float(np.median(np.abs(residual[flat]))) * 1.4826 if flat.sum() > 100 else 0.0
    ours, theirs = _coarse_gradient(lightness).ravel(), _coarse_gradient(base[..., 0]).ravel()
    return View(
        lightness=float(lightness.mean()),
        contrast=float(lightness.std()),
        cast=cast,
        chroma=float(np.hypot(a, b).mean()),
        clipped=float(np.mean((lightness > 97) | (lightness < 3))),
        acutance=math.log2(_acutance(lightness) / max(_acutance(base[..., 0]), 1e-6)),
        noise=noise,
        structure=float(np.corrcoef(ours, theirs)[0, 1]),
    )


def faults(view: View) -> tuple[float, ...]:
    """Each visible fault in stars: 1 is a fault that costs a whole star."""
    return (
        abs(view.lightness - 55.0) / 15.0,  # too dark or too bright
        max(0.0, 14.0 - view.contrast) / 7.0 + max(0.0, view.contrast - 28.0) / 7.0,
        max(0.0, view.cast - 4.0) / 6.0,  # colour cast
        max(0.0, 10.0 - view.chroma) / 8.0 + max(0.0, view.chroma - 28.0) / 6.0,
        view.clipped * 6.0,  # blown highlights and crushed shadows
        max(0.0, -view.acutance) * 1.5 + max(0.0, view.acutance - 1.5),  # softened / crunchy
        max(0.0, view.noise - 0.8) / 1.0,
        max(0.0, 0.95 - view.structure) * 6.0,  # the room's layout drifted
    )


def true_rating(result: View, original: View) -> float:
    """The noise-free rating, 1..5: how the result looks, and how much better than the original.

    The trainer sees the upload beside the options, so a visible improvement earns more than
    its share of the absolute look: each star gained over the original counts
    ``1 + IMPROVEMENT_WEIGHT`` times.
    """
    looks = 5.0 - sum(faults(result))
    gained = looks - (5.0 - sum(faults(original)))
    return min(max(looks + IMPROVEMENT_WEIGHT * gained, 1.0), 5.0)


def star_rating(true: float, rng: np.random.Generator) -> int:
    return int(np.clip(np.rint(true + rng.normal(0.0, NOISE_SD)), 1, 5))


def _rgb(data: bytes) -> F64:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0


# --- the rated data set --------------------------------------------------------------------


@dataclass(frozen=True)
class RatedOption:
    upload: int
    api: ApiName
    parameters: dict[str, float | int]
    features: npt.NDArray[np.float32]
    true: float
    stars: int
    render_seconds: float
    image: bytes | None  # kept for the held-out uploads only, to time scoring from bytes
    original: bytes | None


def _seed_prompt() -> tuple[str, str]:
    seed = json.loads(SEED_PROMPT.read_text())
    return seed["prompt"], seed["negative_prompt"]


def rated_upload(upload: int, keep_images: bool = False) -> list[RatedOption]:
    """One upload's two options, rendered, rated and featurized (runs in a worker process)."""
    original = synthetic_room(upload)
    rng = np.random.default_rng([DATA_SEED, upload, 1])
    prompt, negative = _seed_prompt()
    with Image.open(io.BytesIO(original)) as image:
        width, height = image.size
    requests = [
        RenderRequest(
            api=api,
            image=original,
            content_type="image/jpeg",
            width=width,
            height=height,
            prompt=prompt,
            negative_prompt=negative,
            parameters=simulated_rater.random_parameters(api, rng),
            seed=int(rng.integers(2**31)),
        )
        for api in APIS
    ]
    engine = LocalEngine()

    async def render(request: RenderRequest) -> tuple[bytes, float]:
        started = time.perf_counter()
        result = await engine.render(request)
        return result.image, time.perf_counter() - started

    base_view = look(original, original)
    base_pixels = fx.decode(original)
    options = []
    for request in requests:
        image, seconds = asyncio.run(render(request))
        true = true_rating(look(image, original), base_view)
        options.append(
            RatedOption(
                upload=upload,
                api=request.api,
                parameters=request.parameters,
                features=fx.extract(fx.decode(image), base_pixels),
                true=true,
                stars=star_rating(true, rng),
                render_seconds=seconds,
                image=image if keep_images else None,
                original=original if keep_images else None,
            )
        )
    return options


async def rated_data_set(
    uploads: Sequence[int], keep_images: bool, workers: int, label: str
) -> list[RatedOption]:
    """``rated_upload`` for every upload on a pool of spawned processes, in upload order."""
    started = time.perf_counter()
    loop = asyncio.get_running_loop()
    done: dict[int, list[RatedOption]] = {}
    # spawn, not fork: the parent has imported torch, whose thread pools do not survive a fork
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        futures = [loop.run_in_executor(pool, rated_upload, u, keep_images) for u in uploads]
        step = max(50, len(uploads) // 10)
        for future in asyncio.as_completed(futures):
            options = await future
            done[options[0].upload] = options
            if len(done) % step == 0 or len(done) == len(uploads):
                _say(
                    f"  {label}: {len(done)}/{len(uploads)} uploads, {2 * len(done)} images "
                    f"rendered, rated and featurized ({time.perf_counter() - started:.0f} s)"
                )
    return [option for u in uploads for option in done[u]]


def _samples(options: Sequence[RatedOption]) -> list[Sample]:
    return [
        Sample(
            features=o.features,
            api=o.api,
            parameters=o.parameters,
            rating=float(o.stars),
            group=f"upload-{o.upload}",
        )
        for o in options
    ]


# --- evaluation ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluation:
    accuracy: float  # all held-out pairs with a true gap >= MIN_GAP
    pairs: int
    within_accuracy: float  # only the two options of one upload
    within_pairs: int
    mae: float  # against the held-out star ratings
    mae_true: float  # against the noise-free ratings


def pairwise_accuracy(
    true: F64, predicted: F64, groups: npt.NDArray[np.int64], within: bool
) -> tuple[float, int]:
    """Share of pairs (true gap >= ``MIN_GAP``) ordered as the truth orders them; ties half."""
    i, j = np.triu_indices(len(true), k=1)
    keep = np.abs(true[i] - true[j]) >= MIN_GAP
    if within:
        keep &= groups[i] == groups[j]
    i, j = i[keep], j[keep]
    if not len(i):
        return math.nan, 0
    diff = predicted[i] - predicted[j]
    right = np.where(diff == 0, 0.5, np.sign(diff) == np.sign(true[i] - true[j]))
    return float(right.mean()), len(i)


def evaluate(model: RewardModel, held_out: Sequence[RatedOption]) -> Evaluation:
    predicted = np.array([p.rating for p in model.predict(_samples(held_out))])
    true = np.array([o.true for o in held_out])
    stars = np.array([o.stars for o in held_out], dtype=np.float64)
    groups = np.array([o.upload for o in held_out], dtype=np.int64)
    accuracy, pairs = pairwise_accuracy(true, predicted, groups, within=False)
    within, within_pairs = pairwise_accuracy(true, predicted, groups, within=True)
    return Evaluation(
        accuracy,
        pairs,
        within,
        within_pairs,
        float(np.abs(predicted - stars).mean()),
        float(np.abs(predicted - true).mean()),
    )


@dataclass(frozen=True)
class SizeResult:
    n_samples: int
    model: RewardModel
    baseline: RewardModel
    seconds: float
    baseline_seconds: float
    ours: Evaluation
    theirs: Evaluation


def train_at(
    size: int, options: Sequence[RatedOption], held_out: Sequence[RatedOption], config: TrainConfig
) -> SizeResult:
    samples = _samples(options[:size])
    space = load_search_space()
    started = time.perf_counter()
    model = train(samples, space, config)
    seconds = time.perf_counter() - started
    started = time.perf_counter()
    baseline = train_parameters_only(samples, space, config)
    baseline_seconds = time.perf_counter() - started
    return SizeResult(
        size,
        model,
        baseline,
        seconds,
        baseline_seconds,
        evaluate(model, held_out),
        evaluate(baseline, held_out),
    )


def _internal(model: RewardModel) -> str:
    m = model.metrics
    accuracy = "  -  " if m.pairwise_accuracy is None else f"{m.pairwise_accuracy:.3f}"
    mae = "  -  " if m.mae is None else f"{m.mae:.3f}"
    return f"{accuracy} / {mae} ({m.n_test} samples, {m.pairs_tested} pairs)"


SIZE_HEADER = (
    f"  {'':<32}{'pairwise':>9} {'pairs':>7}  {'in-upload':>9} {'pairs':>5}  {'MAE':>5}"
    f"  {'vs true':>7}  {'train':>8}   internal split: accuracy / MAE"
)


def _size_lines(r: SizeResult) -> list[str]:
    lines = [SIZE_HEADER]
    for name, e, model, seconds in (
        (f"{r.n_samples} samples, reward model", r.ours, r.model, r.seconds),
        (f"{r.n_samples} samples, parameters only", r.theirs, r.baseline, r.baseline_seconds),
    ):
        lines.append(
            f"  {name:<32}{e.accuracy:>9.3f} {e.pairs:>7}  {e.within_accuracy:>9.3f} "
            f"{e.within_pairs:>5}  {e.mae:>5.3f}  {e.mae_true:>7.3f}  {seconds:>6.2f} s   "
            f"{_internal(model)}"
        )
    return lines


# --- throughput ----------------------------------------------------------------------------


def scoring_throughput(model: RewardModel, held_out: Sequence[RatedOption]) -> list[str]:
    """Images per second: from bytes (decode + features + model), and the model alone."""
    images = [o for o in held_out if o.image is not None and o.original is not None][:200]
    started = time.perf_counter()
    for o in images:
        assert o.image is not None and o.original is not None
        features = fx.extract_bytes(o.image, o.original)
        model.predict([Candidate(features, o.api, o.parameters)])
    end_to_end = len(images) / (time.perf_counter() - started)

    candidates = [Candidate(o.features, o.api, o.parameters) for o in held_out]
    started = time.perf_counter()
    for c in candidates:
        model.predict([c])
    one_by_one = len(candidates) / (time.perf_counter() - started)
    rounds = 20
    started = time.perf_counter()
    for _ in range(rounds):
        model.predict(candidates)
    batched = rounds * len(candidates) / (time.perf_counter() - started)
    rows = (
        (f"from bytes, one per call ({len(images)} images)", end_to_end),
        ("model only, one per call", one_by_one),
        (f"model only, batches of {len(candidates)}", batched),
    )
    return [f"  {label:<38}{rate:>10.1f} images/s" for label, rate in rows] + [
        "  (from bytes = decode the PNG result and the JPEG original, features, model)"
    ]


async def main(quick: bool = False) -> None:
    # as the ML service runs it: its default thread count, not torch's one-per-core
    threads = torch.get_num_threads()
    torch.set_num_threads(Settings.model_fields["torch_num_threads"].default)
    try:
        await _run(quick)
    finally:
        torch.set_num_threads(threads)


async def _run(quick: bool) -> None:
    run_started = time.perf_counter()
    sizes = (200,) if quick else (200, 2000)
    n_held_out = 100 if quick else 500
    config = TrainConfig(epochs=100) if quick else TrainConfig()
    workers = max(1, min(4, os.cpu_count() or 1))
    mode = "quick" if quick else "full"
    _say(f"reward model benchmark ({mode})")
    _say(
        f"data: {max(sizes) // 2} training uploads and {n_held_out} held-out uploads, two "
        f"options each, rendered by LocalEngine with the seed prompt on {workers} processes"
    )
    started = time.perf_counter()
    options = await rated_data_set(range(max(sizes) // 2), False, workers, "training")
    held_out = await rated_data_set(
        range(HELD_OUT_SEED_OFFSET, HELD_OUT_SEED_OFFSET + n_held_out), True, workers, "held out"
    )
    data_seconds = time.perf_counter() - started
    everything = [*options, *held_out]
    render = np.array([o.render_seconds for o in everything])
    true = np.array([o.true for o in everything])
    stars = np.bincount([o.stars for o in everything], minlength=6)[1:]
    within_gaps = np.abs(true[0::2] - true[1::2])

    # torch's first fit pays one-off set-up costs that no later retrain does
    train(_samples(options[:20]), load_search_space(), TrainConfig(epochs=2, members=1))
    results: list[SizeResult] = []
    for size in sizes:
        _say(f"training at {size} samples ({config.epochs} epochs, {config.members} members)")
        results.append(train_at(size, options, held_out, config))
        _say("\n".join(_size_lines(results[-1])))
    _say(f"scoring throughput (the {sizes[-1]}-sample model)")
    throughput = scoring_throughput(results[-1].model, held_out)
    _say("\n".join(throughput))

    best = results[-1]
    met = best.ours.accuracy >= TARGET_ACCURACY and best.ours.accuracy > best.theirs.accuracy
    summary = [
        "",
        "=" * 100,
        f"reward model benchmark summary ({mode} run)",
        "=" * 100,
        f"data: {len(everything)} images from {len(everything) // 2} synthetic uploads in "
        f"{data_seconds:.0f} s on {workers} processes ({len(everything) / data_seconds:.1f} "
        f"images/s rendered, rated and featurized); LocalEngine render p50 "
        f"{np.median(render) * 1000:.0f} ms, p95 {np.percentile(render, 95) * 1000:.0f} ms",
        f"  true ratings mean {true.mean():.2f} sd {true.std():.2f}; stars 1-5: "
        + " ".join(str(n) for n in stars)
        + f"; options of one upload {MIN_GAP:g}+ apart: {np.mean(within_gaps >= MIN_GAP):.0%}",
        f"held out: {len(held_out)} images of {n_held_out} uploads never trained on; pairwise = "
        f"all pairs whose true ratings differ by >= {MIN_GAP:g}, across and within uploads; "
        "torch threads "
        f"{torch.get_num_threads()}",
        *_size_lines(results[0]),
        *(line for r in results[1:] for line in _size_lines(r)[1:]),
        f"scoring throughput (the {sizes[-1]}-sample model)",
        *throughput,
        f"  target: held-out pairwise accuracy >= {TARGET_ACCURACY} and above the "
        f"parameters-only baseline: {'MET' if met else 'NOT MET'} "
        f"({best.ours.accuracy:.2f} vs baseline {best.theirs.accuracy:.2f}, "
        f"at {best.n_samples} samples)",
        f"total time {time.perf_counter() - run_started:.0f} s",
        "=" * 100,
    ]
    _say("\n".join(summary))
