"""`fedsite demo`: the whole product on synthetic data, with no arguments and nothing downloaded.

Three simulated hospitals train the nodule detector together (data never leaves a site), the
global model is scored with LUNA16 FROC on a held-out set and detects nodules in held-out series
(overlays written); then banks train the fraud model and factories the defect inspector, in small.
Everything ends in DIR/report.md and DIR/report.html. A vertical that is missing or fails is
skipped, said so in the report, and the command exits 3 (partial success) after writing it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

# Each vertical federates by its own recipe ("federated": verticals/<name>/config.py, federation/recipes.py;
# "quick": one round of everything on tiny data); the demo adds only its budget, sized for <= 10 min on
# 2 cores: sites score the model every 10th round (and the last), medical skips the cross-site matrix,
# and finance runs 3 of its recipe's 4 rounds (of the tiny preset's own 2 epochs: local_epochs 0).
DEMO_CHANGES = {
    "medical": {"cross_site": False, "eval_every": 10},
    "finance": {"rounds": 3, "local_epochs": 0},
    "manufacturing": {"eval_every": 10},
}
SITES = 3


def demo(
    out: Path = typer.Option(Path("fedsite_demo"), "--out", help="Output directory (report.md, report.html, runs)."),
    seed: int = typer.Option(0, "--seed", help="Seed for all synthetic data and training."),
    quick: bool = typer.Option(False, "--quick", help="A one-round smoke run of every step (about a minute)."),
    engine: str = typer.Option("inprocess", "--engine", help="inprocess (no Ray start-up) or ray (Flower's engine)."),
) -> None:
    """Run everything end to end on synthetic data: federated CT detection, fraud, defect inspection."""
    from common.errors import PartialSuccess, UserError
    from federation.sim import ENGINES

    if engine not in ENGINES:
        raise UserError(f"--engine {engine}: unknown (known: {', '.join(ENGINES)})")
    result = run_demo(out, seed=seed, quick=quick, engine=engine)
    skipped = [s for s in result["sections"] if s["status"] != "ok"]
    if skipped:
        names = ", ".join(f"{s['vertical']} ({s['status']})" for s in skipped)
        raise PartialSuccess(f"demo finished without {names}; see {out / 'report.md'}", rejected=len(skipped))


def run_demo(out: Path, *, seed: int = 0, quick: bool = False, engine: str = "inprocess") -> dict[str, Any]:
    """The demo as a Python function; returns {"sections": [...], "seconds": s} after writing the reports."""
    from common.device import set_threads
    from common.progress import log
    from federation.demo_report import write_reports

    set_threads(None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    sections = []
    steps = (("medical", medical_section), ("finance", small_section), ("manufacturing", small_section))
    for index, (vertical, step) in enumerate(steps, 1):
        log(f"demo [{index}/{len(steps)}] {vertical}: starting ({time.perf_counter() - start:.0f}s elapsed)")
        began = time.perf_counter()
        try:
            section = step(vertical, out / vertical, seed=seed, quick=quick, engine=engine)
        except Exception as exc:  # one vertical failing must not cost the user the others' results
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            status = "skipped" if "not available" in reason else "failed"
            log(f"demo: {vertical} {status}: {reason}")
            section = {"vertical": vertical, "status": status, "reason": reason}
        section["seconds"] = time.perf_counter() - began
        sections.append(section)
    result = {"sections": sections, "seconds": time.perf_counter() - start, "quick": quick, "seed": seed}
    write_reports(out, result)
    log(f"demo: wrote {out / 'report.md'} and {out / 'report.html'} in {result['seconds']:.0f}s")
    return result


def _federate(vertical: str, run_dir: Path, *, seed: int, quick: bool, engine: str) -> tuple[dict, Any]:
    """One simulated federation by the vertical's recipe (and the demo's budget); (history, recipe)."""
    from common.registry import get_task
    from federation.recipes import resolve
    from federation.sim import simulate

    task = get_task(vertical)
    recipe = resolve(task, "quick") if quick else resolve(task, "federated").replace(**DEMO_CHANGES[vertical])
    history = simulate(
        vertical, run_dir, sites=SITES, seed=seed, engine=engine, scale=recipe.scale, cfg=recipe.model_config(task),
        **recipe.settings,
    )  # fmt: skip
    return history, recipe


def _summary(history: dict, headline: str) -> dict[str, Any]:
    last = history["rounds"][-1]["global_eval"] if history["rounds"] else {}
    return {
        "headline": headline,
        "global_val": last.get(headline),
        "global_test": {s: m.get(headline) for s, m in history["cross_site"].get("global", {}).items()},
        "cross_site": {
            name: {s: m.get(headline) for s, m in row.items()} for name, row in history["cross_site"].items()
        },
        "rounds": len(history["rounds"]),
        "bytes": sum(e["bytes_sent"] + e["bytes_received"] for r in history["rounds"] for e in r["sites"].values()),
    }


def medical_section(vertical: str, run_dir: Path, *, seed: int, quick: bool, engine: str) -> dict:
    """Federated detector training, FROC on a held-out set, detection with overlays on held-out series."""
    from common.registry import get_task
    from verticals.medical.api import detect_directory, evaluate_candidates, synth_dataset

    task = get_task(vertical)
    history, recipe = _federate(vertical, run_dir, seed=seed, quick=quick, engine=engine)
    heldout = run_dir / "heldout"
    if not (heldout / "annotations.csv").exists():
        synth_dataset(heldout, 2 if quick else 3, seed=seed + 101, site=1, n_sites=SITES, scale=recipe.scale)
    detections = run_dir / "detections"
    report = detect_directory(heldout, run_dir / "global_model", detections, overlays=2)
    froc = evaluate_candidates(
        detections / "candidates.csv", heldout / "annotations.csv", run_dir / "froc", n_bootstrap=0 if quick else 200
    )
    overlays = [detections / p for s in report["series"] for p in s.get("overlays", [])][:4]
    return {
        "vertical": vertical,
        "status": "ok",
        "summary": _summary(history, task.headline_metric),
        "froc": {
            "cpm": froc["cpm"],
            "froc": froc["froc"],
            "n_nodules": froc.get("n_nodules"),
            "n_scans": froc.get("n_scans"),
        },
        "detections": [
            {"seriesuid": s["seriesuid"], "status": s["status"], "n_candidates": s.get("n_candidates", 0)}
            for s in report["series"]
        ],  # fmt: skip
        "figures": [run_dir / "curves.png", run_dir / "froc" / "froc.png", *overlays],
        "run_dir": run_dir,
    }


def small_section(vertical: str, run_dir: Path, *, seed: int, quick: bool, engine: str) -> dict:
    """A small federation of the vertical's tiny model with the cross-site matrix (banks, factories),
    then what its users look at, on a held-out synthetic site the federation never saw (demo_views.py):
    the fraud model's PR curve and threshold table, the defect model's contact sheet of annotated parts."""
    from common.registry import get_task
    from federation.demo_views import VIEWS

    task = get_task(vertical)
    history, recipe = _federate(vertical, run_dir, seed=seed, quick=quick, engine=engine)
    heldout = task.synthesize(run_dir / "heldout", seed=seed + 101, site=0, n_sites=SITES, scale=recipe.scale)
    view = VIEWS[vertical](heldout, run_dir / "global_model", run_dir / "evaluation")
    return {
        "vertical": vertical,
        "status": "ok",
        "summary": _summary(history, task.headline_metric),
        "figures": [run_dir / "curves.png", *view.pop("figures")],
        "run_dir": run_dir,
        **view,
    }
