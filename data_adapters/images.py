"""Images as a factory camera delivers them: single files, folder trees, video, MVTec AD and VisA layouts.

A line does not stop for one bad file, so readers never raise on a corrupt, empty or unsupported
input: they yield it as a rejected item with a reason, and the command reports it (exit code 3)
after inspecting everything else. Every accepted image comes out the same way, whatever it was on
disk (8/16-bit, grayscale, BGR, BGRA): uint8 RGB, shape (H, W, 3).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_adapters import image_limits

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
VIDEO_SUFFIXES = (".avi", ".mp4", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv")


class ImageError(ValueError):
    """An input that cannot be inspected; the message is the reason shown to the user."""


@dataclass
class InputItem:
    """One unit of work: an image (or a video frame) by name, or a rejection with its reason."""

    name: str  # relative path for folders, file name for a single image, frame_000123 for video
    image: np.ndarray | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.image is not None


def to_rgb8(decoded: np.ndarray) -> np.ndarray:
    """Any decoded OpenCV image (gray, BGR, BGRA; 8 or 16 bit) as uint8 RGB."""
    import cv2

    image = decoded
    if image.dtype == np.uint16:
        image = (image / 257.0 + 0.5).astype(np.uint8)
    elif image.dtype != np.uint8:
        scaled = image.astype(np.float64)
        span = float(scaled.max() - scaled.min()) or 1.0
        image = ((scaled - scaled.min()) / span * 255 + 0.5).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 1:
        return cv2.cvtColor(image[..., 0], cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_image(path: str | Path) -> np.ndarray:
    """Decode one image file to uint8 RGB, or raise ImageError saying why it cannot be used."""
    import cv2

    path = Path(path)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ImageError(f"unsupported file type '{path.suffix or path.name}' (use PNG, JPEG or BMP)")
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise ImageError(f"unreadable file ({exc.strerror or exc})") from None
    if data.size == 0:
        raise ImageError("empty file (0 bytes)")
    declared = image_limits.header_size(path)  # before decoding: a small file may declare gigapixels
    if declared is not None and (reason := image_limits.problem(*declared)):
        raise ImageError(reason)
    decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if decoded is None or decoded.size == 0:
        raise ImageError("corrupt or truncated image (decoder failed)")
    if reason := image_limits.problem(decoded.shape[1], decoded.shape[0]):
        raise ImageError(reason)
    return to_rgb8(decoded)


def read_mask(path: str | Path, shape: tuple[int, int], threshold: int = 127) -> np.ndarray:
    """A ground-truth mask as bool (H, W) (pixels above `threshold`), resized to `shape` (nearest neighbour).

    127 suits MVTec's 0/255 masks and survives JPEG noise; VisA numbers defect instances 1, 2, ...
    so its masks are read with threshold 0.
    """
    import cv2

    mask = read_image(path)[..., 0] > threshold
    if mask.shape != tuple(shape):
        mask = cv2.resize(mask.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST) > 0
    return mask


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def iter_video(path: str | Path, every: int = 1) -> Iterator[InputItem]:
    """Frames of a video file as `frame_000123` items (every `every`-th frame), decoded by OpenCV."""
    import cv2

    path = Path(path)
    if path.stat().st_size == 0:
        yield InputItem(path.name, reason="empty file (0 bytes)")
        return
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            yield InputItem(path.name, reason="video could not be opened (corrupt or unsupported codec)")
            return
        size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        if all(size) and (reason := image_limits.problem(*size)):
            yield InputItem(path.name, reason=f"video frames: {reason}")
            return
        index = 0
        produced = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            if index % every == 0:
                produced += 1
                yield InputItem(f"frame_{index:06d}", image=to_rgb8(frame))
            index += 1
        if produced == 0:
            yield InputItem(path.name, reason="video holds no decodable frames")
    finally:
        capture.release()


def _read_item(name: str, path: Path) -> InputItem:
    try:
        return InputItem(name, image=read_image(path))
    except ImageError as exc:
        return InputItem(name, reason=str(exc))


def iter_inputs(source: str | Path, video_every: int = 1) -> Iterator[InputItem]:
    """Everything under `source` (an image, a folder searched recursively, or a video) in a stable order.

    Folders yield every file (sorted by relative path); files that are not images are rejected
    items rather than silently skipped, so a user sees that their .tiff or .txt was not inspected.
    Hidden files (dot files) are skipped. Videos inside folders are expanded as `<rel>/frame_N`.
    """
    root = Path(source)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such file or folder")
    if root.is_file():
        if is_video(root):
            yield from iter_video(root, video_every)
        else:
            yield _read_item(root.name, root)
        return
    files = sorted(p for p in root.rglob("*") if p.is_file() and not any(s.startswith(".") for s in p.parts[-1:]))
    for path in files:
        rel = path.relative_to(root).as_posix()
        if is_video(path):
            for item in iter_video(path, video_every):
                item.name = f"{rel}/{item.name}" if item.ok else rel
                yield item
        else:
            yield _read_item(rel, path)


@dataclass
class LabelledSet:
    """A dataset split (MVTec AD or VisA): image paths with labels, defect kinds and ground-truth mask paths."""

    paths: list[Path] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)  # 0 good, 1 defective
    kinds: list[str] = field(default_factory=list)  # "good" or the defect folder name
    masks: list[Path | None] = field(default_factory=list)
    mask_threshold: int = 127  # read_mask's threshold for this layout's masks


def dataset_split(root: str | Path, split: str) -> LabelledSet:
    """`split` ("train" or "test") of an MVTec AD folder or a VisA root/object folder, detected by layout.

    VisA is recognised by its split file (split_csv/1cls.csv in `root` or its parent); anything
    else is read as MVTec AD. FileNotFoundError when neither layout is there; ValueError for a
    VisA split file with bad rows.
    """
    from data_adapters.visa import find_split_csv, visa_split

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset folder not found")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if find_split_csv(root) is not None and not (root / "train" / "good").is_dir():
        return visa_split(root, split)
    return mvtec_split(root, split)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def mvtec_split(root: str | Path, split: str) -> LabelledSet:
    """List `root/train/good` (split "train") or every `root/test/<kind>` (split "test").

    Masks follow MVTec's naming, `ground_truth/<kind>/<stem>_mask.png`; a defective image without
    one gets None (image-level metrics still count it; pixel metrics skip it).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset folder not found")
    if split == "train":
        folder = root / "train" / "good"
        if not folder.is_dir():
            raise FileNotFoundError(f"{root}: not an MVTec-layout dataset (no train/good folder)")
        paths = _images_in(folder)
        return LabelledSet(paths, [0] * len(paths), ["good"] * len(paths), [None] * len(paths))
    if split != "test":
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    test = root / "test"
    if not test.is_dir():
        raise FileNotFoundError(f"{root}: not an MVTec-layout dataset (no test folder)")
    out = LabelledSet()
    for kind_dir in sorted(p for p in test.iterdir() if p.is_dir()):
        kind = kind_dir.name
        for path in _images_in(kind_dir):
            mask = None
            if kind != "good":
                candidates = [root / "ground_truth" / kind / f"{path.stem}_mask{s}" for s in IMAGE_SUFFIXES]
                mask = next((c for c in candidates if c.is_file()), None)
            out.paths.append(path)
            out.labels.append(0 if kind == "good" else 1)
            out.kinds.append(kind)
            out.masks.append(mask)
    return out
