"""The trainer's page: upload, compare, rate with the keyboard, and keep what was typed."""

from __future__ import annotations

import asyncio

import pytest
from playwright.async_api import Page, Route, expect

from gateway.providers.base import ProviderName, RenderRequest, RenderResult
from gateway.providers.local_engine import LocalEngine
from shared.errors import UpstreamUnavailable
from tests.browser.conftest import TRAINER, Site, log_in, screenshot
from tests.images import interior

IMAGES_LOADED = """() => {
    const images = [...document.querySelectorAll('#compare .viewport:not([hidden]) img')];
    return images.length > 0 && images.every((i) => i.complete && i.naturalWidth > 0);
}"""


class Down:
    """A provider failing as a real one does after its retries (after ``delay`` seconds)."""

    def __init__(self, name: ProviderName, message: str, delay: float = 0.0) -> None:
        self.name = name
        self.message = message
        self.delay = delay

    async def render(self, request: RenderRequest) -> RenderResult:
        await asyncio.sleep(self.delay)
        raise UpstreamUnavailable(self.message, upstream=self.name)


async def upload_image(page: Page) -> None:
    await page.set_input_files(
        "#file", files=[{"name": "room.jpg", "mimeType": "image/jpeg", "buffer": interior()}]
    )
    await page.wait_for_function(IMAGES_LOADED)


async def test_a_trainer_rates_both_options_with_the_keyboard_only(page: Page, site: Site) -> None:
    await log_in(page)
    await expect(page.get_by_test_id("samples")).to_have_text("0")
    await expect(page.locator("#file")).to_be_focused()
    await upload_image(page)
    option_a, option_b = page.get_by_test_id("option-A"), page.get_by_test_id("option-B")
    await expect(option_a).to_be_focused()
    await page.keyboard.press("4")
    await page.keyboard.press("Tab")
    await expect(option_b).to_be_focused()
    await page.keyboard.press("5")
    await page.keyboard.press("c")
    await page.keyboard.type("Warm light, but the sofa lost its texture")
    await page.keyboard.press("Escape")
    await expect(option_b).to_be_focused()
    await expect(option_a.locator(".option-rating-text")).to_have_text("4 / 5")
    await expect(option_b.locator(".option-rating-text")).to_have_text("5 / 5")
    await screenshot(page, "train-compare")
    await page.keyboard.press("Enter")

    await expect(page.get_by_test_id("saved")).to_contain_text("Sample 1 saved")
    await expect(page.get_by_test_id("samples")).to_have_text("1")
    await expect(page.get_by_test_id("phase-progress")).to_have_js_property("value", 1)
    await expect(page.get_by_test_id("best")).to_have_text("5.00")  # the better API's mean
    await expect(page.get_by_test_id("ml-state")).to_have_text("updated with this sample")
    await expect(page.locator("#file")).to_be_focused()  # straight on to the next upload
    await screenshot(page, "train-rated")
    async with site.pool.acquire() as conn:
        rows = await conn.fetch(
            """
            SELECT r.option, r.rating, r.comments, u.name AS rater
            FROM enhancement_ratings r
            JOIN experiments e ON e.id = r.experiment_id
            JOIN users u ON u.id = e.rated_by
            ORDER BY r.option
            """
        )
    assert [(r["option"], r["rating"], r["rater"]) for r in rows] == [
        ("A", 4, TRAINER),
        ("B", 5, TRAINER),
    ]
    assert rows[1]["comments"] == "Warm light, but the sofa lost its texture"


async def test_wheel_and_drag_zoom_and_pan_all_three_images_together(
    page: Page, site: Site
) -> None:
    await log_in(page)
    await upload_image(page)
    transforms = (
        "() => [...document.querySelectorAll('#compare .viewport img')]"
        ".map((i) => i.style.transform)"
    )
    box = await page.locator(".panel.original .viewport").bounding_box()
    assert box is not None
    await page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3)
    await page.mouse.wheel(0, -400)
    zoomed = await page.evaluate(transforms)
    assert len(zoomed) == 3 and len(set(zoomed)) == 1 and "scale(1)" not in zoomed[0]
    await page.mouse.down()
    await page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.5, steps=4)
    await page.mouse.up()
    panned = await page.evaluate(transforms)
    assert len(set(panned)) == 1 and panned[0] != zoomed[0]
    await page.keyboard.press("0")
    assert set(await page.evaluate(transforms)) == {"translate(0%, 0%) scale(1)"}


@pytest.mark.parametrize(
    "providers",
    [
        {
            "leonardo": Down("leonardo", "Leonardo could not be reached (connection refused)"),
            "stable_diffusion": LocalEngine(),
        }
    ],
    indirect=True,
    ids=["leonardo-down"],
)
async def test_a_failed_option_is_shown_as_failed_and_the_other_can_be_rated(
    page: Page, site: Site
) -> None:
    await log_in(page)
    await upload_image(page)
    failed = page.get_by_test_id("option-A")
    await expect(failed).to_have_class("panel option failed")
    await expect(failed).to_contain_text("Leonardo could not be reached (connection refused)")
    await expect(page.get_by_test_id("option-B")).to_be_focused()
    await page.keyboard.press("3")
    await page.keyboard.press("ArrowRight")  # only one option to move between: stays on B
    await expect(page.get_by_test_id("option-B")).to_be_focused()
    await screenshot(page, "train-partial")
    await page.keyboard.press("Enter")
    await expect(page.get_by_test_id("samples")).to_have_text("1")
    async with site.pool.acquire() as conn:
        rated = await conn.fetch("SELECT option, rating FROM enhancement_ratings")
    assert [(r["option"], r["rating"]) for r in rated] == [("B", 3)]


@pytest.mark.parametrize(
    "providers",
    [
        {
            "leonardo": Down("leonardo", "Leonardo answered 503", delay=1.0),
            "stable_diffusion": Down("replicate", "Replicate timed out", delay=1.0),
        }
    ],
    indirect=True,
    ids=["both-down"],
)
async def test_the_page_shows_progress_while_rendering_and_says_why_both_failed(
    page: Page, site: Site
) -> None:
    await log_in(page)
    await page.set_input_files(
        "#file", files=[{"name": "room.jpg", "mimeType": "image/jpeg", "buffer": interior()}]
    )
    await expect(page.get_by_test_id("rendering")).to_be_visible()
    await expect(page.locator("#progress-text")).to_contain_text("Rendering both variants")
    error = page.get_by_test_id("train-error")
    await expect(error).to_contain_text("both image providers failed")
    await expect(error).to_contain_text("Leonardo: Leonardo answered 503")
    await expect(error).to_contain_text("Stable Diffusion: Replicate timed out")
    await expect(page.get_by_test_id("rendering")).to_be_hidden()
    await expect(page.get_by_role("button", name="Try the upload again")).to_be_focused()


async def test_nothing_typed_is_lost_when_the_rating_request_fails_or_the_page_reloads(
    page: Page, site: Site
) -> None:
    await log_in(page)
    await upload_image(page)

    async def ml_down(route: Route) -> None:
        await route.fulfill(
            status=503,
            json={
                "error": {"code": "upstream_unavailable", "message": "the database is restarting"}
            },
        )

    await page.route("**/api/train/rate", ml_down)
    await page.keyboard.press("2")
    await page.keyboard.press("ArrowRight")
    await page.keyboard.press("5")
    await page.keyboard.press("c")
    await page.keyboard.type("keep me")
    await page.keyboard.press("Control+Enter")
    await expect(page.get_by_test_id("train-error")).to_have_text("the database is restarting")
    await expect(page.locator("#rate-form")).to_be_visible()
    await expect(page.get_by_test_id("option-B").locator("textarea")).to_have_value("keep me")

    await page.reload()
    await page.wait_for_function(IMAGES_LOADED)
    await expect(page.get_by_test_id("option-A").locator(".option-rating-text")).to_have_text(
        "2 / 5"
    )
    await expect(page.get_by_test_id("option-B").locator(".option-rating-text")).to_have_text(
        "5 / 5"
    )
    await expect(page.get_by_test_id("option-B").locator("textarea")).to_have_value("keep me")

    await page.unroute("**/api/train/rate")
    await page.keyboard.press("Enter")
    await expect(page.get_by_test_id("samples")).to_have_text("1")
    async with site.pool.acquire() as conn:
        comments = await conn.fetchval(
            "SELECT comments FROM enhancement_ratings WHERE option = 'B'"
        )
    assert comments == "keep me"
