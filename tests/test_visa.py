"""VisA beside MVTec AD: the same synthetic parts in both layouts read as the same labelled data.

The VisA copy is written here as VisA ships: `split_csv/1cls.csv` (object,split,label,image,mask),
JPEG images under `<object>/Data/Images/{Normal,Anomaly}`, PNG masks under
`<object>/Data/Masks/Anomaly` whose defect instances are numbered 1, 2, ... (not 255).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json

import cv2
import numpy as np
import pytest

from common.cli import main
from common.progress import set_quiet
from data_adapters.images import dataset_split, mvtec_split
from verticals.manufacturing import TASK
from verticals.manufacturing.data import load_split

TINY = ["image_size=64", "width=8", "epochs=1", "steps_per_epoch=6", "crop=64"]


def _to_visa(mvtec, visa, obj: str) -> None:
    rows = [["object", "split", "label", "image", "mask"]]
    for split in ("train", "test"):
        listing = mvtec_split(mvtec, split)
        for n, (path, label, mask) in enumerate(zip(listing.paths, listing.labels, listing.masks)):
            folder = "Anomaly" if label else "Normal"
            image_rel = f"{obj}/Data/Images/{folder}/{split}{n:03d}.JPG"
            (visa / image_rel).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(visa / image_rel), cv2.imread(str(path)), [cv2.IMWRITE_JPEG_QUALITY, 95])
            mask_rel = ""
            if label:
                mask_rel = f"{obj}/Data/Masks/Anomaly/{split}{n:03d}.png"
                (visa / mask_rel).parent.mkdir(parents=True, exist_ok=True)
                instances = cv2.connectedComponents((cv2.imread(str(mask), 0) > 127).astype(np.uint8))[1]
                cv2.imwrite(str(visa / mask_rel), instances.astype(np.uint8))  # 0 background, 1, 2, ...
            rows.append([obj, split, "anomaly" if label else "normal", image_rel, mask_rel])
    anno = [["image", "label", "mask"]] + [[r[3], "normal" if r[2] == "normal" else "", r[4]] for r in rows[1:]]
    kinds = iter(["bent", "chip around edge,damaged corner"] * len(rows))
    anno = [anno[0]] + [[i, lab or next(kinds), m] for i, lab, m in anno[1:]]
    with open(visa / obj / "image_anno.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(anno)
    (visa / "split_csv").mkdir(parents=True, exist_ok=True)
    with open(visa / "split_csv" / "1cls.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    set_quiet(True)
    root = tmp_path_factory.mktemp("visa")
    assert main(["manufacturing", "synth", "--out", str(root / "mvtec"), "--scale", "tiny", "--seed", "4"]) == 0
    _to_visa(root / "mvtec", root / "VisA", "pcb1")
    yield root
    set_quiet(False)


def test_visa_object_folder_lists_the_same_parts_and_masks(both):
    mvtec, visa = both / "mvtec", both / "VisA" / "pcb1"
    for split in ("train", "test"):
        a, b = mvtec_split(mvtec, split), dataset_split(visa, split)
        assert sorted(a.labels) == sorted(b.labels) and len(b.paths) > 0
        assert all(p.suffix == ".JPG" for p in b.paths)
    test = dataset_split(visa, "test")
    assert test.mask_threshold == 0 and all((m is None) == (lab == 0) for m, lab in zip(test.masks, test.labels))
    assert dataset_split(both / "VisA", "test").paths == test.paths  # the root works when it holds one object
    assert dataset_split(mvtec, "test").mask_threshold == 127  # MVTec is still MVTec
    # image_anno.csv names the defects: comma-separated names become one kind
    assert set(test.kinds) == {"good", "bent", "chip_around_edge+damaged_corner"}


def test_load_split_reads_visa_as_it_reads_mvtec(both):
    cfg = TASK.tiny_config()
    for split in ("train", "test"):
        a = load_split(cfg, both / "mvtec", split)
        b = load_split(cfg, both / "VisA" / "pcb1", split)
        order_a, order_b = np.argsort(a.labels, kind="stable"), np.argsort(b.labels, kind="stable")
        assert np.array_equal(a.labels[order_a], b.labels[order_b])
        assert np.array_equal(a.has_mask[order_a], b.has_mask[order_b])
        # VisA masks hold instance numbers 1, 2, ...: read with threshold 0 they equal MVTec's 255 masks
        assert sorted(m.sum() for m in a.masks) == sorted(m.sum() for m in b.masks)
        assert sum(m.sum() for m in b.masks) > 0 or split == "train"
        # JPEG at quality 95 against the PNG originals: close, not equal
        diff = np.abs(np.sort(a.images.reshape(len(a), -1).mean(1)) - np.sort(b.images.reshape(len(b), -1).mean(1)))
        assert diff.max() < 2.0


@pytest.mark.slow
def test_train_and_evaluate_on_a_visa_folder(both, capsys):
    data, model = both / "VisA" / "pcb1", both / "model"
    sets = [a for s in TINY for a in ("--set", s)]
    assert main(["manufacturing", "train", "--data", str(data), "--out", str(model), "--seed", "1", *sets]) == 0
    capsys.readouterr()
    with contextlib.redirect_stderr(io.StringIO()):
        assert main(["manufacturing", "evaluate", "--data", str(data), "--model", str(model)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert 0.0 < metrics["aupro"] <= 1.0 and 0.0 <= metrics["pixel_auroc"] <= 1.0


def test_bad_visa_split_files_are_one_line_errors(both, tmp_path, capsys):
    visa = tmp_path / "VisA"
    (visa / "pcb1").mkdir(parents=True)
    (visa / "split_csv").mkdir()
    split_csv = visa / "split_csv" / "1cls.csv"
    out = ["--out", str(tmp_path / "m")]
    split_csv.write_text("object,split,label,image\npcb1,train,normal,a.JPG\n")
    assert main(["manufacturing", "train", "--data", str(visa / "pcb1"), *out]) == 2
    split_csv.write_text("object,split,label,image,mask\npcb1,train,good,a.JPG,\n")
    assert main(["manufacturing", "train", "--data", str(visa / "pcb1"), *out]) == 2
    split_csv.write_text("object,split,label,image,mask\npcb1,train,normal,a.JPG,\ncandle,train,normal,b.JPG,\n")
    assert main(["manufacturing", "train", "--data", str(visa), *out]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("fedsite:")]
    assert len(err) == 3
    assert "1cls.csv: missing column(s) mask" in err[0]
    assert "1cls.csv:2: label 'good' is not normal or anomaly" in err[1]
    assert "names 2 objects; pass one object's folder, e.g." in err[2]
