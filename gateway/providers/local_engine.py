"""The offline provider: a deterministic Pillow + NumPy enhancement driven by the arm's parameters.

(Over 300 lines: the knobs, their mapping from both arms and the image operations are one engine.)

Both arms are mapped onto four common knobs:

* strength: ``init_strength`` (leonardo) / ``prompt_strength`` (stable_diffusion) - how far
  the result moves from the original (a blend of original and fully processed image);
* guidance: ``guidance_scale`` (both) - the intensity of every tone, colour and clarity edit;
* structure: ``controlnet_weight`` / ``controlnet_conditioning_scale`` - how strongly edges and
  layout of the original are kept;
* steps: fixed 30 (leonardo) / ``num_inference_steps`` - the number of refinement passes.

The fully processed target is: white balance toward neutral (grey world on mid-tones), an
exposure gamma toward mid-grey, an S tone curve (contrast), large-radius local contrast,
vibrance (boosts muted colours more than saturated ones) and fine clarity (unsharp mask); each
amount scales with the guidance intensity (0.25 at guidance 3, 1.0 at 15, at most 1.3).
``round(steps / 10)`` passes (1-6) each move the image 30% of the remaining way to the target
(2 passes reach 51%, 3 reach 66%, 6 reach 88%); before each pass the target is mixed with a
slightly blurred copy of itself, by ``0.6 * (1 - structure / 1.5)``: more passes converge
further and come out smoother, and low structure softens edges. Structure then puts the
original's fine detail back along an edge map of the original, in proportion
``structure / 1.5``. Strength finally blends original and result; the seed drives a mild
luminance film grain (sigma ``0.01 * strength``).

The prompts nudge one knob each, by plain keyword match (case-insensitive, whole words):

* prompt "warm", "cozy"/"cosy", "golden" → warmer white balance; "cool", "cold" → cooler
* prompt "bright", "airy", "natural light", "daylight", "sunlit" → brighter exposure target
* prompt "high contrast", "dramatic", "punchy" → stronger tone curve
* prompt "vibrant", "vivid", "colorful" → more vibrance; "muted", "desaturated", "pastel" → less
* prompt "sharp", "crisp", "detailed" → more clarity
* negative "saturated"/"oversaturated" → less vibrance; "dark", "underexposed", "dim" → brighter;
  "overexposed", "washed out", "blown out" → darker; "blurry", "blurred", "soft focus",
  "out of focus" → more clarity; "low contrast", "flat", "dull" → more contrast;
  "noise", "noisy", "grain", "grainy" → no film grain

Opposite cues cancel. Images above ~1 megapixel are processed at that size (the pipeline costs
about 0.15 s there) and the edit, result minus input, is scaled up onto the full-size original,
which keeps its own finest detail.
"""

from __future__ import annotations

import asyncio
import io
import math
import re
from dataclasses import asdict, dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from gateway.providers.base import ProviderName, RenderRequest, RenderResult
from shared.errors import UpstreamError

F32 = npt.NDArray[np.float32]

ENGINE_VERSION: Final = "local-1"
LEONARDO_STEPS: Final = 30
MAX_PASSES: Final = 6
PASS_RATE: Final = 0.3
WORK_MAX_PIXELS: Final = 1_050_000  # 1024 x 1024 still runs at full size
_LUMA: Final = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)
_PARAMETERS: Final = {
    "leonardo": ("init_strength", "guidance_scale", "controlnet_weight", None),
    "stable_diffusion": (
        "prompt_strength",
        "guidance_scale",
        "controlnet_conditioning_scale",
        "num_inference_steps",
    ),
}
_CUES: Final = {
    "prompt": (
        (r"warm|warmer|cozy|cosy|golden", "warmth", 1),
        (r"cool|cold", "warmth", -1),
        (r"bright|airy|natural light|daylight|sunlit", "exposure", 1),
        (r"high[- ]contrast|dramatic|punchy", "contrast", 1),
        (r"vibrant|vivid|colou?rful", "saturation", 1),
        (r"muted|desaturated|pastel", "saturation", -1),
        (r"sharp|crisp|detailed", "clarity", 1),
    ),
    "negative": (
        (r"(over)?saturated", "saturation", -1),
        (r"dark|underexposed|dim", "exposure", 1),
        (r"overexposed|washed[- ]out|blown[- ]out", "exposure", -1),
        (r"blurry|blurred|soft focus|out of focus", "clarity", 1),
        (r"low[- ]contrast|flat|dull", "contrast", 1),
        (r"noise|noisy|grain|grainy", "grain", -1),
    ),
}


@dataclass(frozen=True)
class Knobs:
    """The effective settings of one render (reported in the result's metadata)."""

    strength: float
    guidance: float
    structure: float
    steps: int
    passes: int
    intensity: float
    cues: dict[str, int]


def knobs_for(request: RenderRequest) -> Knobs:
    """Map an arm's parameters and the prompts onto the engine's knobs.

    Raises:
        UpstreamError: ``invalid_render_parameters`` for an unknown arm or a missing or
            non-finite parameter.
    """
    names = _PARAMETERS.get(request.api)
    if names is None:
        raise _bad_parameters(f"the local engine has no mapping for the {request.api!r} arm")
    values: list[float] = []
    for name in names:
        raw = LEONARDO_STEPS if name is None else request.parameters.get(name)
        if not isinstance(raw, int | float) or not math.isfinite(raw):
            raise _bad_parameters(f"parameter {name!r} is missing or not a finite number")
        values.append(float(raw))
    strength, guidance, structure, steps = values
    return Knobs(
        strength=min(max(strength, 0.0), 1.0),
        guidance=guidance,
        structure=min(max(structure, 0.0), 1.5),
        steps=round(steps),
        passes=min(max(round(steps / 10), 1), MAX_PASSES),
        intensity=0.25 + 0.75 * min(max((guidance - 3.0) / 12.0, 0.0), 1.4),
        cues=prompt_cues(request.prompt, request.negative_prompt),
    )


def prompt_cues(prompt: str, negative_prompt: str) -> dict[str, int]:
    """Each knob's keyword nudge, -1, 0 or +1 (see the module docstring for the words)."""
    cues = dict.fromkeys(("warmth", "exposure", "contrast", "saturation", "clarity", "grain"), 0)
    for text, rules in ((prompt, _CUES["prompt"]), (negative_prompt, _CUES["negative"])):
        for pattern, knob, direction in rules:
            if re.search(rf"\b(?:{pattern})\b", text, flags=re.IGNORECASE):
                cues[knob] += direction
    return {knob: max(-1, min(1, value)) for knob, value in cues.items()}


class LocalEngine:
    """``ImageProvider`` that renders offline; the CPU work runs in a worker thread."""

    name: ProviderName = "local"

    async def render(self, request: RenderRequest) -> RenderResult:
        """Render one variant of ``request.image``: a PNG of the same size.

        Raises:
            UpstreamError: ``invalid_render_parameters`` or ``local_render_failed``.
        """
        knobs = knobs_for(request)
        return await asyncio.to_thread(self._render, request, knobs)

    def _render(self, request: RenderRequest, knobs: Knobs) -> RenderResult:
        try:
            with Image.open(io.BytesIO(request.image), formats=["PNG", "JPEG", "WEBP"]) as src:
                original = src.convert("RGB")
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
            raise UpstreamError(
                "the local engine could not decode the original image",
                upstream="local",
                code="local_render_failed",
            ) from exc
        rendered, work_size = enhance(original, knobs, request.seed)
        out = io.BytesIO()
        rendered.save(out, format="PNG", compress_level=1)  # speed over size: a local store
        return RenderResult(
            image=out.getvalue(),
            content_type="image/png",
            width=rendered.width,
            height=rendered.height,
            provider=self.name,
            metadata={
                "engine": ENGINE_VERSION,
                "api": request.api,
                "seed": request.seed,
                "knobs": asdict(knobs),
                "work_size": list(work_size),
            },
        )


def enhance(image: Image.Image, knobs: Knobs, seed: int) -> tuple[Image.Image, tuple[int, int]]:
    """Apply the pipeline to an RGB image; returns the result and the size it was computed at."""
    width, height = image.size
    factor = math.sqrt(WORK_MAX_PIXELS / (width * height))
    if factor >= 1.0:
        return _from_planes(_pipeline(_to_planes(image), knobs, seed)), image.size
    work_size = (max(1, round(width * factor)), max(1, round(height * factor)))
    small = image.resize(work_size, Image.Resampling.BOX)
    edited = _from_planes(_pipeline(_to_planes(small), knobs, seed))
    return _transfer_edit(image, small, edited), work_size


def _pipeline(x0: F32, knobs: Knobs, seed: int) -> F32:
    """The render on float planes ``(3, h, w)`` in [0, 1]; in-place steps keep it fast."""
    cue, amount = knobs.cues, knobs.intensity
    lum0 = _luma(x0)

    x = x0 * _white_balance(x0, lum0, amount, cue["warmth"])[:, None, None]
    lum = _luma(x)
    lut = _tone_curve(
        mean=float(lum[::4, ::4].mean()),
        exposure=0.8 * amount,
        target=0.45 + 0.07 * cue["exposure"],
        contrast=0.7 * amount + 0.3 * cue["contrast"],
    )
    toned = lut[np.clip(lum * 4095.0 + 0.5, 0, 4095).astype(np.intp)]
    detail = lum - _large_blur(lum)
    np.clip(detail, -0.08, 0.08, out=detail)  # texture gains; big steps (windows) get no halo
    detail *= 0.6 * amount + 0.2 * cue["clarity"]  # local contrast
    toned += detail
    np.maximum(toned, 0.0, out=toned)
    x *= (toned / np.maximum(lum, 1e-4))[None]  # luminance changes, hue stays
    _vibrance(x, toned, 0.7 * amount + 0.35 * cue["saturation"])
    sharpen = x - _blur(x)
    sharpen *= 1.0 * amount + 0.5 * cue["clarity"]
    x += sharpen
    target = np.clip(x, 0.0, 1.0, out=x)

    soften = 0.6 * (1.0 - knobs.structure / 1.5)
    current = x0.copy()
    for _ in range(knobs.passes):
        if soften > 0.0:
            # The target, not the current image, is smoothed: the softening accumulates over
            # the passes instead of being undone by the next pull toward a sharp target.
            smooth = _blur(target, 2)
            smooth -= target
            smooth *= soften
            target += smooth
        step = target - current
        step *= PASS_RATE
        current += step

    restore = knobs.structure / 1.5
    if restore > 0.0:
        # (x0 - blur(x0)) - (current - blur(current)): the fine detail the edit took away
        gap = x0 - _blur(x0, 2)
        gap -= current
        gap += _blur(current, 2)
        gap *= (restore * _edge_map(lum0))[None]
        current += gap

    current -= x0
    current *= knobs.strength
    current += x0
    if cue["grain"] >= 0 and knobs.strength > 0.0:
        grain = np.random.default_rng(seed % 2**64).standard_normal(lum0.shape, np.float32)
        grain *= 0.01 * knobs.strength
        current += grain[None]
    return np.clip(current, 0.0, 1.0, out=current)


def _white_balance(x: F32, lum: F32, amount: float, warmth: int) -> F32:
    # Grey world on mid-tones only: blown windows and deep shadows carry no cast information.
    sample, sample_lum = x[:, ::4, ::4], lum[::4, ::4]
    mask = (sample_lum > 0.08) & (sample_lum < 0.92)
    means = sample[:, mask].mean(axis=1) if mask.sum() > 64 else sample.mean(axis=(1, 2))
    gains: F32 = np.clip((means.mean() / np.maximum(means, 1e-3)) ** (0.8 * amount), 0.8, 1.25)
    gains = gains * np.array([1 + 0.05 * warmth, 1.0, 1 - 0.05 * warmth], dtype=np.float32)
    return (gains / float(gains @ _LUMA)).astype(np.float32)  # keep overall luminance


def _tone_curve(*, mean: float, exposure: float, target: float, contrast: float) -> F32:
    """A 4096-entry LUT: a gamma pulling mean luminance toward ``target``, then an S curve."""
    mean = min(max(mean, 0.02), 0.98)
    goal = mean + min(exposure, 1.0) * (target - mean)
    gamma = min(max(math.log(goal) / math.log(mean), 0.55), 1.8)
    u: F32 = np.linspace(0.0, 1.0, 4096, dtype=np.float32) ** gamma
    c = min(max(contrast, -0.6), 1.0)  # within [-1, 1] the curve stays inside [0, 1]
    return (u + c * (u * u * (3.0 - 2.0 * u) - u)).astype(np.float32)


def _vibrance(x: F32, lum: F32, amount: float) -> None:
    """Scale each pixel's distance from its luminance ``lum``, in place."""
    if amount >= 0.0:
        # Muted colours gain most; already-saturated ones barely move and do not clip.
        factor = np.maximum(np.maximum(x[0], x[1]), x[2])
        factor -= np.minimum(np.minimum(x[0], x[1]), x[2])
        np.clip(factor, 0.0, 1.0, out=factor)
        factor *= -amount
        factor += 1.0 + amount
    else:
        factor = np.full_like(lum, 1.0 + max(amount, -0.9))
    x -= lum[None]
    x *= factor[None]
    x += lum[None]


def _edge_map(lum: F32) -> F32:
    """Where the original has edges, 0-1: gradient magnitude, saturating at half its p90."""
    grad = np.abs(np.diff(lum, axis=1, append=lum[:, -1:]))
    grad += np.abs(np.diff(lum, axis=0, append=lum[-1:, :]))
    grad = _blur(grad)  # a band around each edge, not a one-pixel line
    reference = float(np.percentile(grad[::3, ::3], 90)) + 1e-4
    edges: F32 = np.clip(2.0 * grad / reference, 0.0, 1.0)
    return edges


def _luma(x: F32) -> F32:
    out: F32 = x[0] * _LUMA[0]
    out += x[1] * _LUMA[1]
    out += x[2] * _LUMA[2]
    return out


def _blur(a: F32, iterations: int = 1) -> F32:
    """Separable [1, 2, 1] / 4 blur over the last two axes, repeated, edges replicated."""
    out = np.array(a, dtype=np.float32, order="C")
    if min(out.shape[-2:]) < 3:
        return out
    scratch = np.empty_like(out)
    for _ in range(iterations):
        _smooth_axis(out, scratch, rows=True)
        _smooth_axis(scratch, out, rows=False)
    out *= np.float32(0.0625**iterations)
    return out


def _smooth_axis(src: F32, dst: F32, *, rows: bool) -> None:
    """``dst = (prev + 2 * this + next)`` along rows or columns of C-contiguous arrays."""
    # One flat shifted add is several times faster than per-row slicing along the last axis;
    # the values it computes across row and plane borders are wrong and rewritten below.
    shift = src.shape[-1] if rows else 1
    flat_src, flat_dst = src.reshape(-1), dst.reshape(-1)
    middle = flat_dst[shift:-shift]
    np.add(flat_src[: -2 * shift], flat_src[2 * shift :], out=middle)
    middle += flat_src[shift:-shift]
    middle += flat_src[shift:-shift]
    for edge, inner in ((0, 1), (-1, -2)):
        if rows:
            np.multiply(src[..., edge, :], 3.0, out=dst[..., edge, :])
            dst[..., edge, :] += src[..., inner, :]
        else:
            np.multiply(src[..., edge], 3.0, out=dst[..., edge])
            dst[..., edge] += src[..., inner]


def _large_blur(lum: F32) -> F32:
    # A ~2%-of-the-frame blur, computed on a 64-pixel proxy: full-size would cost 100x more.
    height, width = lum.shape
    step = max(1.0, max(height, width) / 64)
    proxy = (max(1, round(width / step)), max(1, round(height / step)))
    small = np.asarray(Image.fromarray(lum).resize(proxy, Image.Resampling.BOX))
    smooth = np.ascontiguousarray(_blur(small.astype(np.float32), 3))
    return np.asarray(Image.fromarray(smooth).resize((width, height), Image.Resampling.BILINEAR))


def _transfer_edit(original: Image.Image, small: Image.Image, edited: Image.Image) -> Image.Image:
    """Scale the edit (``edited - small``) up onto ``original``, band by band to bound memory."""
    width, height = original.size
    sw, sh = small.size
    out = np.empty((height, width, 3), dtype=np.uint8)
    band = 256
    for top in range(0, height, band):
        bottom = min(top + band, height)
        box = (0.0, top * sh / height, float(sw), bottom * sh / height)
        size = (width, bottom - top)
        up_edit = np.asarray(edited.resize(size, Image.Resampling.BILINEAR, box=box), np.int16)
        up_small = np.asarray(small.resize(size, Image.Resampling.BILINEAR, box=box), np.int16)
        rows = np.asarray(original.crop((0, top, width, bottom)), dtype=np.int16)
        out[top:bottom] = np.clip(rows + up_edit - up_small, 0, 255).astype(np.uint8)
    return Image.fromarray(out)


def _to_planes(image: Image.Image) -> F32:
    # Channel planes rather than interleaved pixels: every blur and blend runs on contiguous rows.
    planes = np.stack([np.asarray(band, dtype=np.float32) for band in image.split()])
    planes *= np.float32(1 / 255)
    return planes


def _from_planes(x: F32) -> Image.Image:
    bands = []
    for plane in x:
        scaled = plane * 255.0
        scaled += 0.5
        bands.append(Image.fromarray(scaled.astype(np.uint8)))
    return Image.merge("RGB", bands)


def _bad_parameters(message: str) -> UpstreamError:
    return UpstreamError(message, upstream="local", code="invalid_render_parameters")


__all__ = ["Knobs", "LocalEngine", "enhance", "knobs_for", "prompt_cues"]
