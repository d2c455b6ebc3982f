"""Functions of the `media-pipeline` example: probe an uploaded object and plan renditions."""

from __future__ import annotations

import hashlib
import mimetypes
from typing import Any


def probe(bucket: str, key: str) -> dict[str, Any]:
    """Describe an object. A real deployment would read its header from storage; the example
    derives stable dimensions from the key so that it runs anywhere."""
    digest = hashlib.sha256(f"{bucket}/{key}".encode()).digest()
    width = 640 + int.from_bytes(digest[:2], "big") % 3200
    height = 480 + int.from_bytes(digest[2:4], "big") % 2400
    content_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
    return {
        "bucket": bucket,
        "key": key,
        "width": width,
        "height": height,
        "content_type": content_type,
    }


def rendition(width: int, height: int, size: int) -> dict[str, Any]:
    """The dimensions of a thumbnail that fits in a `size` square, keeping the aspect ratio."""
    scale = min(size / width, size / height, 1.0)
    return {
        "size": size,
        "width": max(1, round(width * scale)),
        "height": max(1, round(height * scale)),
    }


def renditions(width: int, height: int, sizes: list[int]) -> list[dict[str, Any]]:
    return [rendition(width, height, s) for s in sizes]
