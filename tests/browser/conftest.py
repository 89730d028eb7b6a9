"""Browser fixtures: one Debian Chromium for the session (driven by Playwright's Python package);
per test a fresh database, the real ML service and the real gateway on loopback, and a trainer
who logs in with a password.

Every page a test opens is watched: a script error, a CSP violation or a JavaScript dialog
fails the test at teardown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Dialog,
    Page,
    async_playwright,
)

from gateway.app import create_app
from gateway.flows import accounts
from gateway.flows.unit_of_work import UnitOfWorkFactory
from gateway.providers.base import ImageProvider
from ml_service.app import create_app as create_ml
from shared.settings import Settings
from tests.images import interior
from tests.servers import serve

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "test-output" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TRAINER = "tina"
PASSWORD = "a long trainer password"


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("Chromium is missing: `make test` installs Debian's chromium package")
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=LAUNCH_ARGS, headless=True
        )
        yield chromium
        await chromium.close()


@dataclass
class Site:
    """The running gateway, its database and a bearer token of the trainer (to seed data)."""

    url: str
    pool: asyncpg.Pool[Any]
    token: str

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token or self.token}"},
            timeout=60,
        )

    async def rated_sample(
        self, ratings: dict[str, int], comments: str = "", token: str | None = None, **fields: str
    ) -> dict[str, Any]:
        """Upload and rate one experiment through the API, as the trainer (or ``token``)."""
        async with self.client(token) as client:
            response = await client.post(
                "/api/enhance/train",
                files={"image": ("room.jpg", interior(), "image/jpeg")},
                data=fields,
            )
            assert response.status_code == 201, response.text
            body: dict[str, Any] = response.json()
            rated = await client.post(
                "/api/train/rate",
                json={
                    "experiment_id": body["experiment_id"],
                    "ratings": [
                        {
                            "option": o["option"],
                            "image_id": o["image_id"],
                            "rating": ratings[o["option"]],
                            "comments": comments,
                        }
                        for o in body["options"]
                    ],
                },
            )
            assert rated.status_code == 200, rated.text
            return body


@pytest.fixture
async def ml_url(settings: Settings) -> AsyncIterator[str]:
    app = create_ml(settings)
    async with serve(app) as url:
        yield url
    await app.state.resources.close()


@pytest.fixture
def providers(request: pytest.FixtureRequest) -> dict[str, ImageProvider] | None:
    """The gateway's image providers: the built-in ones, or those a test parametrizes."""
    chosen: dict[str, ImageProvider] | None = getattr(request, "param", None)
    return chosen


@pytest.fixture
async def site(
    settings: Settings,
    ml_url: str,
    db_pool: asyncpg.Pool[Any],
    providers: dict[str, ImageProvider] | None,
) -> AsyncIterator[Site]:
    _, token = await accounts.create_user(
        UnitOfWorkFactory(db_pool), TRAINER, "trainer", password=PASSWORD
    )
    # The pages show what the ML service answers: wait for it as production would (the first GP
    # fit of a test session, cold, can take longer than the 1 s the HTTP-level tests allow).
    patient = {"ml_service_url": ml_url, "ml_service_timeout": 30.0}
    app = create_app(settings.model_copy(update=patient), providers=providers)
    async with LifespanManager(app) as manager, serve(manager.app) as url:
        yield Site(url=url, pool=db_pool, token=token)


@dataclass
class Watch:
    """What went wrong in the page: uncaught errors, CSP violations, dialogs."""

    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def on_console(self, message: ConsoleMessage) -> None:
        # A 4xx/5xx a test provokes on purpose is logged as "Failed to load resource"; the page
        # shows it in words, which the test checks. Everything else logged as an error counts.
        if message.type == "error" and "Failed to load resource" not in message.text:
            self.errors.append(message.text)

    async def on_dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(dialog.message)
        await dialog.dismiss()


@pytest.fixture
async def context(browser: Browser, site: Site) -> AsyncIterator[BrowserContext]:
    ctx = await browser.new_context(base_url=site.url, viewport={"width": 1440, "height": 960})
    ctx.set_default_timeout(15_000)
    yield ctx
    await ctx.close()


@pytest.fixture
async def watch() -> Watch:
    return Watch()


@pytest.fixture
async def page(context: BrowserContext, watch: Watch) -> AsyncIterator[Page]:
    tab = await context.new_page()
    tab.on("console", watch.on_console)
    tab.on("pageerror", lambda exc: watch.errors.append(f"uncaught: {exc}"))
    tab.on("dialog", watch.on_dialog)
    yield tab
    assert watch.dialogs == [], "a JavaScript dialog opened"
    assert watch.errors == [], "the page logged errors"


async def log_in(page: Page, next_path: str = "/train", name: str = TRAINER) -> None:
    """Log in through the form, as a person would."""
    await page.goto(f"/login?next={next_path}")
    await page.fill("#name", name)
    await page.fill("#password", PASSWORD)
    await page.press("#password", "Enter")
    await page.wait_for_url(f"**{next_path}")


async def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path
