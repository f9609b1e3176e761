"""Annotated examples of a caught and a missed thin defect (README figure), from a trained model.

For the thin kinds (scratch, thin_line) of a labelled test split: the defective part the model
scores highest (caught, if above the image threshold) and lowest (missed, if below), each drawn as
`inspect` draws it (heat map, contours, boxes, OK/NG) with the ground-truth outline in green.

    python benchmarks/thin_examples.py --data DATA_DIR --model MODEL_DIR --out figure.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--kinds", default="scratch,thin_line")
    parser.add_argument("--scale", type=int, default=2, help="enlarge each tile (thin lines stay visible)")
    args = parser.parse_args(argv)

    import cv2
    import numpy as np

    from common.atomic import atomic_path
    from data_adapters.images import read_image, read_mask
    from verticals.manufacturing.annotate import annotate
    from verticals.manufacturing.infer import open_inspector

    inspector = open_inspector(args.model)
    tiles = []
    for kind in args.kinds.split(","):
        paths = sorted((args.data / "test" / kind).glob("*.png"))
        images = [read_image(p) for p in paths]
        verdicts = inspector(images)
        threshold = inspector.thresholds[0]
        order = np.argsort([v.anomaly_score for v in verdicts])
        for tag, i in (("highest", int(order[-1])), ("lowest", int(order[0]))):
            verdict, image = verdicts[i], images[i]
            status = "caught" if verdict.is_defective else "missed"
            out = annotate(image, verdict, threshold)
            mask = read_mask(args.data / "ground_truth" / kind / f"{paths[i].stem}_mask.png", image.shape[:2])
            contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            out = cv2.resize(out, None, fx=args.scale, fy=args.scale, interpolation=cv2.INTER_NEAREST)
            scaled = [(c * args.scale).astype(np.int32) for c in contours]
            cv2.drawContours(out, scaled, -1, (0, 255, 0), 1)
            caption = f"{kind} {paths[i].stem}: {status}, {tag} score"
            cv2.putText(out, caption, (4, out.shape[0] - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
            tiles.append(out)
    sheet = np.hstack(tiles)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out, suffix=".png") as tmp:
        cv2.imwrite(str(tmp), sheet)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
