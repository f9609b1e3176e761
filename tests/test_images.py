"""data_adapters.images and the synthetic inspection data: formats, rejections, video, MVTec layout."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from data_adapters.images import ImageError, iter_inputs, mvtec_split, read_image, read_mask
from data_adapters.synth.defects import DEFECT_KINDS, add_defect, kinds_for, perlin_noise
from data_adapters.synth.inspection import write_dataset
from data_adapters.synth.surfaces import CATEGORIES, Lighting, good_part


def _part(h: int = 40, w: int = 56) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_read_image_normalises_every_format(tmp_path):
    bgr = _part()
    cv2.imwrite(str(tmp_path / "c.png"), bgr)
    cv2.imwrite(str(tmp_path / "g.jpg"), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(tmp_path / "b.BMP"), bgr)
    cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(tmp_path / "w.png"), bgr.astype(np.uint16) * 257)
    for name in ("c.png", "g.jpg", "b.BMP", "a.png", "w.png"):
        image = read_image(tmp_path / name)
        assert image.shape == (40, 56, 3) and image.dtype == np.uint8, name
    # colour order is RGB and 16-bit scales back to the same 8-bit values
    np.testing.assert_array_equal(read_image(tmp_path / "c.png"), bgr[..., ::-1])
    np.testing.assert_array_equal(read_image(tmp_path / "w.png"), bgr[..., ::-1])


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.png", b"", "empty file"),
        ("broken.jpg", b"\xff\xd8\xff" + b"junk" * 20, "corrupt"),
        ("scan.tiff", b"II*\x00", "unsupported"),
    ],
)
def test_bad_files_raise_a_reason(tmp_path, name, content, reason):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ImageError, match=reason):
        read_image(tmp_path / name)


def test_folder_is_recursive_and_reports_rejects_in_order(tmp_path):
    (tmp_path / "line1" / "cam2").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "a.png"), _part())
    cv2.imwrite(str(tmp_path / "line1" / "cam2" / "b.jpg"), _part(30, 30))
    (tmp_path / "line1" / "zero.bmp").write_bytes(b"")
    (tmp_path / "readme.txt").write_text("not an image")
    (tmp_path / ".hidden.png").write_bytes(b"")
    items = list(iter_inputs(tmp_path))
    names = [i.name for i in items]
    assert names == ["a.png", "line1/cam2/b.jpg", "line1/zero.bmp", "readme.txt"]
    assert [i.ok for i in items] == [True, True, False, False]
    assert items[1].image.shape == (30, 30, 3)
    assert "0 bytes" in items[2].reason


def test_video_frames_and_a_broken_video(tmp_path):
    path = tmp_path / "line.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (48, 32))
    for i in range(5):
        writer.write(np.full((32, 48, 3), i * 40, np.uint8))
    writer.release()
    frames = list(iter_inputs(path))
    assert [f.name for f in frames] == [f"frame_{i:06d}" for i in range(5)]
    assert all(f.ok and f.image.shape == (32, 48, 3) for f in frames)
    assert [f.name for f in iter_inputs(path, video_every=2)] == ["frame_000000", "frame_000002", "frame_000004"]
    (tmp_path / "bad.avi").write_bytes(b"RIFF" + b"\x00" * 64)
    bad = list(iter_inputs(tmp_path / "bad.avi"))
    assert len(bad) == 1 and not bad[0].ok and bad[0].reason


def test_synthetic_dataset_is_mvtec_layout_and_deterministic(tmp_path):
    root = write_dataset(tmp_path / "a", "fabric", seed=3, scale="tiny")
    write_dataset(tmp_path / "b", "fabric", seed=3, scale="tiny")
    train = mvtec_split(root, "train")
    test = mvtec_split(root, "test")
    assert len(train.paths) == 10 and set(train.labels) == {0}
    assert set(test.kinds) == {"good", *kinds_for("fabric")}
    for path, label, mask in zip(test.paths, test.labels, test.masks):
        if label:
            assert mask is not None and mask.name == f"{path.stem}_mask.png"
            assert read_mask(mask, (64, 64)).any(), f"{mask} is empty"
        else:
            assert mask is None
    a = (tmp_path / "a" / "test" / "stain" / "000.png").read_bytes()
    assert a == (tmp_path / "b" / "test" / "stain" / "000.png").read_bytes()


def test_every_category_and_site_lighting():
    rng = np.random.default_rng(0)
    means = []
    for category in CATEGORIES:
        image = good_part(category, rng, 64)
        assert image.shape == (64, 64, 3) and 0 <= image.min() and image.max() <= 1
        assert image.std() > 0.01, f"{category} is flat"
    for site in range(3):
        means.append(good_part("metal", np.random.default_rng(0), 64, Lighting.for_site(site)).mean(axis=(0, 1)))
    assert not np.allclose(means[0], means[1], atol=0.01) and not np.allclose(means[1], means[2], atol=0.01)


@pytest.mark.parametrize("kind", DEFECT_KINDS)
def test_defects_change_the_part_where_the_mask_says(kind):
    rng = np.random.default_rng(1)
    part = good_part("fabric", rng, 96)
    defective, mask = add_defect(kind, part, rng)
    assert mask.dtype == np.uint8 and mask.any()
    inside = np.abs(defective - part)[mask > 0].mean()
    outside = np.abs(defective - part)[mask == 0].mean()
    assert inside > outside + 0.01


def test_perlin_noise_is_smooth_and_bounded():
    noise = perlin_noise((64, 64), (4, 4), np.random.default_rng(0))
    assert noise.shape == (64, 64) and np.abs(noise).max() <= 1.5
    assert np.abs(np.diff(noise, axis=1)).max() < 0.3  # neighbouring pixels differ little
