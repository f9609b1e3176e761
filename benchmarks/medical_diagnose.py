"""Which stage loses each annotated nodule, and what the top false positives are (any scans + annotations).

Why: a CPM says how much is missed, not where. For every annotated nodule this prints its size,
kind and location (the annotation's extra columns when present), whether its centre is in the lung
mask's candidate region, the raw heat peak within its radius, and then stage by stage whether a
candidate still hits it: decoded peaks (no mask), after the mask, and the final calibrated
probability and rank. For the false positives ranked above the first missed or last found nodule it
prints where they sit: inside the filled lungs or only in the margin, their core HU and size.

    python benchmarks/medical_diagnose.py MODEL_DIR DATA_DIR [ANNOTATIONS_CSV] [--top 5]

With --variants "lung_mask=0;min_probability=0;lung_mask=0,min_probability=0" it instead scores the
same network outputs under each config variant (LUNA16 CPM, candidates per scan; masses of a
masses.csv beside the data excluded as benchmarks/medical.py does): what the mask, the floor or the
margin cost, without retraining.
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _extra_columns(path: Path) -> dict[str, list[dict]]:
    """Per series, the annotation rows as dicts (kind, location, slice_mm, kernel when present)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out: dict[str, list[dict]] = {}
    for row in rows:
        out.setdefault(row["seriesuid"], []).append(row)
    return out


def _hits(zyx: np.ndarray, centre: np.ndarray, diameter: float, sp: np.ndarray) -> np.ndarray:
    """Which model-grid points lie closer to `centre` than the nodule's radius (LUNA16's hit rule)."""
    if not len(zyx):
        return np.zeros(0, bool)
    return np.linalg.norm((zyx - centre) * sp, axis=1) < diameter / 2


def diagnose_case(case, runner, cfg, fp, rows: list[dict], top: int) -> dict:
    """Per-nodule stage table and top false positives of one case."""
    from verticals.medical import postprocess
    from verticals.medical.infer import _anatomy, detect_case, predict

    out = predict(case.image, runner, cfg)
    heat = 1.0 / (1.0 + np.exp(-out[0]))
    anatomy = _anatomy(case, cfg, False)
    mask = anatomy["mask"]
    raw_centres, raw_scores, _ = postprocess.decode(out, cfg)
    found = detect_case(case, runner, cfg, fp, report_all=True, masses=False)
    sp = np.asarray(case.spacing_zyx)
    from scipy import ndimage

    lung_dist = ndimage.distance_transform_edt(~mask.lungs, sampling=sp) if mask.lungs.any() else None
    hu = case.image * (cfg.hu_max - cfg.hu_min) + cfg.hu_min
    nodules = []
    for k, (cv, d) in enumerate(zip(case.nodules_vox, case.diameters)):
        r_vox = d / 2 / sp
        cc = np.round(cv / cfg.stride).astype(int)
        rr = np.maximum(np.floor(r_vox / cfg.stride).astype(int), 1)
        sl = tuple(slice(max(a - b, 0), a + b + 1) for a, b in zip(cc, rr))
        peak = float(heat[sl].max()) if heat[sl].size else 0.0

        raw_hit = _hits(raw_centres, cv, d, sp)
        fin_hit = _hits(found["zyx"], cv, d, sp)
        prob = float(found["probability"][fin_hit].max()) if fin_hit.any() else None
        rank = int((found["probability"] > prob).sum()) + 1 if prob is not None else None
        ci = np.clip(np.round(cv).astype(int), 0, np.array(case.image.shape) - 1)
        core = hu[tuple(slice(max(a - 1, 0), a + 2) for a in ci)]
        row = rows[k] if k < len(rows) else {}
        nodules.append(
            {
                "d": float(d),
                "kind": row.get("kind", ""),
                "where": row.get("location", "jp" if row.get("juxtapleural") == "1" else ""),
                "slice": row.get("slice_mm", ""),
                "kernel": row.get("kernel", ""),
                "in_region": bool(mask.contains(cv[None])[0]) if mask.status == "ok" else None,
                "lung_dist_mm": float(lung_dist[tuple(ci)]) if lung_dist is not None else None,
                "core_hu": float(core.mean()),
                "peak": peak,
                "raw_hit": bool(raw_hit.any()),
                "raw_rank": int(np.flatnonzero(raw_hit)[0]) + 1 if raw_hit.any() else None,
                "final_p": prob,
                "rank": rank,
            }
        )
    truth = np.array([n["d"] for n in nodules])
    fps = []
    for zyx, p, s, dm in zip(found["zyx"], found["probability"], found["score"], found["diameter_mm"]):
        dist = np.linalg.norm((case.nodules_vox - zyx) * sp, axis=1) if len(truth) else np.zeros(0)
        if len(truth) and (dist < truth / 2).any():
            continue
        ci = np.clip(np.round(zyx).astype(int), 0, np.array(case.image.shape) - 1)
        core = hu[tuple(slice(max(a - 1, 0), a + 2) for a in ci)]
        fps.append(
            {
                "p": float(p),
                "heat": float(s),
                "d_pred": float(dm),
                "core_hu": float(core.mean()),
                "lung_dist_mm": float(lung_dist[tuple(ci)]) if lung_dist is not None else None,
                "zyx_frac": [round(float(v), 2) for v in ci / np.array(case.image.shape)],
            }
        )
        if len(fps) >= top:
            break
    return {"seriesuid": case.seriesuid, "mask": mask.record(), "nodules": nodules, "fps": fps}


def _override(cfg, items: str):
    """`cfg` with "key=value,key=value" applied (booleans as 0/1)."""
    for item in filter(None, items.split(",")):
        key, value = item.split("=", 1)
        current = getattr(cfg, key)
        typed = value not in ("0", "false") if isinstance(current, bool) else type(current)(float(value))
        cfg = replace(cfg, **{key: typed})
    return cfg


def score_variants(cases, runner, cfg, fp, annotations: Path, variants: list[str]) -> None:
    """Print CPM and candidates per scan of each config variant, the network run once per case."""
    from verticals.medical import infer
    from verticals.medical.evaluate import read_annotations, score, summarise

    truth = read_annotations(annotations)
    masses_csv = annotations.parent / "masses.csv"
    masses = read_annotations(masses_csv) if masses_csv.exists() and masses_csv.stat().st_size > 60 else {}
    outputs = {case.seriesuid: infer.predict(case.image, runner, cfg) for case in cases}
    for variant in variants:
        vcfg = _override(cfg, variant)
        cands = {}
        for case in cases:
            found = infer.detect_case(case, runner, vcfg, fp, masses=False, output=outputs[case.seriesuid])
            xyz, prob = found["xyz"], found["probability"]
            for centre, diameter in masses.get(case.seriesuid, []):
                keep = np.linalg.norm(xyz - centre, axis=1) >= diameter / 2
                xyz, prob = xyz[keep], prob[keep]
            cands[case.seriesuid] = (xyz, prob)
        _, per_scan = score(cands, truth, scans=[c.seriesuid for c in cases])
        result = summarise(per_scan, n_bootstrap=0)
        froc = ", ".join(f"{v:.3f}" for v in result["froc"].values())
        print(f"{variant or 'as saved':40s} CPM {result['cpm']:.3f}  FROC {froc}  candidates/scan "
              f"{[len(v[1]) for v in cands.values()]}", flush=True)  # fmt: skip


def _fmt(p: float | None) -> str:
    return "-" if p is None else f"{p:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("data")
    parser.add_argument("annotations", nargs="?")
    parser.add_argument("--top", type=int, default=5)
    parser.add_argument("--set", default="", help="config overrides key=value,key=value (e.g. lung_margin_mm=15)")
    parser.add_argument("--variants", help='score config variants instead: "k=v,k=v;k=v;..." ("" = as saved)')
    args = parser.parse_args()
    from common import runs
    from verticals.medical.infer import fp_params, onnx_runner, torch_runner
    from verticals.medical.preprocess import load_cases

    loaded = runs.load_model(args.model, expect="medical")
    cfg = _override(loaded.cfg, args.set)
    annotations = Path(args.annotations or Path(args.data) / "annotations.csv")
    cases, _, _ = load_cases(args.data, annotations, cfg)
    extra = _extra_columns(annotations)
    onnx = Path(args.model) / "model.onnx"
    runner = onnx_runner(onnx) if onnx.exists() else torch_runner(loaded.model)
    fp = fp_params(loaded.model)
    if args.variants is not None:
        score_variants(cases, runner, cfg, fp, annotations, args.variants.split(";"))
        return
    for case in cases:
        res = diagnose_case(case, runner, cfg, fp, extra.get(case.seriesuid, []), args.top)
        print(f"== {case.seriesuid[-12:]} mask {res['mask']['status']} {res['mask']['lung_volume_ml']} ml")
        for n in res["nodules"]:
            print(
                f"  d={n['d']:5.1f} {n['kind']:12s} {n['where']:13s} slice={n['slice']:5s} {n['kernel']:8s}"
                f" region={n['in_region']} lungdist={n['lung_dist_mm'] or 0:4.1f} core={n['core_hu']:6.0f}"
                f" peak={n['peak']:.2f} raw_rank={n['raw_rank']} p={_fmt(n['final_p'])}"
                f" rank={n['rank']}"
            )
        for f in res["fps"]:
            print(
                f"  FP p={f['p']:.3f} heat={f['heat']:.2f} dpred={f['d_pred']:4.1f} core={f['core_hu']:6.0f}"
                f" lungdist={f['lung_dist_mm'] or 0:4.1f} at(z,y,x frac)={f['zyx_frac']}"
            )


if __name__ == "__main__":
    main()
