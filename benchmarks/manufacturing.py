"""Manufacturing benchmark: per category, the learned DefectNet beside the golden-template baseline.

For every synthetic surface and every scikit-image texture: synthesise a full-scale dataset
(256x256), train (timed), evaluate the model through the backend `inspect` uses and the classical
baseline on the same test images, and time inference at 256x256 through torch, ONNX Runtime fp32
and ONNX Runtime INT8 in the same process (so the ratios are fair even on a busy machine).

    python benchmarks/manufacturing.py --out runs/bench-mfg [--categories metal,brick] [--set epochs=8]
    python benchmarks/manufacturing.py --categories heldout:wood,heldout:brushed --preset small --scale medium

`heldout:<surface>` categories come from the second, independent generator
(data_adapters/synth/heldout_surfaces.py: brushed, machined, wood, leather, painted, cast; never used
for tuning). `--categories all` runs both generators. Prints Markdown tables (including image AUROC,
pixel AUROC and AUPRO per defect kind and surface) and writes OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

LOW_CONTRAST = "stain"
HELDOUT = "heldout:"


def _scales() -> dict:
    """Named data sizes: the generators' own plus "medium" (128 px, enough test parts per kind for AUROC)."""
    from data_adapters.synth.inspection import SCALES, Scale

    return SCALES | {"medium": Scale(size=128, n_train=48, n_test_good=16, n_per_kind=8)}


def run_category(
    category: str, out: Path, overrides: list[str], seed: int, preset: str = "default", scale: str = "full"
) -> dict:
    """Synthesise, train, evaluate and time one category; return its row."""
    import numpy as np

    from common.config import resolve
    from data_adapters.synth.heldout_surfaces import write_heldout
    from data_adapters.synth.inspection import write_dataset
    from verticals.manufacturing.api import evaluate_model, train
    from verticals.manufacturing.baseline import GoldenTemplate
    from verticals.manufacturing.config import PRESETS, InspectConfig
    from verticals.manufacturing.data import load_split

    folder = category.replace(":", "-")
    data_dir = out / "data" / f"{folder}-{scale}"
    if not (data_dir / "dataset.json").is_file():
        if category.startswith(HELDOUT):
            write_heldout(data_dir, category[len(HELDOUT) :], seed=seed, scale=_scales()[scale])
        else:
            write_dataset(data_dir, category, seed=seed, scale=_scales()[scale])
    cfg = resolve(InspectConfig, None, overrides, section="manufacturing", base=PRESETS[preset])
    model_dir = out / "models" / folder
    load_before = os.getloadavg()
    start, cpu_start = time.perf_counter(), time.process_time()
    _, fit_metrics = train(data_dir, model_dir, cfg, seed=seed)
    train_total, train_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    load_after = os.getloadavg()
    learned = evaluate_model(data_dir, model_dir, backend="auto")
    baseline = learned.pop("baseline")
    deployment = json.loads((model_dir / "metadata.json").read_text())["deployment"]
    batch = deployment["batch"]
    ips = {k: 1000.0 * batch / v for k, v in deployment["latency_ms"].items()}
    template = GoldenTemplate.from_bytes((model_dir / "baseline.npz").read_bytes())
    test = load_split(cfg, data_dir, "test")
    t0 = time.perf_counter()
    for image in test.images:
        template.score(image)
    ips["baseline"] = len(test) / (time.perf_counter() - t0)
    keys = ("image_auroc", "pixel_auroc", "aupro", "f1_image", "box_precision", "box_recall")
    low = f"image_auroc_{LOW_CONTRAST}"
    return {
        "category": category,
        "learned": {k: learned[k] for k in keys} | {"low_contrast_auroc": learned.get(low)},
        "baseline": {k: baseline[k] for k in keys} | {"low_contrast_auroc": baseline.get(low)},
        "per_kind": {k: v for k, v in learned.items() if k.startswith(("image_auroc_", "pixel_auroc_", "aupro_"))},
        "per_kind_baseline": {k: v for k, v in baseline.items() if k.startswith("image_auroc_")},
        "images_per_s": ips,
        "backend": learned["backend"],
        "int8_chosen": deployment["chosen"] == "ort_int8",
        "train_seconds": fit_metrics["train_seconds"],
        "train_steps": fit_metrics.get("train_steps"),
        "train_total_seconds": train_total,
        "train_total_cpu_seconds": train_cpu,
        "load_average_1m": [load_before[0], load_after[0]],
        "chosen": {k: fit_metrics.get(k) for k in ("memory_weight", "blur_sigma")},
        "n_test": int(len(test)),
        "n_defective": int(np.sum(test.labels)),
    }


def table(rows: list[dict]) -> str:
    """Markdown table: quality learned vs baseline, throughput per backend, training time."""
    head = (
        "| category | image AUROC (learned / classical) | pixel AUROC | AUPRO | stain AUROC | "
        "img/s torch | img/s ORT fp32 | img/s ORT int8 | train s |\n|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        lrn, base, ips = r["learned"], r["baseline"], r["images_per_s"]
        lines.append(
            f"| {r['category']} | {lrn['image_auroc']:.3f} / {base['image_auroc']:.3f} | "
            f"{lrn['pixel_auroc']:.3f} / {base['pixel_auroc']:.3f} | {lrn['aupro']:.3f} / {base['aupro']:.3f} | "
            f"{lrn['low_contrast_auroc']:.3f} / {base['low_contrast_auroc']:.3f} | {ips['torch']:.1f} | "
            f"{ips['ort_fp32']:.1f} | {ips.get('ort_int8', float('nan')):.1f} | {r['train_seconds']:.0f} |"
        )
    kinds = sorted({k[len("image_auroc_") :] for r in rows for k in r["per_kind"] if k.startswith("image_auroc_")})
    lines += ["", "| category | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
    for r in rows:
        cells = []
        for kind in kinds:
            a, b = r["per_kind"].get(f"image_auroc_{kind}"), r["per_kind_baseline"].get(f"image_auroc_{kind}")
            cells.append("-" if a is None else f"{a:.2f} / {b:.2f}")
        lines.append(f"| {r['category']} | " + " | ".join(cells) + " |")
    lines += ["", "| category | backend | F1 image | box P | box R | steps | train+export s (wall / CPU) | load 1m |"]
    lines.append("|---|---|---|---|---|---|---|---|")
    for r in rows:
        lrn, base = r["learned"], r["baseline"]
        lines.append(
            f"| {r['category']} | {r['backend']} | {lrn['f1_image']:.3f} / {base['f1_image']:.3f} | "
            f"{lrn['box_precision']:.2f} / {base['box_precision']:.2f} | "
            f"{lrn['box_recall']:.2f} / {base['box_recall']:.2f} | "
            f"{r['train_steps']:.0f} | {r['train_total_seconds']:.0f} / {r['train_total_cpu_seconds']:.0f} | "
            f"{r['load_average_1m'][0]:.1f}-{r['load_average_1m'][1]:.1f} |"
        )
    return "\n".join(lines + ["", per_kind_table(rows)])


def per_kind_table(rows: list[dict]) -> str:
    """Learned model only: image AUROC / pixel AUROC / AUPRO for every (surface, defect kind)."""
    lines = ["| surface | kind | image AUROC | pixel AUROC | AUPRO |", "|---|---|---|---|---|"]
    for r in rows:
        pk = r["per_kind"]
        kinds = sorted(k[len("image_auroc_") :] for k in pk if k.startswith("image_auroc_"))
        for kind in kinds:
            cells = [pk.get(f"{m}_{kind}") for m in ("image_auroc", "pixel_auroc", "aupro")]
            text = " | ".join("-" if c is None else f"{c:.3f}" for c in cells)
            lines.append(f"| {r['category']} | {kind} | {text} |")
        lrn = r["learned"]
        lines.append(
            f"| {r['category']} | **all** | {lrn['image_auroc']:.3f} | {lrn['pixel_auroc']:.3f} | {lrn['aupro']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-manufacturing"))
    parser.add_argument("--categories", default="all", help="comma-separated, or 'all'")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config key=value")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default="default", choices=("tiny", "small", "default"))
    parser.add_argument("--scale", default="full", choices=("tiny", "small", "medium", "full"))
    args = parser.parse_args(argv)

    from common.device import set_threads
    from common.progress import log
    from data_adapters.synth.heldout_surfaces import HELDOUT_SURFACES, PHOTO_SURFACES
    from data_adapters.synth.surfaces import CATEGORIES

    set_threads(None)
    every = list(CATEGORIES) + [HELDOUT + s for s in HELDOUT_SURFACES + PHOTO_SURFACES]
    categories = every if args.categories == "all" else args.categories.split(",")
    rows = []
    for category in categories:
        log(f"benchmark: {category}")
        rows.append(run_category(category, args.out, args.overrides, args.seed, args.preset, args.scale))
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
