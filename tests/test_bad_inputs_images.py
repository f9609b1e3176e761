"""Images a factory should not feed `manufacturing inspect` (issue 18, Images), built by code.

The oversized cases are real files that declare huge dimensions in a few kilobytes (a PNG whose
IHDR says 20000 x 20000, compressed zeros); the check must refuse them from the header, so the
test also bounds the memory the read costs.
"""

from __future__ import annotations

import resource
import struct
import subprocess
import sys
import zlib

import cv2
import numpy as np
import pytest

from data_adapters.images import ImageError, iter_inputs, read_image


def _png(path, width: int, height: int) -> None:
    """A valid grayscale PNG of zeros, written by hand so any size costs only its compressed bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = zlib.compressobj(9)
    row = b"\x00" * (width + 1)
    body = b"".join(raw.compress(row) for _ in range(height)) + raw.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def test_a_20000_px_square_png_is_refused_from_its_header(tmp_path):
    path = tmp_path / "bomb.png"
    _png(path, 20_000, 20_000)
    assert path.stat().st_size < 1_000_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ImageError, match="20000x20000 pixels is over the limit"):
        read_image(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB: nothing decoded


@pytest.mark.parametrize(
    ("suffix", "shape", "reason"),
    [
        (".png", (1, 1), "too small"),
        (".bmp", (5000, 1), "too small"),
        (".jpg", (10, 200), "too small"),
        (".png", (20, 1000), "too elongated"),
        (".jpg", (2100, 100), "too elongated"),
    ],
)
def test_too_small_or_too_elongated_images_are_rejected(tmp_path, suffix, shape, reason):
    path = tmp_path / f"x{suffix}"
    cv2.imwrite(str(path), np.full((*shape, 3), 128, np.uint8))
    with pytest.raises(ImageError, match=reason):
        read_image(path)


def test_the_pixel_limit_is_configurable_and_checked_for_video_frames(tmp_path, monkeypatch):
    cv2.imwrite(str(tmp_path / "ok.png"), np.full((100, 120, 3), 9, np.uint8))
    monkeypatch.setenv("FEDSITE_MAX_IMAGE_PIXELS", "10000")
    with pytest.raises(ImageError, match="over the limit of 10,000"):
        read_image(tmp_path / "ok.png")
    writer = cv2.VideoWriter(str(tmp_path / "v.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5, (200, 100))
    for i in range(3):
        writer.write(np.full((100, 200, 3), i * 40, np.uint8))
    writer.release()
    items = list(iter_inputs(tmp_path / "v.avi"))
    assert len(items) == 1 and "video frames: 200x100 pixels is over the limit" in items[0].reason
    monkeypatch.delenv("FEDSITE_MAX_IMAGE_PIXELS")
    assert read_image(tmp_path / "ok.png").shape == (100, 120, 3)


def test_opencv_native_warnings_never_reach_stderr(tmp_path):
    """A broken video and a cut PNG make OpenCV's C++ code (and its FFmpeg) log: not on our stderr."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200)
    good = cv2.imencode(".png", np.full((64, 64, 3), 50, np.uint8))[1].tobytes()
    (folder / "cut.png").write_bytes(good[: len(good) // 2])
    code = (
        "import sys; from common import console; console.configure(False);"
        "from data_adapters.images import iter_inputs;"
        f"print([i.reason for i in iter_inputs({str(folder)!r})])"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "video could not be opened" in proc.stdout or "no decodable frames" in proc.stdout
    assert proc.stderr == "", proc.stderr  # no "[ WARN:0@...]", no FFmpeg "moov atom not found"
