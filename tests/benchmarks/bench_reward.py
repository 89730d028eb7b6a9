"""The reward model on images it has never seen: does it rank them better than the parameters do?

Data: synthetic interiors (layout, materials, colours, size, and how badly each was shot: exposure,
colour cast, flat contrast, softness, sensor noise all vary), each turned into two options, one
per API, with parameters drawn uniformly from the search space and rendered by ``LocalEngine``
with the seed prompt. A simulated trainer rates every option from the *image*: a hidden quality
computed from the result and its original with measures of its own (CIELAB exposure, contrast,
cast and chroma; clipping; acutance and noise against the original; gradient structure kept),
not from ``feature_extraction`` and never from the parameters, which matter only through what
they do to the picture. A rating is that quality + N(0, 0.5), rounded and clipped to 1..5.

Reported, for the reward model and the parameters-only baseline trained on the same samples:
pairwise accuracy on held-out uploads kept apart from training (pairs whose true, noise-free
ratings differ by >= 1; a predicted tie counts half), MAE against the held-out ratings, the
model's own internal held-out metric, training time at 200 and 2,000 samples, and scoring
throughput from image bytes (decode + features + model) and of the model alone.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image, ImageDraw, ImageFilter
from scipy import ndimage

from gateway.providers.base import ApiName, RenderRequest
from gateway.providers.local_engine import LocalEngine
from ml_service import feature_extraction
from ml_service.reward_model import (
    Candidate,
    RewardModel,
    Sample,
    TrainConfig,
    train,
    train_parameters_only,
)
from shared.search_space import load_search_space
from tests.benchmarks import simulated_rater

F64 = npt.NDArray[np.float64]

APIS: tuple[ApiName, ...] = ("leonardo", "stable_diffusion")
SEED_PROMPT = Path(__file__).resolve().parents[2] / "prompts" / "versions" / "v1.0.0.json"
NOISE_SD = 0.5
MIN_GAP = 1.0
TARGET_ACCURACY = 0.85
DATA_SEED = 7
HELD_OUT_SEED_OFFSET = 1_000_000  # held-out uploads come from seeds no training upload uses
RENDER_CONCURRENCY = 2
# (width, height): landscape, square and portrait, all under feature_extraction's 512 px.
SIZES = ((320, 240), (384, 288), (360, 240), (448, 336), (288, 288), (256, 320), (300, 400))


def _say(message: str) -> None:
    print(message, flush=True)


# --- uploads -------------------------------------------------------------------------------


def synthetic_room(seed: int) -> bytes:
    """A JPEG interior, the same for the same seed: a room box with furniture, badly or well shot."""
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
    gain = {"dark": rng.uniform(0.35, 0.65), "fine": rng.uniform(0.8, 1.05)}.get(
        str(shot), rng.uniform(1.15, 1.5)
    )
    x = x * gain
    cast = rng.uniform(-0.15, 0.15, 2)
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
    """Mean absolute high-pass (L* minus its 5 x 5 box mean) over mean absolute gradient scale."""
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
    residual = lightness - ndimage.median_filter(lightness, 3)
    local_var = ndimage.uniform_filter(lightness, 5)
    flat = np.abs(np.gradient(local_var)[0]) + np.abs(np.gradient(local_var)[1]) < 0.5
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


def true_rating(view: View) -> float:
    """The noise-free rating, 1..5: five stars less a penalty per visible fault."""
    faults = (
        abs(view.lightness - 58.0) / 14.0,  # too dark or too bright
        max(0.0, 18.0 - view.contrast) / 7.0 + max(0.0, view.contrast - 30.0) / 7.0,
        max(0.0, view.cast - 3.0) / 6.0,  # colour cast
        max(0.0, 10.0 - view.chroma) / 8.0 + max(0.0, view.chroma - 28.0) / 6.0,
        view.clipped * 6.0,  # blown highlights and crushed shadows
        max(0.0, -view.acutance) * 1.5 + max(0.0, view.acutance - 1.5),  # softened / crunchy
        max(0.0, view.noise - 0.8) / 1.0,
        max(0.0, 0.95 - view.structure) * 6.0,  # the room's layout drifted
    )
    return min(max(5.0 - sum(faults), 1.0), 5.0)


def star_rating(true: float, rng: np.random.Generator) -> int:
    return int(np.clip(np.rint(true + rng.normal(0.0, NOISE_SD)), 1, 5))


def _rgb(data: bytes) -> F64:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
