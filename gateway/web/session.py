"""Browser sessions: a signed cookie beside the API's bearer tokens.

Logging in sets ``user_id`` and a fresh CSRF token in the session (Starlette's signed
``latina_session`` cookie: HttpOnly, SameSite=Lax, Secure in production). Every state-changing
request made with the cookie must echo the token in ``X-CSRF-Token`` (the login and logout forms
send it as a form field); ``gateway.auth``, which keeps the token, refuses it otherwise. Failed
logins are recorded in the database and limited per account and per client address, across
every gateway.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from urllib.parse import quote, urlencode

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway.auth import AuthenticatedUser, csrf_matches, csrf_token
from gateway.repositories.users import User
from gateway.state import gateway_state

log = logging.getLogger("latina.sessions")

COOKIE = "latina_session"
CSRF_FIELD = "csrf_token"
DEFAULT_NEXT = "/train"
_HASHER = PasswordHasher()
# Verifying against this when the account does not exist keeps the answer time the same.
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))


def page_user(request: Request) -> User | None:
    """The logged-in (or token-authenticated) user, or None."""
    principal = request.user if "user" in request.scope else None
    return principal.user if isinstance(principal, AuthenticatedUser) else None


def safe_next(target: str | None) -> str:
    """Only paths of this site: never ``//host`` or ``https://...`` (open redirects)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return DEFAULT_NEXT
    return target


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _back_to_login(error: str, next_path: str) -> Response:
    query = urlencode({"error": error, "next": next_path}, quote_via=quote)
    return RedirectResponse(f"/login?{query}", status_code=303)


async def login_submit(request: Request) -> Response:
    """``POST /login`` (form: name, password, next, csrf_token)."""
    state = gateway_state(request)
    async with request.form(max_files=0, max_fields=10) as form:
        name = str(form.get("name") or "").strip()
        password = str(form.get("password") or "")
        next_path = safe_next(str(form.get("next") or ""))
        given_csrf = str(form.get(CSRF_FIELD) or "")
    if not csrf_matches(request, given_csrf):
        return _back_to_login("csrf", next_path)
    client = _client(request)
    settings = state.settings
    async with state.uows() as uow:  # the attempt counts (as a failure) before it is checked
        attempt = await uow.users.reserve_login_attempt(
            name, client, settings.login_window_seconds, settings.login_max_failures
        )
        found = await uow.users.password_hash_of(name) if name and attempt else None
    if attempt is None:
        log.warning("login refused: too many failures", extra={"user": name, "client": client})
        return _back_to_login("rate_limited", next_path)
    user, stored = found if found else (None, None)
    # argon2 takes tens of milliseconds of CPU: not on the event loop
    verified = await asyncio.to_thread(_verify, stored, password)
    ok = verified and user is not None and not user.disabled
    if ok:
        async with state.uows() as uow:
            await uow.users.mark_login_succeeded(attempt)
    if not ok or user is None:
        return _back_to_login("invalid", next_path)
    request.session.clear()  # a new session on login: no fixation
    request.session["user_id"] = user.id
    request.session["epoch"] = user.session_epoch
    csrf_token(request)
    log.info("browser login", extra={"user": user.name})
    return RedirectResponse(next_path, status_code=303)


def _verify(stored: str | None, password: str) -> bool:
    try:
        return _HASHER.verify(stored or _DUMMY_HASH, password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


async def logout(request: Request) -> Response:
    """``POST /logout`` (form: csrf_token)."""
    async with request.form(max_files=0, max_fields=5) as form:
        given = str(form.get(CSRF_FIELD) or "")
    if not csrf_matches(request, given):
        return _back_to_login("csrf", DEFAULT_NEXT)
    user_id = request.session.get("user_id")
    if isinstance(user_id, int):  # logging out ends the user's other sessions too
        async with gateway_state(request).uows() as uow:
            await uow.users.end_sessions(user_id)
    request.session.clear()
    return RedirectResponse("/login?error=logged_out", status_code=303)
