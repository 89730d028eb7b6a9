"""Who am I, and (for admins) who is there."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.auth import current_user
from gateway.flows.accounts import list_accounts
from gateway.repositories.users import User
from gateway.state import gateway_state
from shared.wire.gateway import UserList, UserView, response_json


def _view(user: User) -> UserView:
    return UserView(
        id=user.id,
        name=user.name,
        role=user.role,
        created_at=user.created_at.isoformat(),
        disabled=user.disabled,
    )


async def me(request: Request) -> Response:
    return JSONResponse(response_json(_view(current_user(request))))


async def list_users(request: Request) -> Response:
    current_user(request, "admin")
    items = await list_accounts(gateway_state(request).uows)
    return JSONResponse(response_json(UserList(items=[_view(u) for u in items])))
