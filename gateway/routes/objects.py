"""Objects of the local store, served only through URLs the gateway signed."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import NotFound
from gateway.state import gateway_state
from shared.storage.local import LocalObjectStore


async def signed_object(request: Request) -> Response:
    store = gateway_state(request).store
    if not isinstance(store, LocalObjectStore):
        raise NotFound("objects are served by S3 in this deployment")
    data, content_type = await store.read_signed(
        request.path_params["bucket"],
        request.path_params["key"],
        request.query_params.get("expires", ""),
        request.query_params.get("sig", ""),
    )
    headers = {"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"}
    body = b"" if request.method == "HEAD" else data
    return Response(body, media_type=content_type, headers=headers)
