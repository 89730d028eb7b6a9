"""Bearer-token authentication for ``/api/*`` and role checks for routes."""

from __future__ import annotations

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


class TokenBackend(AuthenticationBackend):
    """Every ``/api/*`` request needs a valid token; other paths are public or check themselves."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        if not conn.url.path.startswith(PROTECTED_PREFIX):
            return None
        header = conn.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationError("missing bearer token")
        state: GatewayState = conn.state.gateway
        user = await authenticate_token(state.pool, token.strip())
        if user is None:
            raise AuthenticationError("invalid or revoked token")
        return AuthCredentials(["authenticated", user.role]), AuthenticatedUser(user)


def on_auth_error(conn: HTTPConnection, exc: Exception) -> Response:
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
