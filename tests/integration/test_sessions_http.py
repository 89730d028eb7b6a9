"""Browser sessions over HTTP: login, the cookie's flags, CSRF, rate limiting, security headers."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager

from gateway.app import create_app
from gateway.flows.accounts import (
    create_user,
    disable_user,
    enable_user,
    issue_token,
    set_password,
)
from gateway.flows.unit_of_work import UnitOfWorkFactory
from shared.db.pool import create_pool
from shared.settings import Settings

PASSWORD = "correct horse battery staple"
_CSRF = re.compile(r'name="csrf_token"\s+value="([^"]+)"')


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool[Any]]:
    p = await create_pool(database_url, min_size=1, max_size=2)
    yield p
    await p.close()


async def _client(
    settings: Settings, base_url: str = "http://gw"
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as c:
            yield c


@pytest.fixture
async def browser(settings: Settings, pool: asyncpg.Pool[Any]) -> AsyncIterator[httpx.AsyncClient]:
    await create_user(UnitOfWorkFactory(pool), "sessy", "trainer", password=PASSWORD)
    async for c in _client(settings):
        yield c


async def login_form_token(client: httpx.AsyncClient) -> str:
    page = await client.get("/login")
    assert page.status_code == 200
    match = _CSRF.search(page.text)
    assert match, "the login form carries a CSRF token"
    return match[1]


async def login(
    client: httpx.AsyncClient, name: str = "sessy", password: str = PASSWORD, next_path: str = ""
) -> httpx.Response:
    token = await login_form_token(client)
    return await client.post(
        "/login",
        data={"name": name, "password": password, "next": next_path, "csrf_token": token},
    )


def csrf_of(page: httpx.Response) -> str:
    match = re.search(r'<meta name="csrf-token" content="([^"]+)"', page.text)
    assert match, "every page carries its CSRF token"
    return match[1]


async def test_login_sets_an_httponly_lax_cookie_and_a_wrong_password_does_not(
    browser: httpx.AsyncClient,
) -> None:
    wrong = await login(browser, password="nope")
    assert wrong.status_code == 303
    assert wrong.headers["location"].startswith("/login?error=invalid")
    assert (await browser.get("/api/me")).status_code == 401
    right = await login(browser, next_path="/history")
    assert right.status_code == 303 and right.headers["location"] == "/history"
    cookie = right.headers["set-cookie"].lower()
    assert cookie.startswith("latina_session=")
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie
    me = await browser.get("/api/me")
    assert me.status_code == 200 and me.json()["name"] == "sessy"


async def test_next_never_leaves_the_site(browser: httpx.AsyncClient) -> None:
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        browser.cookies.clear()  # a logged-in visit to /login goes straight on
        response = await login(browser, next_path=target)
        assert response.headers["location"] == "/train"


async def test_a_login_post_without_the_form_token_is_refused(browser: httpx.AsyncClient) -> None:
    await browser.get("/login")
    response = await browser.post("/login", data={"name": "sessy", "password": PASSWORD})
    assert response.headers["location"].startswith("/login?error=csrf")
    assert (await browser.get("/api/me")).status_code == 401


async def test_cookie_writes_need_the_csrf_header_and_bearer_calls_do_not(
    browser: httpx.AsyncClient, trainer_token: str
) -> None:
    await login(browser)
    token = csrf_of(await browser.get("/train"))
    body = {"experiment_id": "exp_0000000000000000", "ratings": []}
    refused = await browser.post("/api/train/rate", json=body)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "csrf_failed"
    wrong = await browser.post("/api/train/rate", json=body, headers={"X-CSRF-Token": "x" * 43})
    assert wrong.status_code == 403
    passed = await browser.post("/api/train/rate", json=body, headers={"X-CSRF-Token": token})
    assert passed.status_code not in (401, 403)  # past authentication: the body is judged
    # API clients with a bearer token have no cookie and need no CSRF token
    browser.cookies.clear()
    bearer = await browser.post(
        "/api/train/rate", json=body, headers={"Authorization": f"Bearer {trainer_token}"}
    )
    assert bearer.status_code not in (401, 403)


async def test_logout_ends_the_session(browser: httpx.AsyncClient) -> None:
    await login(browser)
    token = csrf_of(await browser.get("/train"))
    assert (
        (await browser.post("/logout", data={})).headers["location"].startswith("/login?error=csrf")
    )
    assert (await browser.get("/api/me")).status_code == 200
    out = await browser.post("/logout", data={"csrf_token": token})
    assert out.headers["location"] == "/login?error=logged_out"
    assert (await browser.get("/api/me")).status_code == 401


async def test_repeated_failures_lock_the_account_for_the_window(
    browser: httpx.AsyncClient, settings: Settings, pool: asyncpg.Pool[Any]
) -> None:
    for _ in range(settings.login_max_failures):
        response = await login(browser, password="guess")
        assert "error=invalid" in response.headers["location"]
    locked = await login(browser)  # even the right password
    assert "error=rate_limited" in locked.headers["location"]
    assert (await browser.get("/api/me")).status_code == 401
    async with pool.acquire() as conn:
        await conn.execute("UPDATE login_attempts SET at = at - interval '1 hour'")
    assert (await login(browser)).headers["location"] == "/train"


async def test_concurrent_wrong_passwords_cannot_exceed_the_limit(
    browser: httpx.AsyncClient, settings: Settings, pool: asyncpg.Pool[Any]
) -> None:
    token = await login_form_token(browser)
    form = {"name": "sessy", "password": "guess", "next": "", "csrf_token": token}
    answers = await asyncio.gather(*(browser.post("/login", data=form) for _ in range(20)))
    tried = [a for a in answers if "error=invalid" in a.headers["location"]]
    refused = [a for a in answers if "error=rate_limited" in a.headers["location"]]
    # each password tried is a failure counted before the next may start
    assert len(tried) == settings.login_max_failures
    assert len(refused) == 20 - settings.login_max_failures
    async with pool.acquire() as conn:
        failed = await conn.fetchval("SELECT count(*) FROM login_attempts WHERE NOT succeeded")
    assert failed == settings.login_max_failures


async def test_pages_need_a_login_and_every_response_has_security_headers(
    browser: httpx.AsyncClient,
) -> None:
    for path in ("/train", "/dashboard", "/history"):
        response = await browser.get(path)
        assert response.status_code == 303
        assert response.headers["location"].startswith("/login?")
    health = await browser.get("/healthz")
    csp = health.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert health.headers["x-content-type-options"] == "nosniff"
    assert (await browser.get("/login")).headers["x-frame-options"] == "DENY"


async def test_production_cookies_are_secure(settings: Settings, pool: asyncpg.Pool[Any]) -> None:
    await create_user(UnitOfWorkFactory(pool), "pat", "trainer", password=PASSWORD)
    production = settings.model_copy(
        update={
            "latina_env": "production",
            "latina_secret_key": "s" * 40,
            "ml_service_token": "t" * 30,
        }
    )
    async for client in _client(production, "https://gw"):
        response = await login(client, name="pat")
        assert "secure" in response.headers["set-cookie"].lower()


async def _second_browser(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async for c in _client(settings):
        yield c


async def test_logout_ends_the_users_other_sessions(
    browser: httpx.AsyncClient, settings: Settings
) -> None:
    await login(browser)
    async for other in _second_browser(settings):
        await login(other)
        assert (await other.get("/api/me")).status_code == 200
        token = csrf_of(await browser.get("/train"))
        await browser.post("/logout", data={"csrf_token": token})
        assert (await other.get("/api/me")).status_code == 401  # a session already issued


async def test_a_password_change_ends_every_session(
    browser: httpx.AsyncClient, pool: asyncpg.Pool[Any]
) -> None:
    await login(browser)
    assert (await browser.get("/api/me")).status_code == 200
    await set_password(UnitOfWorkFactory(pool), "sessy", "another password 42")
    assert (await browser.get("/api/me")).status_code == 401
    assert (await login(browser, password="another password 42")).headers["location"] == "/train"


async def test_disabling_a_user_cuts_tokens_sessions_and_logins(
    browser: httpx.AsyncClient, pool: asyncpg.Pool[Any]
) -> None:
    uows = UnitOfWorkFactory(pool)
    token = await issue_token(uows, "sessy")
    await login(browser)
    assert (await browser.get("/api/me")).status_code == 200
    await disable_user(uows, "sessy")
    assert (await browser.get("/api/me")).status_code == 401
    bearer = {"Authorization": f"Bearer {token}"}
    assert (await browser.get("/api/me", headers=bearer)).status_code == 401
    assert "error=invalid" in (await login(browser)).headers["location"]
    await enable_user(uows, "sessy")
    assert (await browser.get("/api/me", headers=bearer)).status_code == 200
