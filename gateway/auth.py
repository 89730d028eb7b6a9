"""Authentication (bearer tokens for API clients, the session cookie for browsers), the CSRF
token and its check for cookie-authenticated writes, and role checks for routes.

The browser's login and logout (``gateway.web.session``) build on this module, never the
other way round.
"""

from __future__ import annotations

import hmac
import secrets

from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    AuthenticationError,
    BaseUser,
)
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from gateway.errors import Forbidden, Unauthenticated
from gateway.flows.accounts import authenticate_token
from gateway.repositories.users import Role, User
from gateway.state import GatewayState
from shared.web_errors import error_response

PROTECTED_PREFIX = "/api/"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# These check the token in their form body themselves.
FORM_CSRF_PATHS = frozenset({"/login", "/logout"})
CSRF_HEADER = "x-csrf-token"


class CsrfFailed(AuthenticationError):
    """A cookie-authenticated write came without the session's CSRF token."""


class AuthenticatedUser(BaseUser):
    def __init__(self, user: User) -> None:
        self.user = user

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.user.name

    @property
    def identity(self) -> str:
        return str(self.user.id)


def csrf_token(conn: HTTPConnection) -> str:
    """This session's CSRF token, created on first use (also before login: login CSRF)."""
    token = conn.session.get("csrf")
    if not isinstance(token, str) or len(token) < 32:
        token = secrets.token_urlsafe(32)
        conn.session["csrf"] = token
    return token


def csrf_matches(conn: HTTPConnection, given: str | None) -> bool:
    expected = conn.session.get("csrf")
    return bool(
        isinstance(expected, str) and given and hmac.compare_digest(expected, given.strip())
    )


class TokenBackend(AuthenticationBackend):
    """A bearer token, else the session cookie; every ``/api/*`` request needs one of them.

    A request that sends ``Authorization`` is judged by it alone. Cookie-authenticated writes
    must carry the session's CSRF token (``X-CSRF-Token``): a cross-site form can send the
    cookie but cannot read the token.
    """

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        state: GatewayState = conn.state.gateway
        header = conn.headers.get("authorization")
        if header is not None and conn.url.path.startswith(PROTECTED_PREFIX):
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise AuthenticationError("malformed Authorization header")
            user = await authenticate_token(state.uows, token.strip())
            if user is None:
                raise AuthenticationError("invalid or revoked token")
            return AuthCredentials(["authenticated", user.role]), AuthenticatedUser(user)
        user = await self._session_user(conn, state)
        if user is not None:
            method = conn.scope.get("method", "GET")
            if (
                method not in SAFE_METHODS
                and conn.url.path not in FORM_CSRF_PATHS
                and not csrf_matches(conn, conn.headers.get(CSRF_HEADER))
            ):
                raise CsrfFailed("missing or wrong CSRF token")
            return AuthCredentials(["authenticated", user.role, "session"]), AuthenticatedUser(user)
        if conn.url.path.startswith(PROTECTED_PREFIX):
            raise AuthenticationError("missing bearer token")
        return None

    @staticmethod
    async def _session_user(conn: HTTPConnection, state: GatewayState) -> User | None:
        if "session" not in conn.scope:
            return None
        user_id = conn.session.get("user_id")
        if not isinstance(user_id, int):
            return None
        async with state.uows.read() as uow:
            user = await uow.users.get_user_by_id(user_id)
        # disabled, or the session was issued before a logout, password change or disabling
        if user is None or user.disabled or conn.session.get("epoch") != user.session_epoch:
            conn.session.clear()
            return None
        return user


def on_auth_error(conn: HTTPConnection, exc: Exception) -> Response:
    if isinstance(exc, CsrfFailed):
        return error_response(
            403,
            "csrf_failed",
            "this request needs the page's CSRF token in the X-CSRF-Token header"
            " (reload the page and try again)",
        )
    response = error_response(
        401,
        Unauthenticated.code,
        f"{exc}; send 'Authorization: Bearer <token>' (create one with 'latina users create')",
    )
    response.headers["WWW-Authenticate"] = "Bearer"
    return response


def current_user(request: Request, role: Role = "trainer") -> User:
    """The authenticated user, who must hold ``role`` (admins hold every role)."""
    principal = request.user
    if not isinstance(principal, AuthenticatedUser):
        raise Unauthenticated("authentication required")
    if not principal.user.has_role(role):
        raise Forbidden(
            f"this needs the {role} role",
            code="forbidden_role",
            details={"required_role": role, "your_role": principal.user.role},
        )
    return principal.user
