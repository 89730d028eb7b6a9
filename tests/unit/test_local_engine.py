"""The offline provider: determinism, what each knob does to the pixels, prompt cues, errors."""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image, ImageDraw

from gateway.providers.base import ApiName, RenderRequest, RenderResult
from gateway.providers.local_engine import LEONARDO_STEPS, WORK_MAX_PIXELS, LocalEngine, prompt_cues
from shared.errors import UpstreamError

Pixels = npt.NDArray[np.float32]
SD_PARAMETERS: dict[str, float | int] = {
    "prompt_strength": 0.4,
    "guidance_scale": 9.0,
    "num_inference_steps": 40,
    "controlnet_conditioning_scale": 0.8,
}
LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)


def _interior(width: int = 256, height: int = 192) -> Image.Image:
    """A small synthetic room: bluish wall gradient, bright window, sofa, plank floor, noise."""
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    horizon = height * 6 // 10
    for y in range(horizon):
        v = 110 + 70 * y // height
        draw.line([(0, y), (width, y)], fill=(v - 12, v, v + 18))
    draw.rectangle([0, horizon, width, height], fill=(112, 82, 56))
    for x in range(0, width + width // 4, max(8, width // 16)):
        draw.line([(x, horizon), (x - width // 8, height)], fill=(86, 62, 42), width=2)
    w, h = width, height
    draw.rectangle([w // 10, h // 10, w * 35 // 100, h * 45 // 100], "#eef2fa")  # window
    draw.line([(w * 22 // 100, h // 10), (w * 22 // 100, h * 45 // 100)], "#333", width=2)
    draw.rectangle([w * 45 // 100, h * 45 // 100, w * 85 // 100, h * 70 // 100], "#466078")
    draw.ellipse([w * 6 // 10, h * 72 // 100, w * 3 // 4, h * 82 // 100], "#b43c32")
    noise = np.random.default_rng(3).normal(0.0, 2.0, (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(image) + noise, 0, 255).astype(np.uint8))


ROOM = _interior()


def _request(
    image: Image.Image = ROOM,
    *,
    api: ApiName = "stable_diffusion",
    seed: int = 7,
    prompt: str = "a living room, photorealistic interior",
    negative_prompt: str = "people",
    **parameters: float,
) -> RenderRequest:
    data = io.BytesIO()
    image.save(data, format="PNG")
    return RenderRequest(
        api=api,
        image=data.getvalue(),
        content_type="image/png",
        width=image.width,
        height=image.height,
        prompt=prompt,
        negative_prompt=negative_prompt,
        parameters={**(SD_PARAMETERS if api == "stable_diffusion" else {}), **parameters},
        seed=seed,
    )


async def _render(request: RenderRequest) -> RenderResult:
    return await LocalEngine().render(request)


def _pixels(data: bytes | Image.Image) -> Pixels:
    image = data if isinstance(data, Image.Image) else Image.open(io.BytesIO(data))
    return np.asarray(image.convert("RGB"), dtype=np.float32)


async def _output(**kwargs: Any) -> Pixels:
    return _pixels((await _render(_request(**kwargs))).image)


def _mad(a: Pixels, b: Pixels) -> float:
    """Mean absolute difference in 8-bit levels."""
    return float(np.abs(a - b).mean())


def _edge_strength(pixels: Pixels) -> Pixels:
    lum = pixels @ LUMA
    return np.abs(np.diff(lum, axis=1))[:-1] + np.abs(np.diff(lum, axis=0))[:, :-1]


def _edge_correlation(a: Pixels, b: Pixels) -> float:
    return float(np.corrcoef(_edge_strength(a).ravel(), _edge_strength(b).ravel())[0, 1])


ORIGINAL = _pixels(ROOM)


async def test_same_seed_and_parameters_give_identical_bytes() -> None:
    first, second = await _render(_request()), await _render(_request())

    assert first.image == second.image
    assert first.metadata == second.metadata


async def test_a_different_seed_changes_only_the_fine_grain() -> None:
    seven, eight = await _output(seed=7), await _output(seed=8)

    assert 0.0 < _mad(seven, eight) < 2.0


async def test_grain_is_off_when_the_negative_prompt_rejects_noise() -> None:
    seven = await _output(seed=7, negative_prompt="noise")
    eight = await _output(seed=8, negative_prompt="noise")

    assert _mad(seven, eight) == 0.0


@pytest.mark.parametrize(
    "change",
    [
        {"prompt_strength": 0.6},
        {"guidance_scale": 15.0},
        {"controlnet_conditioning_scale": 0.0},
        {"num_inference_steps": 60},
    ],
    ids=["strength", "guidance", "structure", "steps"],
)
async def test_each_knob_visibly_changes_the_output(change: dict[str, float]) -> None:
    base, changed = await _output(), await _output(**change)

    assert _mad(base, changed) > 0.3


async def test_minimum_strength_stays_close_and_more_strength_moves_further() -> None:
    distances = [_mad(await _output(prompt_strength=s), ORIGINAL) for s in (0.1, 0.25, 0.4, 0.6)]

    assert distances[0] < 1.5
    assert distances == sorted(distances)
    assert distances[-1] > 3 * distances[0]


async def test_more_guidance_means_stronger_edits() -> None:
    distances = [_mad(await _output(guidance_scale=g), ORIGINAL) for g in (3.0, 9.0, 15.0)]

    assert distances == sorted(distances)
    assert distances[-1] > 1.5 * distances[0]


async def test_higher_structure_keeps_edges_closer_to_the_original() -> None:
    loose = await _output(prompt_strength=0.6, controlnet_conditioning_scale=0.0)
    strict = await _output(prompt_strength=0.6, controlnet_conditioning_scale=1.5)

    assert _edge_correlation(strict, ORIGINAL) > _edge_correlation(loose, ORIGINAL) + 0.01


async def test_high_structure_keeps_the_original_fine_detail_along_edges() -> None:
    def detail(pixels: Pixels) -> Pixels:
        lum = pixels @ LUMA
        return (
            lum[1:-1, 1:-1] - (lum[:-2, 1:-1] + lum[2:, 1:-1] + lum[1:-1, :-2] + lum[1:-1, 2:]) / 4
        )

    edges = _edge_strength(ORIGINAL)[:-1, :-1]
    strongest = edges > np.percentile(edges, 90)

    def detail_error(pixels: Pixels) -> float:
        return float(np.abs(detail(pixels) - detail(ORIGINAL))[strongest].mean())

    # strong guidance sharpens hard; structure should put the original edge detail back
    common: dict[str, Any] = {"prompt_strength": 0.6, "guidance_scale": 15.0}
    loose = await _output(controlnet_conditioning_scale=0.0, negative_prompt="noise", **common)
    strict = await _output(controlnet_conditioning_scale=1.5, negative_prompt="noise", **common)

    assert detail_error(strict) < 0.6 * detail_error(loose)


async def test_more_steps_converge_further_toward_the_processed_image() -> None:
    # structure at its maximum turns the per-pass smoothing off: only convergence differs
    few = await _output(num_inference_steps=20, controlnet_conditioning_scale=1.5)
    many = await _output(num_inference_steps=60, controlnet_conditioning_scale=1.5)

    assert _mad(many, ORIGINAL) > _mad(few, ORIGINAL) + 0.3


async def test_more_steps_come_out_smoother_when_structure_is_low() -> None:
    few = await _output(num_inference_steps=20, controlnet_conditioning_scale=0.0)
    many = await _output(num_inference_steps=60, controlnet_conditioning_scale=0.0)

    assert _edge_strength(many).mean() < 0.95 * _edge_strength(few).mean()


@pytest.mark.parametrize("size", [(256, 192), (333, 201), (1030, 1030)])
async def test_result_is_a_png_of_the_input_size(size: tuple[int, int]) -> None:
    room = _interior(*size)
    result = await _render(_request(room))

    assert (result.width, result.height) == size
    assert result.content_type == "image/png"
    assert result.provider == "local"
    with Image.open(io.BytesIO(result.image)) as rendered:
        assert rendered.format == "PNG"
        assert rendered.size == size
    work_width, work_height = result.metadata["work_size"]
    assert work_width * work_height <= max(WORK_MAX_PIXELS, size[0] * size[1])
    if size[0] * size[1] > WORK_MAX_PIXELS:  # the large path computes small, transfers the edit
        assert work_width < size[0]
        assert 0.3 < _mad(_pixels(result.image), _pixels(room)) < 20


async def test_leonardo_arm_maps_its_parameter_names_and_fixed_steps() -> None:
    request = _request(
        api="leonardo", init_strength=0.35, guidance_scale=7.0, controlnet_weight=1.2
    )

    knobs = (await _render(request)).metadata["knobs"]

    assert (knobs["strength"], knobs["guidance"], knobs["structure"]) == (0.35, 7.0, 1.2)
    assert knobs["steps"] == LEONARDO_STEPS
    assert knobs["passes"] == 3


async def test_warm_prompt_shifts_colour_toward_red() -> None:
    def warmth(pixels: Pixels) -> float:
        return float((pixels[..., 0] - pixels[..., 2]).mean())

    neutral = await _output(prompt="a living room")
    warm = await _output(prompt="a warm living room")

    assert warmth(warm) > warmth(neutral) + 1.0


async def test_dark_in_the_negative_prompt_brightens_the_result() -> None:
    neutral = await _output(negative_prompt="people")
    avoid_dark = await _output(negative_prompt="dark, people")

    assert (avoid_dark @ LUMA).mean() > (neutral @ LUMA).mean() + 1.0


def test_prompt_cues_follow_the_documented_keywords() -> None:
    cues = prompt_cues(
        "Bright, warm living room with natural light and HIGH CONTRAST, muted palette",
        "oversaturated, blurry, grainy",
    )

    assert cues == {
        "warmth": 1,
        "exposure": 1,
        "contrast": 1,
        "saturation": -1,  # muted and oversaturated do not add up beyond -1
        "clarity": 1,
        "grain": -1,
    }


def test_prompt_cues_need_whole_words_and_opposites_cancel() -> None:
    assert prompt_cues("dark wood floors, a warmly lit brightness", "")["exposure"] == 0
    assert prompt_cues("warm and cool tones", "")["warmth"] == 0
    assert prompt_cues("a room", "too dark and overexposed")["exposure"] == 0


async def test_missing_parameter_is_an_upstream_error_not_a_key_error() -> None:
    request = _request()
    del request.parameters["prompt_strength"]

    with pytest.raises(UpstreamError) as caught:
        await _render(request)

    assert caught.value.code == "invalid_render_parameters"
    assert caught.value.upstream == "local"


async def test_non_finite_parameter_is_refused() -> None:
    with pytest.raises(UpstreamError) as caught:
        await _render(_request(guidance_scale=math.nan))

    assert caught.value.code == "invalid_render_parameters"


async def test_undecodable_original_is_an_upstream_error() -> None:
    request = _request()
    broken = RenderRequest(**{**request.__dict__, "image": b"\x89PNG\r\n\x1a\nbroken"})

    with pytest.raises(UpstreamError) as caught:
        await _render(broken)

    assert caught.value.code == "local_render_failed"
