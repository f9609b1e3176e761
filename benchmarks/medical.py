"""Medical benchmark: detection quality (CPM/FROC) on held-out phantoms, and speed/memory per 512x512x300 series
against the MONAI lung_nodule_ct_detection bundle's RetinaNet configuration (random weights).

Usage (what produced the figures in verticals/medical/README.md):

    python benchmarks/medical.py --out /tmp/medbench            # quality + speed
    python benchmarks/medical.py --out /tmp/medbench --skip-quality --model /tmp/medbench/model

Quality: train with the default config on 20 synthetic scans (seed 10; a quarter of them held out to calibrate
the probabilities), detect on 8 scans from another seed (20), score with the LUNA16 protocol. Held-out
generator: detect on --holdout-scans scans of data_adapters/synth/ct_holdout.py (seed 1000), a generator the
detector was never tuned on, and score them the same way (its masses excluded, their recall reported).
Real scans: --real DIR [--real-annotations CSV] prints, per series, the lung mask, the top-10 candidates and
each annotated lesion's rank and probability (overlays under OUT/detect_real/overlays/).
Speed: end to end (read DICOM, resample/window, sliding-window ONNX
Runtime detection, NMS, FP reduction, overlays) on one 512x512x300 series, in a child process whose peak RSS
is the memory figure. Peer: the bundle's network (ResNet50-FPN RetinaNet, 3 anchors, returned layers 1-2)
built from MONAI with random weights; torchvision's IntermediateLayerGetter is shimmed here only. The peer's
forward on one 192x192x80 tile is measured and scaled linearly by voxel count to the same volume resampled
to the bundle's spacing (0.703x0.703x1.25 mm): a lower bound for the bundle, which also overlaps tiles.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BUNDLE_SPACING_XYZ = (0.703125, 0.703125, 1.25)
PEER_TILE_XYZ = (192, 192, 80)


def quality(out: Path, model_dir: Path | None, train_scans: int, test_scans: int) -> dict:
    """Train by the recipe (unless `model_dir`) and score on the first generator's held-out seed."""
    from common.progress import log
    from verticals.medical.api import detect_directory, evaluate_candidates, synth_dataset, train_model

    test = out / "test"
    if not (test / "annotations.csv").exists():  # a re-run with the same --out reuses the phantoms
        synth_dataset(test, test_scans, seed=20, scale="full")
    result: dict = {}
    if model_dir is None:
        train = synth_dataset(out / "train", train_scans, seed=10, scale="full")  # 3/4 train, 1/4 calibrate
        model_dir = out / "model"
        start = time.perf_counter()
        train_model(train, train / "annotations.csv", model_dir, seed=0)
        result["train_seconds"] = time.perf_counter() - start
        log(f"benchmark: trained in {result['train_seconds']:.0f} s")
    detect_directory(test, model_dir, out / "detect_test")
    scores = evaluate_candidates(out / "detect_test" / "candidates.csv", test / "annotations.csv", out / "froc")
    result.update(scores)
    result["model"] = str(model_dir)
    return result


def holdout(out: Path, model_dir: Path, n_scans: int, seed: int = 1000) -> dict:
    """CPM on the second, independent generator (data_adapters/synth/ct_holdout.py), never tuned on.

    Its lung masses (> 30 mm, masses.csv) are not nodules: candidates on them are left out of the
    scoring, as LUNA16 does with its excluded findings, and the masses' own recall is reported.
    """
    from data_adapters.synth.ct_holdout import synth_holdout
    from verticals.medical.api import detect_directory
    from verticals.medical.evaluate import read_annotations, read_candidates, score, summarise

    data = out / "holdout"
    if not (data / "annotations.csv").exists():
        synth_holdout(data, n_scans, seed=seed)
    report = detect_directory(data, model_dir, out / "detect_holdout", overlays=1)
    truth_masses = read_annotations(data / "masses.csv") if (data / "masses.csv").stat().st_size else {}
    cands = read_candidates(out / "detect_holdout" / "candidates.csv")
    for uid, found in truth_masses.items():
        if uid in cands:
            xyz, prob = cands[uid]
            keep = np.all([np.linalg.norm(xyz - m, axis=1) >= d / 2 for m, d in found], axis=0)
            cands[uid] = (xyz[keep], prob[keep])
    uids = [s["seriesuid"] for s in report["series"] if s["status"] == "ok"]
    _, per_scan = score(cands, read_annotations(data / "annotations.csv"), scans=uids)
    result = summarise(per_scan, n_bootstrap=1000)
    reported = {s["seriesuid"]: s.get("masses", []) for s in report["series"]}
    n_true = sum(len(v) for v in truth_masses.values())
    found = sum(
        any(np.linalg.norm(np.array(r["xyz"]) - m) < d / 2 for r in reported.get(uid, []))
        for uid, v in truth_masses.items()
        for m, d in v
    )
    result.update(
        masses_true=n_true,
        masses_found=int(found),
        masses_reported=sum(len(v) for v in reported.values()),
        candidates_per_scan=[s.get("n_candidates", 0) for s in report["series"]],
        lung_mask=[s.get("lung_mask") for s in report["series"]],
    )
    return result


def real_scans(out: Path, model_dir: Path, data: Path, annotations: Path | None) -> list[dict]:
    """The per-scan table on real chest CT under `data` (never committed: the path is given).

    For each series: where the top 10 candidates sit (inside the lung mask or not), and for each
    annotated lesion (LUNA16-style annotations.csv, optional) its rank, probability and the
    candidates ranked above it. The lung-mask overlay is overlays/<uid>/lung_mask.png under `out`.
    """
    from verticals.medical.api import detect_directory
    from verticals.medical.evaluate import read_annotations, read_candidates

    report = detect_directory(data, model_dir, out / "detect_real", overlays=3)
    cands = read_candidates(out / "detect_real" / "candidates.csv")
    truth = read_annotations(annotations) if annotations else {}
    rows = []
    for s in report["series"]:
        uid = s["seriesuid"]
        xyz, prob = cands.get(uid, (np.zeros((0, 3)), np.zeros(0)))
        row = {"seriesuid": uid, "status": s["status"], "n_candidates": int(len(prob)),
               "lung_mask": s.get("lung_mask"), "masses": s.get("masses", []),
               "top10": [{"xyz": [round(float(v), 1) for v in c], "p": round(float(p), 3)}
                         for c, p in zip(xyz[:10], prob[:10])],
               "lesions": []}  # fmt: skip
        for centre, diameter in truth.get(uid, []):
            dist = np.linalg.norm(xyz - centre, axis=1) if len(prob) else np.zeros(0)
            hit = np.flatnonzero(dist < max(diameter / 2, 5.0))
            rank = int(hit[0]) + 1 if hit.size else None
            row["lesions"].append({"xyz": [round(float(v), 1) for v in centre], "diameter_mm": diameter, "rank": rank,
                                   "p": round(float(prob[hit[0]]), 3) if hit.size else None,
                                   "centre_error_mm": round(float(dist[hit[0]]), 1) if hit.size else None})  # fmt: skip
        rows.append(row)
    return rows


def make_big_series(out: Path, seed: int = 0) -> Path:
    """One 512x512x300 phantom series (0.7 mm pixels, 1 mm slices), built at half resolution and upsampled."""
    from scipy import ndimage

    from data_adapters.synth.ct_phantom import make_phantom, write_series

    rng = np.random.default_rng(seed)
    hu, _ = make_phantom(rng, (150, 256, 256), (2.0, 1.4, 1.4), (5.0, 25.0), 4)
    big = ndimage.zoom(hu, (2, 2, 2), order=1).astype(np.float32)
    big += rng.normal(0, 20, big.shape).astype(np.float32)
    write_series(out, big, (1.0, 0.7, 0.7), (-179.0, -179.0, -150.0), rng=rng, patient="BENCH", reverse_files=False)
    return out


def _child(code: str) -> tuple[dict, float]:
    """Run `code` in a fresh interpreter; returns its JSON stdout (plus its CPU seconds, user + system,
    and the 1-minute load average before and after) and its own peak RSS in MB.

    CPU seconds are reported because the shared machine's load inflates wall time: on idle cores
    the wall time of a run on N threads is about its CPU time / N at best, and at worst its CPU time.
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code += (
        "\nimport resource as _r; _u = _r.getrusage(_r.RUSAGE_SELF)"
        "\nprint(_u.ru_utime + _u.ru_stime); print(_u.ru_maxrss)\n"
    )
    load_before = os.getloadavg()[0]
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    lines = proc.stdout.strip().splitlines()
    result = json.loads(lines[-3])
    result.update(cpu_s=float(lines[-2]), load_before=load_before, load_after=os.getloadavg()[0])
    return result, int(lines[-1]) / 1024.0


OURS = """
import json, time
from common.progress import set_quiet
set_quiet(True)
from verticals.medical.api import detect_directory
t = time.perf_counter()
report = detect_directory({data!r}, {model!r}, {out!r}, use_onnx={onnx})
wall = time.perf_counter() - t
s = report["series"][0]
print(json.dumps({{"wall_s": wall, "timings": s["timings"], "runner": report["runner"], "n": s["n_candidates"]}}))
"""

PEER = """
import json, sys, time, types, torch
from torch import nn
from collections import OrderedDict

class IntermediateLayerGetter(nn.ModuleDict):
    # torchvision's module (BSD-3), re-implemented: run children in order, return the named ones.
    def __init__(self, model, return_layers):
        layers, remaining = OrderedDict(), dict(return_layers)
        for name, module in model.named_children():
            layers[name] = module
            remaining.pop(name, None)
            if not remaining:
                break
        super().__init__(layers)
        self.return_layers = dict(return_layers)
    def forward(self, x):
        out = OrderedDict()
        for name, module in self.items():
            x = module(x)
            if name in self.return_layers:
                out[self.return_layers[name]] = x
        return out

def validate_trainable_layers(pretrained, trainable_layers, max_value, default_value):
    # torchvision's rule: every layer trains when the backbone is not pretrained.
    if not pretrained:
        return max_value
    return default_value if trainable_layers is None else trainable_layers

names = ["torchvision", "torchvision.models", "torchvision.models._utils", "torchvision.models.detection",
         "torchvision.models.detection.backbone_utils"]
mods = {{n: types.ModuleType(n) for n in names}}
for n, m in mods.items():
    m.__path__, m.__file__ = [], "<shim>"
mods["torchvision"].__version__ = "0.0-shim"
mods["torchvision"].models = mods["torchvision.models"]
mods["torchvision.models"]._utils = mods["torchvision.models._utils"]
mods["torchvision.models"].detection = mods["torchvision.models.detection"]
mods["torchvision.models.detection"].backbone_utils = mods["torchvision.models.detection.backbone_utils"]
mods["torchvision.models._utils"].IntermediateLayerGetter = IntermediateLayerGetter
mods["torchvision.models.detection.backbone_utils"]._validate_trainable_layers = validate_trainable_layers
sys.modules.update(mods)
from monai.networks.nets import resnet
from monai.apps.detection.networks.retinanet_network import RetinaNet, resnet_fpn_feature_extractor
torch.set_num_threads({threads})
backbone = resnet.ResNet(block="bottleneck", layers=[3, 4, 6, 3], block_inplanes=[64, 128, 256, 512],
                         n_input_channels=1, conv1_t_stride=[2, 2, 1], conv1_t_size=[7, 7, 7])
fe = resnet_fpn_feature_extractor(backbone, 3, False, [1, 2], None)
net = RetinaNet(spatial_dims=3, num_classes=1, num_anchors=3, feature_extractor=fe, size_divisible=[16, 16, 8]).eval()
x = torch.rand(1, 1, *{tile})
with torch.no_grad():
    times = []
    for _ in range({repeats}):
        t = time.perf_counter(); net(x); times.append(time.perf_counter() - t)
print(json.dumps({{"tile_s": min(times), "params": sum(p.numel() for p in net.parameters())}}))
"""


def speed(out: Path, model_dir: Path, threads: int, repeats: int) -> dict:
    from data_adapters import dicom

    data = make_big_series(out / "big_series")
    (series,), _ = dicom.read_series(data, load=False)
    shape = series.shape_zyx
    ours, ours_mb = _child(OURS.format(data=str(data), model=str(model_dir), out=str(out / "detect_big"), onnx=True))
    torch_run, torch_mb = _child(
        OURS.format(data=str(data), model=str(model_dir), out=str(out / "detect_big_t"), onnx=False)
    )
    peer, peer_mb = _child(PEER.format(threads=threads, tile=PEER_TILE_XYZ, repeats=repeats))
    extent_xyz = np.array(
        [shape[2] * series.spacing_zyx[2], shape[1] * series.spacing_zyx[1], shape[0] * series.spacing_zyx[0]]
    )
    bundle_voxels = float(np.prod(np.round(extent_xyz / np.array(BUNDLE_SPACING_XYZ))))
    peer_volume_s = peer["tile_s"] * bundle_voxels / float(np.prod(PEER_TILE_XYZ))
    return {
        "shape_zyx": list(shape),
        "ours_end_to_end_s": ours["wall_s"],
        "ours_cpu_s": ours["cpu_s"],
        "ours_load_average_1min": [ours["load_before"], ours["load_after"]],
        "ours_timings": ours["timings"],
        "ours_peak_rss_mb": ours_mb,
        "ours_torch_end_to_end_s": torch_run["wall_s"],
        "ours_torch_peak_rss_mb": torch_mb,
        "ours_torch_cpu_s": torch_run["cpu_s"],
        "peer_tile_s": peer["tile_s"],
        "peer_params": peer["params"],
        "peer_volume_s_lower_bound": peer_volume_s,
        "peer_peak_rss_mb_one_tile": peer_mb,
        "peer_tile_cpu_s_all_repeats": peer["cpu_s"],
        "speedup_vs_peer": peer_volume_s / ours["wall_s"],
        "onnx_vs_torch_speedup": torch_run["wall_s"] / ours["wall_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--model", type=Path, default=None, help="Use this trained model instead of training one.")
    parser.add_argument("--train-scans", type=int, default=20, help="A quarter is held out for calibration.")
    parser.add_argument("--holdout-scans", type=int, default=12, help="Scans of the second generator (0: skip).")
    parser.add_argument("--real", type=Path, default=None, help="Folder of real chest CT series (not committed).")
    parser.add_argument("--real-annotations", type=Path, default=None, help="LUNA16-style CSV of their lesions.")
    parser.add_argument("--test-scans", type=int, default=8)
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--repeats", type=int, default=2, help="Peer tile forwards (the fastest counts).")
    args = parser.parse_args()
    threads = int(os.environ.get("FEDSITE_THREADS", "2") or 2)
    os.environ["FEDSITE_THREADS"] = str(threads)
    out = args.out or Path(tempfile.mkdtemp(prefix="medbench-"))
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"threads": threads, "repeats": args.repeats}
    model_dir = args.model
    if not args.skip_quality:
        results["quality"] = quality(out, model_dir, args.train_scans, args.test_scans)
        model_dir = Path(results["quality"]["model"])
    if args.holdout_scans and model_dir is not None:
        results["holdout"] = holdout(out, model_dir, args.holdout_scans)
    if args.real is not None and model_dir is not None:
        results["real"] = real_scans(out, model_dir, args.real, args.real_annotations)
    if not args.skip_speed:
        if model_dir is None:
            raise SystemExit("--skip-quality needs --model for the speed part")
        results["speed"] = speed(out, model_dir, threads, args.repeats)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    print(render(results))


def render(results: dict) -> str:
    """Markdown tables of the results (pasted into verticals/medical/README.md)."""
    lines = []
    q = results.get("quality")
    if q:
        lines += ["| metric | value | target |", "|---|---|---|"]
        lines.append(f"| CPM | {q['cpm']:.3f} (95% CI {q['cpm_ci95'][0]:.3f}-{q['cpm_ci95'][1]:.3f}) | >= 0.85 |")
        for k, v in q["froc"].items():
            lines.append(f"| sensitivity @ {k} FP/scan | {v:.3f} | |")
        lines.append(f"| median centre error of hits (mm) | {q['median_centre_error_mm']:.2f} | <= 1.5 |")
        lines.append(f"| nodules / scans | {q['n_nodules']} / {q['n_scans']} | |")
        if "train_seconds" in q:
            lines.append(f"| training time, default config (s) | {q['train_seconds']:.0f} | <= 1200 |")
    h = results.get("holdout")
    if h:
        lines += ["", "| held-out generator (ct_holdout.py) | value |", "|---|---|"]
        lines.append(f"| CPM | {h['cpm']:.3f} (95% CI {h['cpm_ci95'][0]:.3f}-{h['cpm_ci95'][1]:.3f}) |")
        lines.append(f"| FROC 1/8..8 | {', '.join(f'{v:.3f}' for v in h['froc'].values())} |")
        lines.append(f"| nodules / scans | {h['n_nodules']} / {h['n_scans']} |")
        lines.append(
            f"| masses found / true (reported) | {h['masses_found']} / {h['masses_true']} ({h['masses_reported']}) |"
        )
        lines.append(f"| candidates per scan | {h['candidates_per_scan']} |")
    for r in results.get("real", []):
        lines += ["", f"real series {r['seriesuid'][-12:]}: {r['n_candidates']} candidates, lung mask {r['lung_mask']}"]
        lines += [f"- lesion {les['diameter_mm']:.0f} mm: rank {les['rank']} p={les['p']}" for les in r["lesions"]]
        lines += [f"- mass {m['diameter_mm']:.0f} mm at {m['xyz']}" for m in r["masses"]]
        lines += [f"- top {k}: p={c['p']} at {c['xyz']}" for k, c in enumerate(r["top10"], start=1)]
    s = results.get("speed")
    if s:
        lines += [
            "",
            "| per 512x512x300 series | ours (ORT fp32) | ours (eager torch) | bundle RetinaNet peer |",
            "|---|---|---|---|",
        ]
        lines.append(
            f"| seconds | {s['ours_end_to_end_s']:.1f} | {s['ours_torch_end_to_end_s']:.1f} | "
            f">= {s['peer_volume_s_lower_bound']:.0f} (network only, {s['peer_tile_s']:.1f} s per 192x192x80 tile) |"
        )
        lines.append(
            f"| peak memory (MB) | {s['ours_peak_rss_mb']:.0f} | {s['ours_torch_peak_rss_mb']:.0f} | "
            f"{s['peer_peak_rss_mb_one_tile']:.0f} (one tile) |"
        )
        lines.append(
            f"| CPU seconds (user + system, whole process) | {s['ours_cpu_s']:.1f} | {s['ours_torch_cpu_s']:.1f} | "
            f"{s['peer_tile_cpu_s_all_repeats']:.1f} for {results.get('repeats', '?')} tile forwards + start-up |"
        )
        lines.append(f"| speed-up vs peer | {s['speedup_vs_peer']:.1f}x | | 1x |")
        lines.append(
            f"| 1-min load average around our run | {s['ours_load_average_1min'][0]:.1f} -> "
            f"{s['ours_load_average_1min'][1]:.1f} | | |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
