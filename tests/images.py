"""Test images made on the spot (no files shipped): a small interior-like scene."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw


def interior(width: int = 256, height: int = 192, fmt: str = "JPEG") -> bytes:
    image = Image.new("RGB", (width, height), (200, 190, 170))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, int(height * 0.65), width, height), fill=(120, 90, 60))  # floor
    draw.rectangle(
        (int(width * 0.1), int(height * 0.2), int(width * 0.35), int(height * 0.55)),
        fill=(170, 210, 240),
    )  # window
    draw.rectangle(
        (int(width * 0.5), int(height * 0.45), int(width * 0.9), int(height * 0.75)),
        fill=(60, 70, 90),
    )  # sofa
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()
