"""Upload validation: format sniffing, limits, corrupt data, orientation and metadata stripping."""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import ExifTags, Image, ImageCms, PngImagePlugin

from gateway.domain.images import ACCEPTED_TYPES, MIN_SIDE, ValidatedImage, decode_upload
from gateway.errors import STATUS_TABLE
from shared.errors import InvalidInput, LatinaError, PayloadTooLarge, UnsupportedMediaType
from shared.web_errors import status_for

MAX_BYTES = 5 * 1024 * 1024
MAX_PIXELS = 40_000_000


def _decode(
    data: bytes, *, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS
) -> ValidatedImage:
    return decode_upload(data, max_bytes=max_bytes, max_pixels=max_pixels)


def _photo(size: tuple[int, int] = (160, 120), mode: str = "RGB") -> Image.Image:
    # Noise, so encoders cannot shrink the file to nothing and truncation hits pixel data.
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels).convert(mode)


def _encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR declaring ``width`` x ``height``, with a few bytes of data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def _raises(exc_type: type[LatinaError], data: bytes, **limits: int) -> LatinaError:
    with pytest.raises(exc_type) as caught:
        _decode(data, **limits)
    return caught.value


@pytest.mark.parametrize(
    ("fmt", "content_type", "extension"),
    [("JPEG", "image/jpeg", "jpg"), ("PNG", "image/png", "png"), ("WEBP", "image/webp", "webp")],
)
def test_accepted_formats_are_reencoded_in_their_own_format(
    fmt: str, content_type: str, extension: str
) -> None:
    image = _decode(_encode(_photo(), fmt))

    assert (image.format, image.content_type, image.extension) == (fmt, content_type, extension)
    assert (image.width, image.height) == (160, 120)
    with Image.open(io.BytesIO(image.data)) as stored:
        assert stored.format == fmt
        assert stored.size == (160, 120)
        assert stored.mode == "RGB"
        assert not stored.getexif()


def test_exif_orientation_is_applied_and_exif_with_gps_is_dropped() -> None:
    # Left half red, right half blue; orientation 6 means "rotate 90° clockwise to display".
    image = Image.new("RGB", (200, 100), (255, 0, 0))
    image.paste((0, 0, 255), (100, 0, 200, 100))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.Base.Make] = "TrainerPhone"
    exif[ExifTags.IFD.GPSInfo] = {
        ExifTags.GPS.GPSLatitudeRef: "N",
        ExifTags.GPS.GPSLatitude: (48.0, 51.0, 24.0),
    }
    upload = _encode(image, "JPEG", exif=exif, quality=95)
    with Image.open(io.BytesIO(upload)) as original:  # the fixture really carries GPS
        assert original.getexif().get_ifd(ExifTags.IFD.GPSInfo)

    result = _decode(upload)

    assert (result.width, result.height) == (100, 200)
    with Image.open(io.BytesIO(result.data)) as stored:
        assert stored.size == (100, 200)
        top, bottom = stored.getpixel((50, 20)), stored.getpixel((50, 180))
        assert isinstance(top, tuple) and isinstance(bottom, tuple)
        assert top[0] > 200 and top[2] < 60  # red now on top
        assert bottom[2] > 200 and bottom[0] < 60  # blue at the bottom
        assert not stored.getexif()
        assert "exif" not in stored.info
    assert b"Exif" not in result.data
    assert b"TrainerPhone" not in result.data


def test_png_text_chunks_are_not_kept() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Location", "52.52 N, 13.40 E")
    upload = _encode(_photo(), "PNG", pnginfo=info)
    assert b"Location" in upload

    result = _decode(upload)

    assert b"Location" not in result.data
    with Image.open(io.BytesIO(result.data)) as stored:
        assert "Location" not in stored.info


def test_colour_profile_is_applied_then_dropped() -> None:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    upload = _encode(Image.new("RGB", (96, 96), (200, 120, 40)), "JPEG", icc_profile=srgb)
    assert srgb in upload

    result = _decode(upload)

    assert srgb not in result.data
    with Image.open(io.BytesIO(result.data)) as stored:
        assert "icc_profile" not in stored.info
        pixel = stored.getpixel((48, 48))
        assert isinstance(pixel, tuple)
        assert max(abs(a - b) for a, b in zip(pixel, (200, 120, 40), strict=True)) <= 4


def test_png_uploaded_under_a_jpg_name_is_identified_as_png_from_its_bytes() -> None:
    # The client says "room.jpg" / image/jpeg; decode_upload never sees either, only bytes.
    declared_name, declared_type = "room.jpg", "image/jpeg"
    upload = _encode(_photo(), "PNG")

    result = _decode(upload)

    assert (result.format, result.content_type, result.extension) == ("PNG", "image/png", "png")
    assert result.extension != declared_name.rsplit(".", 1)[1]
    assert result.content_type != declared_type


def test_transparent_png_is_flattened_onto_white() -> None:
    image = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    image.paste((0, 128, 0, 255), (0, 0, 50, 100))

    result = _decode(_encode(image, "PNG"))

    with Image.open(io.BytesIO(result.data)) as stored:
        assert stored.mode == "RGB"
        assert stored.getpixel((75, 50)) == (255, 255, 255)
        assert stored.getpixel((25, 50)) == (0, 128, 0)


@pytest.mark.parametrize(
    "upload",
    [
        pytest.param(b"just some text, not an image\n" * 10, id="text"),
        pytest.param(b'<svg xmlns="http://www.w3.org/2000/svg" width="99"/>', id="svg"),
        pytest.param(_encode(_photo(), "GIF"), id="gif"),
        pytest.param(_encode(_photo(), "BMP"), id="bmp"),
        pytest.param(_encode(_photo(), "TIFF"), id="tiff"),
    ],
)
def test_other_types_are_refused_with_415(upload: bytes) -> None:
    error = _raises(UnsupportedMediaType, upload)

    assert status_for(error, STATUS_TABLE) == 415
    assert error.code == "unsupported_image_type"
    assert error.details["accepted"] == list(ACCEPTED_TYPES)
    assert "JPEG, PNG or WebP" in error.message


def test_truncated_jpeg_is_refused_as_corrupt() -> None:
    whole = _encode(_photo((256, 256)), "JPEG", quality=90)

    error = _raises(InvalidInput, whole[: len(whole) * 6 // 10])

    assert status_for(error, STATUS_TABLE) == 422
    assert error.code == "corrupt_image"


def test_png_with_a_damaged_checksum_is_refused_as_corrupt() -> None:
    damaged = bytearray(_encode(_photo(), "PNG"))
    damaged[len(damaged) // 2] ^= 0xFF

    assert _raises(InvalidInput, bytes(damaged)).code == "corrupt_image"


@pytest.mark.parametrize("size", [(1, 1), (MIN_SIDE - 1, 400), (400, MIN_SIDE - 1)])
def test_images_below_the_minimum_side_are_refused(size: tuple[int, int]) -> None:
    error = _raises(InvalidInput, _encode(Image.new("RGB", size, "grey"), "PNG"))

    assert status_for(error, STATUS_TABLE) == 422
    assert error.code == "image_too_small"
    assert (error.details["width"], error.details["height"]) == size


def test_an_image_at_the_minimum_side_is_accepted() -> None:
    result = _decode(_encode(Image.new("RGB", (MIN_SIDE, MIN_SIDE), "grey"), "PNG"))

    assert (result.width, result.height) == (MIN_SIDE, MIN_SIDE)


@pytest.mark.parametrize("side", [10_000, 100_000])
def test_dimension_bomb_is_refused_from_its_header_without_decoding(side: int) -> None:
    bomb = _png_header_only(side, side)
    assert len(bomb) < 200
    max_pixels_before = Image.MAX_IMAGE_PIXELS

    started = time.perf_counter()
    error = _raises(InvalidInput, bomb)
    elapsed = time.perf_counter() - started

    assert error.code == "image_too_large"
    assert status_for(error, STATUS_TABLE) == 422
    assert error.details == {"width": side, "height": side, "max_pixels": MAX_PIXELS}
    assert elapsed < 0.5  # decoding 10^8+ pixels would take far longer (and gigabytes)
    assert max_pixels_before == Image.MAX_IMAGE_PIXELS  # no global limit was touched


def test_pixel_limit_applies_to_real_images_too() -> None:
    upload = _encode(_photo((200, 100)), "PNG")

    error = _raises(InvalidInput, upload, max_pixels=200 * 100 - 1)

    assert error.code == "image_too_large"
    assert _decode(upload, max_pixels=200 * 100).width == 200


def test_oversize_upload_is_refused_with_413_before_anything_else() -> None:
    upload = _encode(_photo(), "PNG")

    error = _raises(PayloadTooLarge, upload, max_bytes=len(upload) - 1)

    assert status_for(error, STATUS_TABLE) == 413
    assert error.code == "upload_too_large"
    assert error.details["max_bytes"] == len(upload) - 1
    # the limit is checked first: even a non-image that is too big gets 413, not 415
    assert _raises(PayloadTooLarge, b"x" * 101, max_bytes=100).code == "upload_too_large"


def test_empty_upload_is_refused() -> None:
    error = _raises(InvalidInput, b"")

    assert error.code == "empty_upload"
    assert error.message
