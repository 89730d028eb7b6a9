"""Image features: determinism, each feature's response to the edit it measures, decoding."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image, ImageEnhance, ImageFilter

from gateway.providers.base import RenderRequest
from gateway.providers.local_engine import LocalEngine
from ml_service.images.features import (
    FEATURE_NAMES,
    FEATURE_VERSION,
    decode,
    downscale_jpeg,
    extract,
    extract_bytes,
    load_optional_embedder,
    reference_bytes,
)
from shared.errors import InvalidInput, LatinaError
from tests.images import interior

Pixels = npt.NDArray[np.float32]
COMPARISON = (
    "has_original",
    "ssim",
    "edge_f1",
    "histogram_correlation",
    "delta_sharpness",
    "delta_saturation",
    "delta_exposure",
)
ROOM_PNG = interior(512, 384, fmt="PNG")  # lossless: no JPEG ringing in the "clean" image
ROOM = decode(ROOM_PNG)


def _png(image: Image.Image | Pixels) -> bytes:
    if not isinstance(image, Image.Image):
        image = Image.fromarray((np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _features(result: Pixels, original: Pixels | None = None) -> dict[str, float]:
    return dict(zip(FEATURE_NAMES, extract(result, original).tolist(), strict=True))


def _blurred(radius: float) -> Pixels:
    return decode(_png(Image.open(io.BytesIO(ROOM_PNG)).filter(ImageFilter.GaussianBlur(radius))))


def _mosaic(seed: int = 5) -> Pixels:
    """An unrelated image: random 16-pixel colour tiles, the room's size."""
    tiles = np.random.default_rng(seed).random((24, 32, 3), dtype=np.float32)
    mosaic: Pixels = np.repeat(np.repeat(tiles, 16, axis=0), 16, axis=1)
    return mosaic


def test_an_original_prepared_once_compares_as_the_original_itself() -> None:
    original = interior(300, 200)
    prepared = reference_bytes(original)
    for result in (downscale_jpeg(_png(_blurred(1.0))), _png(_mosaic()), interior(150, 100)):
        alone = extract_bytes(result, original)
        shared = extract(decode(result), against=prepared)
        assert np.array_equal(alone, shared)
        assert shared[FEATURE_NAMES.index("has_original")] == 1.0


def test_same_bytes_give_the_same_finite_vector_of_the_declared_length() -> None:
    original = interior(300, 200)
    result = downscale_jpeg(_png(_blurred(1.0)))

    first = extract_bytes(result, original)
    second = extract_bytes(bytes(result), bytes(original))

    assert first.dtype == np.float32
    assert first.shape == (len(FEATURE_NAMES),)
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    assert np.isfinite(first).all()
    assert np.array_equal(first, second)
    assert FEATURE_VERSION


def test_without_an_original_the_comparison_entries_are_neutral() -> None:
    alone, compared = _features(ROOM), _features(ROOM, ROOM)

    assert [alone[name] for name in COMPARISON] == [0.0] * len(COMPARISON)
    assert compared["has_original"] == 1.0
    assert {name: alone[name] for name in FEATURE_NAMES if name not in COMPARISON} == {
        name: compared[name] for name in FEATURE_NAMES if name not in COMPARISON
    }


def test_a_blurred_image_has_lower_sharpness_and_edge_density() -> None:
    sharp, blurred = _features(ROOM), _features(_blurred(2.0), ROOM)

    assert blurred["sharpness"] < sharp["sharpness"] - 1.0
    assert blurred["edge_density"] < sharp["edge_density"]
    assert blurred["delta_sharpness"] < -1.0


def test_added_gaussian_noise_raises_the_noise_estimate() -> None:
    grain = np.random.default_rng(0).normal(0.0, 0.03, ROOM.shape).astype(np.float32)
    noisy = np.clip(ROOM + grain, 0.0, 1.0)

    clean, noisy_features = _features(ROOM)["noise"], _features(noisy)["noise"]

    assert noisy_features > clean + 1.0
    # About 0.03 x 255 = 7.7 levels per channel, ~5.8 in luminance: log1p(5.8) = 1.9.
    assert noisy_features == pytest.approx(1.9, abs=0.3)


def test_a_darkened_image_has_lower_exposure_and_more_crushed_shadows() -> None:
    # A quarter of the light, with the darkest tones pushed to black as in an underexposed shot.
    dark = np.clip(ROOM * 0.25 - 0.06, 0.0, 1.0)

    bright, dimmed = _features(ROOM), _features(dark, ROOM)

    assert dimmed["exposure"] < bright["exposure"] - 0.3
    assert dimmed["crushed_shadows"] > bright["crushed_shadows"] + 0.05
    assert dimmed["delta_exposure"] < -0.3


def test_a_more_saturated_image_has_higher_saturation_and_colourfulness() -> None:
    vivid = decode(_png(ImageEnhance.Color(Image.open(io.BytesIO(ROOM_PNG))).enhance(1.8)))

    plain, boosted = _features(ROOM), _features(vivid, ROOM)

    assert boosted["saturation_mean"] > plain["saturation_mean"] + 0.05
    assert boosted["colourfulness"] > plain["colourfulness"] + 0.03
    assert boosted["delta_saturation"] > 0.05


def test_ssim_is_one_against_itself_and_low_against_an_unrelated_image() -> None:
    assert _features(ROOM, ROOM)["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert _features(_mosaic(), ROOM)["ssim"] < 0.3


def test_an_original_of_another_size_is_compared_at_the_common_size() -> None:
    half = decode(_png(Image.open(io.BytesIO(ROOM_PNG)).resize((256, 192), Image.Resampling.BOX)))

    features = _features(ROOM, half)

    assert features["ssim"] > 0.9
    assert features["edge_f1"] > 0.8


def test_edges_overlap_more_with_a_blurred_copy_than_a_shifted_or_unrelated_image() -> None:
    shifted = np.roll(ROOM, (7, 11), axis=(0, 1))

    blurred = _features(_blurred(1.0), ROOM)["edge_f1"]

    assert blurred > 0.8
    assert blurred > _features(shifted, ROOM)["edge_f1"] + 0.5
    assert blurred > _features(_mosaic(), ROOM)["edge_f1"] + 0.5


def test_histogram_correlation_drops_when_the_tones_move() -> None:
    dark = np.clip(ROOM * 0.25 - 0.06, 0.0, 1.0)

    assert _features(ROOM, ROOM)["histogram_correlation"] == pytest.approx(1.0)
    assert _features(dark, ROOM)["histogram_correlation"] < 0.5


def test_downscale_jpeg_gives_a_jpeg_no_longer_than_512_pixels() -> None:
    large = _png(Image.open(io.BytesIO(interior(1200, 800))))

    small = Image.open(io.BytesIO(downscale_jpeg(large)))
    untouched = Image.open(io.BytesIO(downscale_jpeg(interior(300, 200))))

    assert small.format == "JPEG"
    assert small.size == (512, 341)
    assert untouched.size == (300, 200)  # never upscaled


def test_decode_and_downscale_honour_the_exif_orientation() -> None:
    stored = Image.new("RGB", (120, 60), (255, 0, 0))
    stored.paste((0, 0, 255), (60, 0, 120, 60))  # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": the left half goes on top
    data = io.BytesIO()
    stored.save(data, format="JPEG", exif=exif, quality=95)

    pixels = decode(data.getvalue())
    shrunk = Image.open(io.BytesIO(downscale_jpeg(data.getvalue(), max_side=40)))

    assert pixels.shape == (120, 60, 3)
    assert pixels.dtype == np.float32
    assert pixels.min() >= 0.0 and pixels.max() <= 1.0
    top, bottom = pixels[:50].mean(axis=(0, 1)), pixels[70:].mean(axis=(0, 1))
    assert top[0] > 0.9 and top[2] < 0.1
    assert bottom[2] > 0.9 and bottom[0] < 0.1
    assert shrunk.size == (20, 40)
    assert 0x0112 not in shrunk.getexif()


def test_transparency_is_flattened_onto_white() -> None:
    clear = _png(Image.new("RGBA", (64, 64), (0, 0, 0, 0)))

    assert decode(clear).min() == 1.0


def test_undecodable_bytes_are_invalid_input() -> None:
    with pytest.raises(InvalidInput) as caught:
        decode(b"\xff\xd8\xff not really a jpeg")

    assert caught.value.code == "corrupt_image"


def test_extract_rejects_an_array_that_is_not_rgb() -> None:
    with pytest.raises(ValueError, match="h x w x 3"):
        extract(ROOM[..., 0])


def test_no_embedder_is_loaded_unless_a_path_is_configured() -> None:
    assert load_optional_embedder(None) is None
    with pytest.raises(LatinaError) as caught:
        load_optional_embedder(Path("/models/clip.onnx"))
    assert caught.value.code == "embedder_unavailable"


async def test_features_follow_the_local_engine_knobs() -> None:
    original = interior(320, 240, fmt="PNG")
    engine = LocalEngine()

    async def features(prompt: str = "a living room", **parameters: float) -> dict[str, float]:
        request = RenderRequest(
            api="stable_diffusion",
            image=original,
            content_type="image/png",
            width=320,
            height=240,
            prompt=prompt,
            negative_prompt="",
            parameters={
                "prompt_strength": 1.0,
                "guidance_scale": 12.0,
                "num_inference_steps": 40,
                "controlnet_conditioning_scale": 0.8,
                **parameters,
            },
            seed=3,
        )
        rendered = await engine.render(request)
        return dict(zip(FEATURE_NAMES, extract_bytes(rendered.image, original), strict=True))

    untouched = await features(prompt_strength=0.0)
    edited = await features()
    vibrant, muted = await features("a vibrant living room"), await features("a muted living room")
    bright = await features("a bright airy living room")
    soft = await features(controlnet_conditioning_scale=0.0)
    kept = await features(controlnet_conditioning_scale=1.5)

    assert untouched["ssim"] == pytest.approx(1.0, abs=1e-3)
    assert untouched["edge_f1"] == pytest.approx(1.0)
    assert edited["ssim"] < untouched["ssim"] - 0.05
    assert vibrant["saturation_mean"] > muted["saturation_mean"] + 0.03
    assert vibrant["colourfulness"] > muted["colourfulness"]
    assert bright["exposure"] > edited["exposure"] + 0.01
    assert kept["sharpness"] > soft["sharpness"] + 0.2
