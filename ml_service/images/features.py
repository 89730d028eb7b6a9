"""Deterministic image features for the reward model; long, as each feature's definition sits here.

NumPy, Pillow and SciPy, nothing downloaded; the definitions below are the contract of the
stored vectors (``FEATURE_VERSION``), so they live beside the code that computes them.

``extract(result, original)`` returns one float32 vector, ``FEATURE_NAMES`` in order. The first
eighteen entries describe the result alone; the rest compare it with the original it was made
from, or hold a neutral value (0) with ``has_original = 0`` when there is no original.

Images are RGB float32 ``h x w x 3`` in [0, 1] as returned by ``decode`` (sRGB-encoded values,
longer side at most 512 px). The pixel-scale features (sharpness, noise, edges) depend on the
resolution, so callers should pass images decoded at the same ``max_side``.

Result features, each roughly O(1):

* ``mean_r``/``mean_g``/``mean_b``, ``std_r``/``std_g``/``std_b``: per-channel mean and std.
* ``saturation_mean``, ``saturation_std``: HSV saturation, ``(max - min) / max`` per pixel.
* ``hue_spread``: circular variance of hue, 0 (one hue) to 1, weighted by chroma so greys do
  not count; hue is the angle of the opponent vector ``(R - (G + B) / 2, sqrt(3) / 2 (G - B))``,
  the circle the HSV hexagon approximates. 0 for an image without colour.
* ``colourfulness``: Hasler and Suesstrunk (2003) on [0, 1] values (their 0-255 scale / 255).
* ``exposure``: mean luminance (Rec. 709 luma of the encoded values).
* ``contrast_rms``: std of luminance.
* ``dynamic_range``: luminance p99 - p1.
* ``clipped_highlights``, ``crushed_shadows``: fraction of pixels with luminance >= 0.98 and
  <= 0.02.
* ``sharpness``: ``log1p`` of the variance of the Laplacian of luminance in 8-bit units.
* ``noise``: ``log1p`` of sigma in 8-bit units, estimated robustly as 1.4826 x the median of
  ``|I * N| / 6`` with Immerkaer's mask ``N`` (zero on planes and linear ramps; the median
  ignores the few edge pixels).
* ``edge_density``: fraction of pixels on an edge: Sobel gradient magnitude (per pixel, Sobel
  / 8) above ``EDGE_THRESHOLD`` after non-maximum suppression across the edge. Without the
  suppression blur would widen strong edges and *raise* the density.

Comparison features (result against original):

* ``has_original``: 1, or 0 when no original was given (all comparison entries are then 0).
* ``ssim``: mean SSIM of luminance (Wang et al. 2004: gaussian window sigma 1.5, 11 taps,
  K1 = 0.01, K2 = 0.03, borders cropped), both images resized to their common size.
* ``edge_f1``: F1 of the two edge maps with a one-pixel tolerance (1 when both have no edges).
* ``histogram_correlation``: Pearson correlation of the 64-bin luminance histograms.
* ``delta_sharpness``, ``delta_saturation``, ``delta_exposure``: result minus original of
  ``sharpness``, ``saturation_mean`` and ``exposure``. Signed rather than absolute: whether the
  result is brighter or darker than the original matters to a rater, and ``|x|`` is easy for a
  model to recover from ``x`` but not the reverse.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage

from shared.errors import InvalidInput, LatinaError

F32 = npt.NDArray[np.float32]
Mask = npt.NDArray[np.bool_]

FEATURE_VERSION: Final = "f1"
_OWN_NAMES: Final = (
    "mean_r",
    "mean_g",
    "mean_b",
    "std_r",
    "std_g",
    "std_b",
    "saturation_mean",
    "saturation_std",
    "hue_spread",
    "colourfulness",
    "exposure",
    "contrast_rms",
    "dynamic_range",
    "clipped_highlights",
    "crushed_shadows",
    "sharpness",
    "noise",
    "edge_density",
)
_COMPARISON_NAMES: Final = (
    "has_original",
    "ssim",
    "edge_f1",
    "histogram_correlation",
    "delta_sharpness",
    "delta_saturation",
    "delta_exposure",
)
FEATURE_NAMES: Final[tuple[str, ...]] = _OWN_NAMES + _COMPARISON_NAMES

EDGE_THRESHOLD: Final = 0.05  # luminance change per pixel: a crisp step of 0.1 or more
MAX_PIXELS: Final = 80_000_000  # below Pillow's own bomb warning (~89 MP)
_LUMA: Final = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)
_TAN_22_5: Final = math.tan(math.pi / 8)
# (dy, dx) of the neighbour across an edge whose gradient is horizontal, vertical, along the
# main diagonal (gx * gy > 0) or along the other diagonal.
_ACROSS: Final = np.array([[0, 1], [1, 0], [1, 1], [1, -1]], dtype=np.intp)
_HIST_BINS: Final = 64
_SSIM_SIGMA: Final = 1.5
_SSIM_RADIUS: Final = 5
_SSIM_C1: Final = 0.01**2
_SSIM_C2: Final = 0.03**2
_INDEX: Final = {name: i for i, name in enumerate(_OWN_NAMES)}
_DELTAS: Final = ("sharpness", "saturation_mean", "exposure")
_DECODE_ERRORS: Final = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError)


class EmbeddingExtractor(Protocol):
    """A pretrained image embedding (CNN, CLIP) whose output could extend the feature vector.

    None ships: a local TorchScript or ONNX file could be wrapped in this shape later, loaded
    from a path setting by ``load_optional_embedder``. Nothing in the service requires one.
    """

    version: str

    def embed(self, image: F32) -> F32:
        """``h x w x 3`` RGB in [0, 1] -> a ``d`` float32 vector."""
        ...


def load_optional_embedder(path: Path | None) -> EmbeddingExtractor | None:
    """The configured embedding extractor; ``None`` when no path is configured (the default).

    Raises:
        LatinaError: ``embedder_unavailable`` when a path is set: no loader exists yet, and a
            setting that is silently ignored would be worse than failing at start-up.
    """
    if path is None:
        return None
    raise LatinaError(
        f"an embedding model was configured ({path}) but this version cannot load one",
        code="embedder_unavailable",
        hint="unset the embedding model path; the reward model uses the built-in features",
    )


def decode(data: bytes, max_side: int = 512) -> F32:
    """Decode a JPEG, PNG or WebP into RGB float32 ``h x w x 3`` in [0, 1].

    The image is turned upright by its EXIF orientation, alpha is flattened onto white, and it
    is downscaled (Lanczos) so that its longer side is at most ``max_side``; never upscaled.

    Raises:
        InvalidInput: ``corrupt_image`` or ``image_too_large`` (over ``MAX_PIXELS``).
    """
    rgb = _open_upright(data, max_side)
    pixels: F32 = np.asarray(rgb, dtype=np.float32)
    pixels *= np.float32(1 / 255)
    return pixels


def downscale_jpeg(data: bytes, max_side: int = 512, quality: int = 85) -> bytes:
    """Re-encode an image as an upright JPEG with longer side <= ``max_side`` and no metadata.

    Raises:
        InvalidInput: as ``decode``.
    """
    out = io.BytesIO()
    _open_upright(data, max_side).save(out, format="JPEG", quality=quality)
    return out.getvalue()


def extract_bytes(result: bytes, original: bytes | None = None) -> F32:
    """``extract`` on two encoded images, each decoded with ``decode``'s defaults.

    Raises:
        InvalidInput: as ``decode``.
    """
    return extract(decode(result), None if original is None else decode(original))


@dataclass(frozen=True)
class Reference:
    """What the comparison needs of an original, computed once when several results made
    from it are compared (the candidates of one upload)."""

    own: list[float]
    lum: F32
    edges: Mask


def reference(original: F32) -> Reference:
    return Reference(*_own_features(_planes(original)))


def reference_bytes(original: bytes) -> Reference:
    """``reference`` of an encoded original. Raises ``InvalidInput`` as ``decode``."""
    return reference(decode(original))


def extract(result: F32, original: F32 | None = None, *, against: Reference | None = None) -> F32:
    """The feature vector of ``result``, compared with ``original`` when given.

    Args:
        result: RGB ``h x w x 3`` in [0, 1] (values outside are clipped).
        original: The image ``result`` was made from, any size; ``None`` for none.
        against: The original as ``reference`` prepared it, instead of ``original``.

    Returns:
        float32 ``len(FEATURE_NAMES)``, finite, identical for identical inputs.

    Raises:
        ValueError: an array that is not ``h x w x 3`` or holds non-finite values.
    """
    own, lum, edges = _own_features(_planes(result))
    base = against if against is not None or original is None else reference(original)
    if base is None:
        comparison = [0.0] * len(_COMPARISON_NAMES)
    else:
        if lum.shape != base.lum.shape:
            size = (min(lum.shape[1], base.lum.shape[1]), min(lum.shape[0], base.lum.shape[0]))
            lum_c, base_lum_c = _resize(lum, size), _resize(base.lum, size)
            edges, base_edges = _edge_map(lum_c), _edge_map(base_lum_c)
        else:
            lum_c, base_lum_c, base_edges = lum, base.lum, base.edges
        comparison = [
            1.0,
            _ssim(lum_c, base_lum_c),
            _edge_f1(edges, base_edges),
            _histogram_correlation(lum, base.lum),
            *(own[_INDEX[name]] - base.own[_INDEX[name]] for name in _DELTAS),
        ]
    return np.array(own + comparison, dtype=np.float32)


def _own_features(planes: F32) -> tuple[list[float], F32, Mask]:
    """The result-only entries, plus the luminance and edge map the comparison reuses."""
    r, g, b = planes
    hi = planes.max(axis=0)
    chroma = hi - planes.min(axis=0)
    saturation = np.divide(chroma, hi, out=np.zeros_like(hi), where=hi > 1e-6)
    # Hue as the opponent vector: its length approximates chroma, so summing the vectors is
    # the chroma-weighted circular mean, with no per-pixel angle.
    u = r - 0.5 * (g + b)
    v = (math.sqrt(3) / 2) * (g - b)
    weight = float(np.sqrt(u * u + v * v).sum(dtype=np.float64))
    resultant = math.hypot(float(u.sum(dtype=np.float64)), float(v.sum(dtype=np.float64)))
    hue_spread = 1.0 - resultant / weight if weight > 1e-6 * u.size else 0.0
    rg = r - g
    yb = 0.5 * (r + g) - b
    colourfulness = math.hypot(float(rg.std()), float(yb.std())) + 0.3 * math.hypot(
        float(rg.mean()), float(yb.mean())
    )

    lum = _luminance(planes)
    p1, p99 = np.percentile(lum, [1.0, 99.0])
    laplacian, residual = _second_differences(lum)
    sigma = 1.4826 * float(np.median(np.abs(residual))) / 6.0
    edges = _edge_map(lum)
    own = [
        *(float(m) for m in planes.mean(axis=(1, 2), dtype=np.float64)),
        *(float(s) for s in planes.std(axis=(1, 2), dtype=np.float64)),
        float(saturation.mean(dtype=np.float64)),
        float(saturation.std(dtype=np.float64)),
        hue_spread,
        colourfulness,
        float(lum.mean(dtype=np.float64)),
        float(lum.std(dtype=np.float64)),
        float(p99 - p1),
        float(np.count_nonzero(lum >= 0.98)) / lum.size,
        float(np.count_nonzero(lum <= 0.02)) / lum.size,
        math.log1p(float(laplacian.var(dtype=np.float64)) * 255.0**2),
        math.log1p(sigma * 255.0),
        float(np.count_nonzero(edges)) / edges.size,
    ]
    return own, lum, edges


# The 3 x 3 filters below are shifted slices of one edge-padded copy: several times faster than
# scipy.ndimage for kernels this small. Edge padding by one pixel equals ndimage's "reflect".


def _second_differences(lum: F32) -> tuple[F32, F32]:
    """The 4-neighbour Laplacian and Immerkaer's residual (``[1, -2, 1]`` along both axes)."""
    p = np.pad(lum, 1, mode="edge")
    d2x = p[:, :-2] + p[:, 2:] - 2 * p[:, 1:-1]  # (h + 2) x w
    d2y = p[:-2, 1:-1] + p[2:, 1:-1] - 2 * lum
    laplacian: F32 = d2x[1:-1] + d2y
    residual: F32 = d2x[:-2] + d2x[2:] - 2 * d2x[1:-1]
    return laplacian, residual


def _edge_map(lum: F32) -> Mask:
    """Thin edges: gradient above ``EDGE_THRESHOLD`` and a maximum across the edge (Canny's
    non-maximum suppression over four directions, without hysteresis)."""
    p = np.pad(lum, 1, mode="edge")
    dx = p[:, 2:] - p[:, :-2]  # (h + 2) x w
    dy = p[2:] - p[:-2]  # h x (w + 2)
    gx = (dx[:-2] + dx[2:] + 2 * dx[1:-1]) * np.float32(0.125)  # Sobel / 8: per pixel
    gy = (dy[:, :-2] + dy[:, 2:] + 2 * dy[:, 1:-1]) * np.float32(0.125)
    magnitude = np.sqrt(gx * gx + gy * gy)
    # Only the few pixels above the threshold need the neighbour test: gather them by index.
    ys, xs = np.nonzero(magnitude > EDGE_THRESHOLD)
    cx, cy = gx[ys, xs], gy[ys, xs]
    ax, ay = np.abs(cx), np.abs(cy)
    direction = np.where(
        ay <= _TAN_22_5 * ax, 0, np.where(ax <= _TAN_22_5 * ay, 1, np.where(cx * cy > 0, 2, 3))
    )
    dy_, dx_ = _ACROSS[direction].T
    padded = np.pad(magnitude, 1)
    centre = magnitude[ys, xs]
    keep = (centre >= padded[ys + 1 + dy_, xs + 1 + dx_]) & (
        centre >= padded[ys + 1 - dy_, xs + 1 - dx_]
    )
    edges: Mask = np.zeros(lum.shape, dtype=bool)
    edges[ys[keep], xs[keep]] = True
    return edges


def _ssim(x: F32, y: F32) -> float:
    # As in Wang et al.'s reference code, images are first box-downsampled to a ~256-pixel short
    # side: SSIM's 11-pixel window is meant for that viewing scale (and it is 4x cheaper).
    factor = max(1, round(min(x.shape) / 256))
    x, y = _box_downsample(x, factor), _box_downsample(y, factor)

    def smooth(a: F32) -> F32:
        out: F32 = ndimage.gaussian_filter(a, _SSIM_SIGMA, truncate=_SSIM_RADIUS / _SSIM_SIGMA)
        return out

    mx, my = smooth(x), smooth(y)
    vx = smooth(x * x) - mx * mx
    vy = smooth(y * y) - my * my
    cov = smooth(x * y) - mx * my
    ssim_map = ((2 * mx * my + _SSIM_C1) * (2 * cov + _SSIM_C2)) / (
        (mx * mx + my * my + _SSIM_C1) * (vx + vy + _SSIM_C2)
    )
    r = _SSIM_RADIUS
    if min(ssim_map.shape) > 2 * r:
        ssim_map = ssim_map[r:-r, r:-r]  # the window runs off the image there
    return float(ssim_map.mean(dtype=np.float64))


def _box_downsample(a: F32, factor: int) -> F32:
    if factor == 1:
        return a
    height, width = a.shape[0] // factor * factor, a.shape[1] // factor * factor
    out = np.zeros((height // factor, width // factor), dtype=np.float32)
    for dy in range(factor):
        for dx in range(factor):
            out += a[dy:height:factor, dx:width:factor]
    out /= np.float32(factor * factor)
    return out


def _edge_f1(a: Mask, b: Mask) -> float:
    count_a, count_b = int(np.count_nonzero(a)), int(np.count_nonzero(b))
    if count_a == 0 or count_b == 0:
        return 1.0 if count_a == count_b else 0.0
    precision = np.count_nonzero(a & _dilate(b)) / count_a
    recall = np.count_nonzero(b & _dilate(a)) / count_b
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def _dilate(mask: Mask) -> Mask:
    """3 x 3 binary dilation, as two separable one-pixel spreads."""
    wide = mask.copy()
    wide[:, 1:] |= mask[:, :-1]
    wide[:, :-1] |= mask[:, 1:]
    out = wide.copy()
    out[1:] |= wide[:-1]
    out[:-1] |= wide[1:]
    return out


def _histogram_correlation(x: F32, y: F32) -> float:
    def histogram(lum: F32) -> npt.NDArray[np.float64]:
        bins = np.minimum((lum * _HIST_BINS).astype(np.intp), _HIST_BINS - 1)
        return np.bincount(bins.ravel(), minlength=_HIST_BINS) / lum.size

    hx, hy = histogram(x), histogram(y)
    hx -= hx.mean()
    hy -= hy.mean()
    norm = math.sqrt(float(hx @ hx) * float(hy @ hy))
    return float(hx @ hy) / norm if norm > 0 else 0.0


def _planes(image: F32) -> F32:
    """``h x w x 3`` -> contiguous ``3 x h x w`` float32 in [0, 1]: per-channel work on rows."""
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"expected an h x w x 3 RGB image, got shape {image.shape}")
    planes: F32 = np.array(np.moveaxis(image, 2, 0), dtype=np.float32, order="C")  # a copy
    if not np.isfinite(planes).all():
        raise ValueError("the image holds NaN or infinite values")
    return np.clip(planes, 0.0, 1.0, out=planes)


def _luminance(planes: F32) -> F32:
    lum: F32 = planes[0] * _LUMA[0]
    lum += planes[1] * _LUMA[1]
    lum += planes[2] * _LUMA[2]
    return lum


def _resize(lum: F32, size: tuple[int, int]) -> F32:
    resized: F32 = np.asarray(Image.fromarray(lum).resize(size, Image.Resampling.LANCZOS))
    return np.clip(resized, 0.0, 1.0)  # Lanczos overshoots a little at steps


def _open_upright(data: bytes, max_side: int) -> Image.Image:
    """Decode, orientate, flatten to RGB and downscale to ``max_side``; metadata dropped."""
    if max_side < 1:
        raise ValueError("max_side must be positive")
    try:
        with Image.open(io.BytesIO(data), formats=["JPEG", "PNG", "WEBP"]) as image:
            if image.width * image.height > MAX_PIXELS:
                raise InvalidInput(
                    f"the image is {image.width}x{image.height} pixels; "
                    f"the limit is {MAX_PIXELS} pixels",
                    code="image_too_large",
                )
            # JPEG only: decode at 1/2, 1/4 or 1/8 scale, keeping both sides >= max_side.
            image.draft("RGB", (max_side, max_side))
            try:
                upright = ImageOps.exif_transpose(image)
            except _DECODE_ERRORS:
                upright = image  # a malformed EXIF block: only the orientation is unknown
            rgb = _flatten(upright)
    except (*_DECODE_ERRORS, Image.DecompressionBombError) as exc:
        raise InvalidInput(
            "the image is truncated or corrupt and cannot be decoded", code="corrupt_image"
        ) from exc
    longer = max(rgb.size)
    if longer > max_side:
        scale = max_side / longer
        size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        rgb = rgb.resize(size, Image.Resampling.LANCZOS)
    rgb.info = {}  # no EXIF or ICC block travels into the re-encoded JPEG
    return rgb


def _flatten(image: Image.Image) -> Image.Image:
    """RGB, with any transparency composited onto white (as the gateway stores uploads)."""
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


__all__ = [
    "FEATURE_NAMES",
    "FEATURE_VERSION",
    "EmbeddingExtractor",
    "Reference",
    "decode",
    "downscale_jpeg",
    "extract",
    "extract_bytes",
    "load_optional_embedder",
    "reference",
    "reference_bytes",
]
