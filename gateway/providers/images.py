"""Image helpers shared by the providers: sizes, data URIs and checking what came back."""

from __future__ import annotations

import base64
import binascii
import io
import re
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from shared.errors import UpstreamError

# Only the formats the gateway itself accepts may come back from an upstream.
_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
_DATA_URI = re.compile(r"^data:(image/[A-Za-z0-9.+-]+)(;[^,]*)?;base64,(.*)$", re.DOTALL)


@dataclass(frozen=True)
class DecodedImage:
    """What a checked image is: its MIME type and pixel size."""

    content_type: str
    width: int
    height: int


def decode_image(data: bytes, upstream: str, *, max_pixels: int | None = None) -> DecodedImage:
    """Check that ``data`` is a whole PNG/JPEG/WebP image of at most ``max_pixels`` (read from
    the header, before anything is decoded) and read its type and size.

    Raises:
        UpstreamError: The bytes are not such an image (truncated, another format, a bomb;
            ``upstream_image_too_large`` over ``max_pixels``).
    """
    try:
        with Image.open(io.BytesIO(data), formats=list(_FORMATS)) as image:
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                raise UpstreamError(
                    f"{upstream} returned an image of {width}x{height} pixels, more than"
                    f" {max_pixels}",
                    upstream=upstream,
                    code="upstream_image_too_large",
                    details={"width": width, "height": height, "max_pixels": max_pixels},
                )
            image.load()  # a truncated download fails here, not later in a thumbnailer
            fmt = image.format or ""
            width, height = image.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise UpstreamError(
            f"{upstream} returned something that is not a readable image", upstream=upstream
        ) from exc
    return DecodedImage(_FORMATS[fmt], width, height)


def fit_within(width: int, height: int, limit: int, multiple: int = 8) -> tuple[int, int]:
    """The largest size ≤ ``limit`` on both sides with the original's aspect, in ``multiple``s.

    Smaller originals keep their size (rounded to the multiple): nothing is upscaled.
    """
    scale = min(1.0, limit / max(width, height))

    def snap(side: int) -> int:
        return max(multiple, min(limit, round(side * scale / multiple) * multiple))

    return snap(width), snap(height)


def to_data_uri(data: bytes, content_type: str) -> str:
    """``data:<type>;base64,<data>``."""
    return f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}"


def is_data_uri(value: str) -> bool:
    """Whether ``value`` is a ``data:`` URI rather than a URL."""
    return value[:5].lower() == "data:"


def from_data_uri(uri: str, upstream: str) -> bytes:
    """The bytes of a ``data:image/...;base64,`` URI.

    Raises:
        UpstreamError: Not a base64 image data URI.
    """
    match = _DATA_URI.match(uri)
    if match is None:
        raise UpstreamError(
            f"{upstream} returned a data URI that is not an image", upstream=upstream
        )
    try:
        return base64.b64decode(match.group(3), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise UpstreamError(
            f"{upstream} returned a data URI with invalid base64", upstream=upstream
        ) from exc
