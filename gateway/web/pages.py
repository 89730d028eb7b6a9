"""The browser pages (login, train, dashboard, history) and the static assets they load.

Pages are server-rendered shells: Jinja2 with autoescaping fills in who is logged in and the
session's CSRF token; the page scripts (``static/*.js``) fetch the JSON API and build the DOM
with ``textContent``. No inline script or style anywhere, so the CSP can forbid both.
Front-end libraries come from npm through ``ui/package-lock.json`` (``make`` runs ``npm ci``)
and are served from ``ui/node_modules`` by name, one allow-listed dist file each.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote, urlencode

import jinja2
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from gateway.auth import csrf_token
from gateway.errors import NotFound
from gateway.repositories.users import User
from gateway.state import gateway_state
from gateway.web.session import page_user, safe_next

WEB_DIR = Path(__file__).resolve().parent
STATIC_DIR = WEB_DIR / "static"
TEMPLATES_DIR = WEB_DIR / "templates"
UI_MODULES = WEB_DIR.parents[1] / "ui" / "node_modules"
# URL name under /static/vendor/ -> dist file inside ui/node_modules (nothing else is served).
VENDOR_FILES = {
    "chart.umd.min.js": "chart.js/dist/chart.umd.min.js",
    "chart.umd.min.js.map": "chart.js/dist/chart.umd.min.js.map",
}
NO_STORE = {"Cache-Control": "no-store"}  # pages carry the session's CSRF token

LOGIN_MESSAGES = {
    "invalid": "That name and password do not match an active account. Please try again.",
    "rate_limited": "Too many failed attempts. Please wait {minutes} minutes, then try again.",
    "csrf": "The login form had expired. Please try again.",
    "logged_out": "You have been logged out.",
}


@lru_cache(maxsize=64)
def _fingerprint(path: Path, mtime_ns: int) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:10]


def asset_url(name: str) -> str:
    """``/static/<name>`` with a content fingerprint, so a changed file is never served stale."""
    if name.startswith("vendor/"):
        path = UI_MODULES / VENDOR_FILES.get(name.removeprefix("vendor/"), "-")
    else:
        path = STATIC_DIR / name
    try:
        version = _fingerprint(path, path.stat().st_mtime_ns)
    except OSError:
        return f"/static/{name}"
    return f"/static/{name}?v={version}"


templates = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
)
templates.env.globals["asset_url"] = asset_url


def _render(request: Request, template: str, user: User | None, **context: object) -> Response:
    return templates.TemplateResponse(
        request,
        template,
        {"user": user, "csrf_token": csrf_token(request), **context},
        headers=NO_STORE,
    )


def _to_login(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(
        "/login?" + urlencode({"next": target}, quote_via=quote), status_code=303
    )


async def login_page(request: Request) -> Response:
    """``GET /login``: the form; ``?error=`` says what went wrong, ``?next=`` where to go."""
    next_path = safe_next(request.query_params.get("next"))
    error = request.query_params.get("error", "")
    user = page_user(request)
    if user is not None and error not in LOGIN_MESSAGES:
        return RedirectResponse(next_path, status_code=303)
    minutes = max(1, round(gateway_state(request).settings.login_window_seconds / 60))
    message = LOGIN_MESSAGES.get(error, "").format(minutes=minutes)
    return _render(
        request,
        "login.html",
        user,
        next_path=next_path,
        message=message,
        message_kind="info" if error == "logged_out" else "error",
    )


def _logged_in_page(request: Request, template: str, active: str) -> Response:
    user = page_user(request)
    if user is None:
        return _to_login(request)
    return _render(request, template, user, active=active)


async def train_page(request: Request) -> Response:
    """``GET /train``: upload, compare and rate."""
    return _logged_in_page(request, "train.html", "train")


async def dashboard_page(request: Request) -> Response:
    """``GET /dashboard``: what the system has learned so far."""
    return _logged_in_page(request, "dashboard.html", "dashboard")


async def history_page(request: Request) -> Response:
    """``GET /history``: rated experiments, filtered and paged."""
    return _logged_in_page(request, "history.html", "history")


async def root(request: Request) -> Response:
    return RedirectResponse("/train", status_code=303)


async def vendor_asset(request: Request) -> Response:
    """One allow-listed dist file of an npm package from ``ui/node_modules``."""
    name = request.path_params["name"]
    relative = VENDOR_FILES.get(name)
    path = UI_MODULES / relative if relative else None
    if path is None or not path.is_file():
        raise NotFound(
            f"no front-end library file {name!r}",
            code="asset_not_found",
            hint="front-end libraries are installed by `make install` (npm ci --prefix ui)",
        )
    return FileResponse(path)


def static_mount() -> Mount:
    """``/static``: the pages' own JS/CSS, and ``/static/vendor/<file>`` from npm."""
    return Mount(
        "/static",
        routes=[
            Route("/vendor/{name}", vendor_asset, methods=["GET", "HEAD"]),
            Mount("/", app=StaticFiles(directory=STATIC_DIR)),
        ],
    )
