"""Image dimensions checked from the file header, before a single pixel is decoded.

Why: a 388 KB PNG can declare 20000 x 20000 pixels; decoding it took 16.4 GB of memory before
anything looked at its size, and 1x1 or 1x5000 "parts" were scored as if they could show a defect.
Pillow's lazy `Image.open` reads only the header (PNG IHDR, JPEG SOF, BMP info header), so the
limits below cost microseconds and hold whatever the file claims.

- at most FEDSITE_MAX_IMAGE_PIXELS pixels (default 100 million: a 12k x 8k line-scan frame fits);
- at least MIN_SIDE pixels on each side (a defect needs room to show);
- at most MAX_ASPECT between the long and the short side.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

DEFAULT_MAX_PIXELS = 100_000_000
MIN_SIDE = 16
MAX_ASPECT = 20.0


def max_pixels() -> int:
    """The pixel limit: FEDSITE_MAX_IMAGE_PIXELS when set to a positive integer, else the default."""
    raw = os.environ.get("FEDSITE_MAX_IMAGE_PIXELS", "")
    return int(raw) if raw.isdigit() and int(raw) > 0 else DEFAULT_MAX_PIXELS


def problem(width: int, height: int) -> str | None:
    """Why an image of `width` x `height` cannot be inspected, or None."""
    limit = max_pixels()
    if width * height > limit:
        return f"{width}x{height} pixels is over the limit of {limit:,} (FEDSITE_MAX_IMAGE_PIXELS)"
    if min(width, height) < MIN_SIDE:
        return f"{width}x{height} pixels is too small to inspect (under {MIN_SIDE} px a side)"
    if max(width, height) > MAX_ASPECT * min(width, height):
        return f"{width}x{height} pixels is too elongated to inspect (sides more than {MAX_ASPECT:g}:1)"
    return None


def header_size(path: str | Path) -> tuple[int, int] | None:
    """(width, height) as the file's header declares them, or None when Pillow cannot read the header
    (the decoder then decides; its result is checked again)."""
    from PIL import Image

    with _pillow_lock:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # our limit applies, not Pillow's
        try:
            with Image.open(path) as image:  # lazy: reads the header only
                return image.size
        except Exception:  # not a format Pillow knows, or a header it cannot parse
            return None
        finally:
            Image.MAX_IMAGE_PIXELS = saved


_pillow_lock = threading.Lock()
