"""Upload validation: sniff, bound, decode and re-encode a trainer's interior image.

``decode_upload`` is pure and synchronous (the caller runs it in a worker thread). It trusts only
the bytes: the filename and declared content type are never consulted. What comes out is a clean
re-encoding in the upload's own format, EXIF-orientated, in sRGB, with no metadata at all, so
camera EXIF and GPS positions never reach storage.

Decompression bombs: Pillow's own guard reads the process-wide ``Image.MAX_IMAGE_PIXELS`` and
reports through the global ``warnings`` machinery; neither can be adjusted per call without
racing other worker threads. So the header is parsed by the format's plugin class directly
(which parses the header only and skips that global check) and our own limit, ``max_pixels``,
is enforced on the declared dimensions before a single pixel is decoded.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
from PIL import (
    Image,
    ImageCms,
    ImageFile,
    ImageOps,
    JpegImagePlugin,
    PngImagePlugin,
    WebPImagePlugin,
)

from shared.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType

ImageFormat = Literal["JPEG", "PNG", "WEBP"]

MIN_SIDE: Final = 64
ACCEPTED_TYPES: Final = ("image/jpeg", "image/png", "image/webp")

_CONTENT_TYPES: Final[dict[ImageFormat, tuple[str, str]]] = {
    "JPEG": ("image/jpeg", "jpg"),
    "PNG": ("image/png", "png"),
    "WEBP": ("image/webp", "webp"),
}
_PLUGINS: Final[dict[ImageFormat, type[ImageFile.ImageFile]]] = {
    "JPEG": JpegImagePlugin.JpegImageFile,
    "PNG": PngImagePlugin.PngImageFile,
    "WEBP": WebPImagePlugin.WebPImageFile,
}
# Everything Pillow raises for a broken header or broken pixel data.
_DECODE_ERRORS: Final = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    TypeError,
    struct.error,
)
_SRGB: Final = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@dataclass(frozen=True)
class ValidatedImage:
    """A validated upload, re-encoded without metadata; ``width``/``height`` are upright."""

    data: bytes
    content_type: str
    extension: str
    width: int
    height: int
    format: ImageFormat


def decode_upload(data: bytes, *, max_bytes: int, max_pixels: int) -> ValidatedImage:
    """Validate an uploaded image and return a clean re-encoding of it.

    Args:
        data: The uploaded bytes, as received.
        max_bytes: Largest accepted upload in bytes.
        max_pixels: Largest accepted width x height, checked on the header before decoding.

    Returns:
        The image orientated by its EXIF tag, flattened onto white, converted to sRGB and
        re-encoded in its own format (JPEG/WebP at quality 95, PNG) without any metadata.

    Raises:
        InvalidInput: ``empty_upload``, ``image_too_large``, ``image_too_small`` or
            ``corrupt_image``.
        PayloadTooLarge: ``upload_too_large`` when ``data`` exceeds ``max_bytes``.
        UnsupportedMediaType: ``unsupported_image_type`` unless the bytes are JPEG, PNG or WebP.
    """
    if not data:
        raise InvalidInput("the upload is empty", code="empty_upload")
    if len(data) > max_bytes:
        raise PayloadTooLarge(
            f"the upload is {len(data)} bytes; the limit is {max_bytes} bytes",
            code="upload_too_large",
            details={"max_bytes": max_bytes, "size": len(data)},
        )
    fmt = sniff_format(data)
    if fmt is None:
        raise UnsupportedMediaType(
            "unsupported image type; upload a JPEG, PNG or WebP image",
            code="unsupported_image_type",
            details={"accepted": list(ACCEPTED_TYPES)},
        )
    width, height = _header_size(data, fmt)
    if width * height > max_pixels:
        raise InvalidInput(
            f"the image is {width}x{height} pixels; the limit is {max_pixels} pixels",
            code="image_too_large",
            details={"width": width, "height": height, "max_pixels": max_pixels},
        )
    if min(width, height) < MIN_SIDE:
        raise InvalidInput(
            f"the image is {width}x{height} pixels; both sides must be at least {MIN_SIDE}",
            code="image_too_small",
            details={"width": width, "height": height, "min_side": MIN_SIDE},
        )
    rgb = _normalise(_decode(data, fmt))
    content_type, extension = _CONTENT_TYPES[fmt]
    return ValidatedImage(
        data=_encode(rgb, fmt),
        content_type=content_type,
        extension=extension,
        width=rgb.width,
        height=rgb.height,
        format=fmt,
    )


def sniff_format(data: bytes) -> ImageFormat | None:
    """The accepted format the leading bytes announce, or ``None`` for anything else."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _corrupt(fmt: ImageFormat, exc: BaseException) -> InvalidInput:
    return InvalidInput(
        f"the {fmt} image is truncated or corrupt and cannot be decoded",
        code="corrupt_image",
        details={"format": fmt, "reason": str(exc)[:200]},
    )


def _open_header(data: bytes, fmt: ImageFormat) -> ImageFile.ImageFile:
    # The plugin constructor parses the header only: no pixel buffer is allocated yet.
    try:
        return _PLUGINS[fmt](io.BytesIO(data))
    except _DECODE_ERRORS as exc:
        raise _corrupt(fmt, exc) from exc


def _header_size(data: bytes, fmt: ImageFormat) -> tuple[int, int]:
    with _open_header(data, fmt) as im:
        return im.size


def _decode(data: bytes, fmt: ImageFormat) -> Image.Image:
    try:
        with _open_header(data, fmt) as probe:
            probe.verify()  # checksums and structure, without decoding (PNG CRCs, chunk order)
        im = _open_header(data, fmt)  # verify() leaves the file unusable: parse again
        im.load()
    except Image.DecompressionBombError as exc:  # defensive: our own limit runs first
        raise InvalidInput(
            "the image is too large to decode", code="image_too_large", details={}
        ) from exc
    except _DECODE_ERRORS as exc:
        raise _corrupt(fmt, exc) from exc
    return im


def _normalise(im: Image.Image) -> Image.Image:
    """Upright, alpha flattened onto white, sRGB, 8-bit RGB, ``info`` emptied."""
    icc = im.info.get("icc_profile")
    try:
        upright = ImageOps.exif_transpose(im)
    except _DECODE_ERRORS:
        # A malformed EXIF block: the pixels are fine, only the orientation is unknown.
        upright = im
    if upright.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        # 16-bit greyscale PNG: convert() would clip to 255, so rescale to 8 bits instead.
        wide = np.asarray(upright, dtype=np.float64) / 257.0
        upright = Image.fromarray(np.clip(wide + 0.5, 0, 255).astype(np.uint8))
    if upright.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in upright.info:
        rgba = upright.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        upright = Image.alpha_composite(white, rgba).convert("RGB")
    rgb = _to_srgb(upright, icc if isinstance(icc, bytes) else None)
    rgb.info = {}  # convert() copies info (dpi, comments, XMP ...): nothing of it is stored
    return rgb


def _to_srgb(im: Image.Image, icc: bytes | None) -> Image.Image:
    # The profile is dropped on re-encoding, so a Display-P3 or Adobe RGB photo must have its
    # numbers converted to sRGB now or it would be stored visibly desaturated.
    if icc:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            converted = ImageCms.profileToProfile(im, source, _SRGB, outputMode="RGB")
            if converted is not None:
                return converted
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            pass  # a broken or mismatched profile: keep the numbers as they are
    return im.convert("RGB")


def _encode(rgb: Image.Image, fmt: ImageFormat) -> bytes:
    out = io.BytesIO()
    if fmt == "JPEG":
        rgb.save(out, format="JPEG", quality=95)
    elif fmt == "WEBP":
        rgb.save(out, format="WEBP", quality=95)
    else:
        rgb.save(out, format="PNG")
    return out.getvalue()


def downscaled_jpeg(data: bytes, max_side: int = 512, quality: int = 85) -> bytes:
    """A stored image made small for the ML service's feature extraction (<= ``max_side``)."""
    with Image.open(io.BytesIO(data)) as opened:
        rgb = opened.convert("RGB")
    rgb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    rgb.save(out, "JPEG", quality=quality)
    return out.getvalue()
