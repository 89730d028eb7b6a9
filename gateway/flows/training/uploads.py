"""Upload checks: the project id, the mode, the declared type against the bytes; the decoding.

Pure checks (the bytes decide an image's type, never its name), and the decoding off the event
loop. ``POST /api/enhance/train`` and ``POST /api/enhance`` both use them.
"""

from __future__ import annotations

import asyncio
import re

from gateway.domain.images import ValidatedImage, decode_upload
from gateway.errors import InvalidInput, UnsupportedMediaType

_PROJECT_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
_NAMED_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
}


def check_project(project_id: str | None) -> str:
    """The project an upload belongs to: ``default`` when none is given."""
    project = project_id or "default"
    if not _PROJECT_RE.match(project):
        raise InvalidInput(
            "project_id must be 1-64 letters, digits, '.', '_' or '-'", code="invalid_project_id"
        )
    return project


def check_mode(mode: str | None) -> str | None:
    """``ab``, ``active``, or None for the system to choose."""
    if mode not in (None, "", "ab", "active"):
        raise InvalidInput(
            "mode must be 'ab' (one option per API) or 'active' (K candidates, the reward"
            " model shows two)",
            code="unsupported_mode",
        )
    return mode or None


def check_declared_type(actual: str, filename: str | None, declared: str | None) -> None:
    """A file whose name or declared type says one image format but whose bytes are another is
    refused: the client is confused about what it sends (the bytes decide, never the name)."""
    claims = {
        _NAMED_TYPES.get("." + (filename or "").rsplit(".", 1)[-1].lower())
        if filename and "." in filename
        else None,
        declared if declared in EXTENSIONS else None,
    } - {None}
    if claims and claims != {actual}:
        raise UnsupportedMediaType(
            f"the file is {actual} but was sent as {', '.join(sorted(c for c in claims if c))}",
            code="image_type_mismatch",
            details={"actual": actual, "filename": filename, "declared": declared},
        )


def extension_for(content_type: str) -> str:
    """The file extension a stored image of ``content_type`` gets."""
    return EXTENSIONS.get(content_type, "png")


async def decode(upload: bytes, *, max_bytes: int, max_pixels: int) -> ValidatedImage:
    """The upload checked and decoded in a thread (Pillow work must not block the loop)."""
    return await asyncio.to_thread(
        decode_upload, upload, max_bytes=max_bytes, max_pixels=max_pixels
    )
