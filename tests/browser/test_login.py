"""Logging in and out through the form, the redirects of the pages, and CSRF on cookie writes."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import Page, expect

from tests.browser.conftest import PASSWORD, TRAINER, Site, log_in, screenshot


@pytest.mark.parametrize("path", ["/train", "/dashboard", "/history"])
async def test_a_page_sends_a_visitor_who_is_not_logged_in_to_the_login_form(
    page: Page, site: Site, path: str
) -> None:
    await page.goto(path)
    assert page.url == f"{site.url}/login?next=%2F{path.lstrip('/')}"
    await expect(page.locator("form.login-form")).to_be_visible()
    await expect(page.locator('input[name="next"]')).to_have_value(path)


async def test_a_wrong_password_is_said_in_words_and_the_right_one_returns_to_the_page(
    page: Page, site: Site
) -> None:
    await page.goto("/dashboard")
    await page.fill("#name", TRAINER)
    await page.fill("#password", "not the password")
    await page.press("#password", "Enter")
    await expect(page.get_by_test_id("login-message")).to_contain_text("do not match")
    await expect(page.locator('input[name="next"]')).to_have_value("/dashboard")
    await screenshot(page, "login")
    await page.fill("#name", TRAINER)
    await page.fill("#password", PASSWORD)
    await page.press("#password", "Enter")
    await page.wait_for_url("**/dashboard")
    await expect(page.get_by_test_id("user-name")).to_have_text(TRAINER)


async def test_logging_out_ends_the_session(page: Page, site: Site) -> None:
    await log_in(page)
    await page.get_by_role("button", name="Log out").click()
    await page.wait_for_url(re.compile(r"/login\?error=logged_out"))
    await expect(page.get_by_test_id("login-message")).to_have_text("You have been logged out.")
    await page.goto("/history")
    assert "/login?next=" in page.url


async def test_a_cookie_authenticated_post_needs_the_csrf_header(page: Page, site: Site) -> None:
    await log_in(page)
    post = """async (withToken) => {
        const headers = {"Content-Type": "application/json"};
        if (withToken) {
            headers["X-CSRF-Token"] = document.querySelector('meta[name="csrf-token"]').content;
        }
        const response = await fetch("/api/train/rate", {
            method: "POST", headers, credentials: "same-origin",
            body: JSON.stringify({experiment_id: "exp_doesnotexist00",
                                  ratings: [{option: "A", image_id: 1, rating: 3}]}),
        });
        return {status: response.status, body: await response.json()};
    }"""
    refused = await page.evaluate(post, False)
    assert refused["status"] == 403
    assert refused["body"]["error"]["code"] == "csrf_failed"
    with_token = await page.evaluate(post, True)
    assert with_token["status"] == 404  # past the CSRF check: the experiment does not exist
    assert with_token["body"]["error"]["code"] == "experiment_not_found"
    # the same without the page at all (a cross-site form would also lack the token)
    direct = await page.request.post(
        f"{site.url}/api/train/rate", data={"experiment_id": "exp_x", "ratings": []}
    )
    assert direct.status == 403
    assert (await direct.json())["error"]["code"] == "csrf_failed"
