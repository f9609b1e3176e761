"""The VisA layout (Zou et al., ECCV 2022) read as the same labelled splits MVTec AD gives.

VisA ships twelve objects under one root with a split file `split_csv/1cls.csv` (columns
`object,split,label,image,mask`; `label` is `normal` or `anomaly`; `image`/`mask` are paths
relative to the root, e.g. `candle/Data/Images/Anomaly/000.JPG` and
`candle/Data/Masks/Anomaly/000.png`). Images are JPEG; masks are PNG whose non-zero pixels are
defects (VisA numbers defect instances 1, 2, ... rather than writing 255 as MVTec does).

Each object folder may also hold `image_anno.csv` (`image,label,mask`, label the defect names,
e.g. `chip around edge,damaged corner`): when present it names each defective image's kind (so
evaluate reports an AUROC per defect kind, as for MVTec's folders); otherwise the kind is `anomaly`.

A dataset folder is either the VisA root (when its CSV names one object) or one object's folder
inside it (`VisA/candle`), so `--data VisA/candle` trains on candle as `--data mvtec/bottle` does.
"""

from __future__ import annotations

import csv
from pathlib import Path

SPLIT_CSV = Path("split_csv") / "1cls.csv"
COLUMNS = ("object", "split", "label", "image", "mask")
LABELS = {"normal": 0, "anomaly": 1}


def find_split_csv(root: Path) -> tuple[Path, Path, str | None] | None:
    """(VisA root, its 1cls.csv, object or None) when `root` is a VisA root or one object's folder."""
    if (root / SPLIT_CSV).is_file():
        return root, root / SPLIT_CSV, None
    if (root.parent / SPLIT_CSV).is_file():
        return root.parent, root.parent / SPLIT_CSV, root.name
    return None


def read_rows(csv_path: Path) -> list[dict[str, str]]:
    """The split file's rows, each with its line number; ValueError names the file, line and problem."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            missing = set(COLUMNS) - set(reader.fieldnames or [])
            if missing:
                raise ValueError(f"{csv_path}: missing column(s) {', '.join(sorted(missing))}")
            rows = []
            for line, row in enumerate(reader, start=2):
                label = (row["label"] or "").strip().lower()
                if label not in LABELS:
                    raise ValueError(f"{csv_path}:{line}: label {row['label']!r} is not normal or anomaly")
                if not (row["image"] or "").strip():
                    raise ValueError(f"{csv_path}:{line}: empty image path")
                rows.append({**{k: (row[k] or "").strip() for k in COLUMNS}, "label": label, "line": str(line)})
    except UnicodeDecodeError:
        raise ValueError(f"{csv_path}: not a UTF-8 CSV file") from None
    return rows


def defect_kinds(base: Path, obj: str) -> dict[str, str]:
    """{image path relative to the VisA root: defect kind} from `<obj>/image_anno.csv`, if there is one."""
    path = base / obj / "image_anno.csv"
    if not path.is_file():
        return {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if not {"image", "label"} <= set(reader.fieldnames or []):
                return {}
            rows = [(r["image"] or "", (r["label"] or "").strip()) for r in reader]
    except (OSError, UnicodeDecodeError):
        return {}
    kinds = {}
    for image, label in rows:
        if label and label.lower() != "normal":
            kinds[image.strip()] = "+".join(part.strip().replace(" ", "_") for part in label.split(",") if part.strip())
    return kinds


def visa_split(root: Path, split: str):
    """List one VisA object's "train" (normal images of the train split) or "test" images with masks."""
    from data_adapters.images import LabelledSet

    found = find_split_csv(root)
    if found is None:
        raise FileNotFoundError(f"{root}: not a VisA dataset (no {SPLIT_CSV.as_posix()} here or one level up)")
    base, csv_path, obj = found
    rows = read_rows(csv_path)
    objects = sorted({r["object"] for r in rows})
    if obj is None:
        if len(objects) != 1:
            example = f", e.g. {root / objects[0]}" if objects else ""
            raise ValueError(f"{root}: VisA split file names {len(objects)} objects; pass one object's folder{example}")
        obj = objects[0]
    elif obj not in objects:
        raise FileNotFoundError(f"{csv_path}: no rows for object {obj!r} (objects: {', '.join(objects)})")
    rows = [r for r in rows if r["object"] == obj and r["split"] == split]
    if split == "train":
        rows = [r for r in rows if r["label"] == "normal"]  # training sees defect-free parts only
    named = defect_kinds(base, obj) if split == "test" else {}
    out = LabelledSet(mask_threshold=0)
    for r in sorted(rows, key=lambda r: (r["label"], r["image"])):
        label = LABELS[r["label"]]
        out.paths.append(base / r["image"])
        out.labels.append(label)
        out.kinds.append("good" if label == 0 else named.get(r["image"], "anomaly"))
        mask = base / r["mask"] if label and r["mask"] else None
        out.masks.append(mask if mask is not None and mask.is_file() else None)
    return out
