"""Federation benchmark: federated vs centralized vs local-only per vertical, with int8 updates and DP.

Everything is measured in one run on the same sites' data, so the comparisons are against peers from
the same machine state (absolute times on a shared 2-core box are noisy):

- federated (FedAvg, R rounds x E local epochs per site) vs centralized vs local-only, all scored on
  each site's own held-out test split and averaged over the sites:
  - centralized: ONE model trained on the sites' pooled training data for R x E epochs over the
    pooled data, with the same model config and optimizer settings (one fit call, one learning-rate
    schedule). For a vertical whose epoch is a fixed number of batches (`steps_per_epoch`), an epoch
    over data three times as big is three times as many batches, so in total the centralized model
    sees as many samples as the three sites together;
  - local-only: each site alone for R x E epochs from the same start, scored on every site's test
    data (the average local-only site);
- int8 update compression (error feedback) against the plain federated run with the SAME seed, for
  one or more seeds (paired differences), and bytes on the wire (whole serialized reply messages);
- client-side DP: clipping alone and a few noise multipliers -> (epsilon, delta) -> metric;
- a run where one site of three fails every round;
- optionally a 3-site, 2-round run on Flower's Ray simulation engine (wall time, peak memory).

Sites are synthesized here with held-out splits larger than the Task's named scales (PLANS), so a
site's test score is not decided by one or two scans or ten images. Use a fresh --out: existing site
data under OUT is reused as it is.

    FEDSITE_THREADS=1 python benchmarks/federation.py --out /tmp/bench_federation [--verticals medical,finance]

Prints Markdown tables and writes OUT/results.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SITES = 3
DELTA = 1e-5
# every federated run: sites keep their Adam moments from round to round (stored at the site, never
# sent; the default since 2026-11-29). With a fresh optimizer each round the federation did worse the
# more rounds it was given (manufacturing 0.696 / 0.675 / 0.636 at 3x2 / 6x2 / 12x1); kept, 0.707 /
# 0.737 at 3x2 / 6x2.
SITE_KNOBS = {"keep_optimizer": True}
# per vertical: model config, rounds x local epochs, site data, DP clip (L2 of one site's update) and
# noise multipliers (0 = clipping alone), seeds of the paired int8-vs-float32 comparison, and
# `long_rounds`: the budget-doubling pair (federated with that many rounds, centralized with as many
# epochs over the pool), which shows whether a gap is the budget's or the federation's
PLANS: dict[str, dict[str, Any]] = {
    "medical": {
        "config": "small",
        # many short rounds: 40 x 8 batches per site (the same 320 as 4 rounds x 4 epochs of 20, which
        # scored 0.611 against 0.711: the less a site drifts between averages, the better the average)
        "rounds": 40,
        "epochs": 1,
        "config_changes": {"steps_per_epoch": 8},
        "data": {"scans": 16},  # per site: 12 training scans, 4 test scans (the Task's "small" has 6)
        # the FP-reduction stage (a logistic fit on the detector's candidates over every training scan)
        # is fitted on the final local models only: refitting it every round cost ~20 s per site-round
        "final_round_only": ("fp_reduction",),
        "clip": 2.0,
        "dp_noise": [0.01],
        "int8_seeds": [0, 1, 2, 3],  # CPM on 35 test nodules moves by ~3 points per nodule found
        # 4x the budget (centralized: 0.776 / 0.846 / 0.866 at 1x / 2x / 4x, seed 0), seeds 0-3
        "long_rounds": 160,
        "long_seeds": [0, 1, 2, 3],
        # one learning-rate schedule over the 40 rounds (common.task.fit_schedule) instead of the
        # OneCycle warm-up and decay replayed over every round's 8 batches (seeds 0-1: 0.690 vs 0.642)
        "site_knobs": {"one_schedule": True},
    },
    "finance": {
        "config": "tiny",
        "rounds": 4,
        "epochs": 2,
        "data": {"scale": "small"},
        "clip": 2.0,
        "dp_noise": [0.0, 0.01, 1.0],
        "int8_seeds": [0, 1, 2],
    },
    "manufacturing": {
        "config": "tiny",
        # 50 rounds x 3 batches per site: the same 150 batches as 3 rounds x 2 epochs of 25 (FedBN, seeds
        # 0-2: 0.743 there, 0.820 here; the three lines make different products and drift apart fast)
        "rounds": 50,
        "epochs": 1,
        "config_changes": {"steps_per_epoch": 3},
        "data": {"n_test_good": 32, "n_per_kind": 8},  # test images per site: 32 good + 8 per defect kind
        "clip": 2.0,
        "dp_noise": [0.0, 0.01, 1.0],
        "int8_seeds": [0, 1, 2, 3, 4],
        "long_rounds": 100,
        # FedBN: each line keeps its own BatchNorm and input statistics (federation/local_norm.py); the
        # sites are a metal, a fabric and a wood line under different lighting, a feature shift that one
        # shared normalisation fits to none of them. `fedavg_plain` is the same run without it.
        "site_knobs": {"local_norm": True},
    },
}


class PeakMemory:
    """Peak resident memory of this process and all its children (Ray workers included), sampled."""

    def __init__(self, interval: float = 0.2) -> None:
        import psutil

        self.process = psutil.Process()
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            for proc in [self.process, *self.process.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except Exception:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def config_for(vertical: str, plan: dict) -> Any:
    """The plan's model config: the Task's tiny one (medical: the demo's small one), with the plan's
    `config_changes` (e.g. batches per local epoch; the centralized model then takes 3x as many)."""
    from common.registry import get_task

    if vertical == "medical" and plan["config"] == "small":
        from verticals.medical.config import PRESETS

        base = PRESETS["small"]
    else:
        base = get_task(vertical).tiny_config()
    return dataclasses.replace(base, **plan.get("config_changes", {}))


def site_synthesizer(vertical: str, plan: dict, seed: int):
    """`(directory, site) -> source`: the Task's own generators, with the plan's larger held-out splits."""
    data = plan["data"]
    if vertical == "medical":
        from data_adapters.synth.ct_phantom import synth_dataset

        return lambda tmp, k: synth_dataset(tmp, data["scans"], seed=seed, site=k, n_sites=SITES, scale="small")
    if vertical == "manufacturing":
        from data_adapters.synth.inspection import SCALES, site_category, write_dataset
        from data_adapters.synth.surfaces import Lighting

        scale = dataclasses.replace(SCALES["small"], **data)
        # as ManufacturingTask.synthesize, with more test parts (the first ones are the "small" scale's)
        return lambda tmp, k: write_dataset(
            tmp, site_category(k), seed=seed * 1000 + k, scale=scale, lighting=Lighting.for_site(k)
        )
    from common.registry import get_task

    task = get_task(vertical)
    return lambda tmp, k: task.synthesize(tmp, seed=seed, site=k, n_sites=SITES, scale=data["scale"])


def pooled(vertical: str, parts: list, cfg: Any, seed: int) -> Any:
    """The sites' training data as one dataset (what a centralized trainer would hold)."""
    if vertical == "medical":
        from verticals.medical.data import MedicalData

        return MedicalData([c for p in parts for c in p.cases], [], [])
    if vertical == "finance":
        from verticals.finance.data import FinanceData
        from verticals.finance.features import FeatureBatch

        cat = lambda name: np.concatenate([getattr(p, name) for p in parts])  # noqa: E731
        features = FeatureBatch.concat([p.features for p in parts], cfg.history)
        return FinanceData(features, cat("label"), cat("typology"), cat("txn_id"), cat("ts"), cat("raw"))
    if vertical == "manufacturing":
        from verticals.manufacturing.data import InspectionData

        # shuffled, so the good images `fit` holds out for threshold calibration come from every site
        order = np.random.default_rng(seed).permutation(sum(len(p) for p in parts))
        cat = lambda name: np.concatenate([getattr(p, name) for p in parts])[order]  # noqa: E731
        kinds, names = sum((p.kinds for p in parts), []), sum((p.names for p in parts), [])
        return InspectionData(
            cat("images"), cat("labels"), cat("masks"), cat("has_mask"),
            [kinds[i] for i in order], [names[i] for i in order],
        )  # fmt: skip
    raise ValueError(f"no pooling for {vertical}")


def centralized(
    vertical: str, data_root: Path, suffix: str, cfg: Any, plan: dict, seed: int, rounds: int | None = None
) -> dict[str, Any]:
    """One model, pooled training data, R x E epochs over the pool; scored on each site's test split."""
    from common.device import seed_everything
    from common.registry import get_task

    task = get_task(vertical)
    sources = [data_root / f"site-{k}" / suffix for k in range(SITES)]
    data = pooled(vertical, [task.load_data(cfg, s, "train") for s in sources], cfg, seed)
    central_cfg = cfg
    if hasattr(cfg, "steps_per_epoch"):  # an epoch of this Task is a fixed number of batches
        central_cfg = dataclasses.replace(cfg, steps_per_epoch=cfg.steps_per_epoch * SITES)
    seed_everything(seed)
    model = task.build_model(cfg)
    seed_everything(seed + 1)
    start = time.perf_counter()
    task.fit(model, data, central_cfg, epochs=(rounds or plan["rounds"]) * plan["epochs"])
    seconds = time.perf_counter() - start
    per_site = [task.evaluate(model, task.load_data(cfg, s, "test"), cfg)[task.headline_metric] for s in sources]
    return {"mean": float(np.mean(per_site)), "per_site": per_site, "train_seconds": seconds}


def mean_test(history: dict, row: str, metric: str) -> float:
    """Mean over sites of a cross-site row; nan when a site could not score the model (its reply
    carried no metrics: e.g. DP noise made BatchNorm variances negative and the outputs NaN)."""
    return float(np.mean([m.get(metric, np.nan) for m in history["cross_site"][row].values()]))


def first_seed(plan: dict) -> int:
    """The seed offset of the plan's main runs ("fedavg", "centralized"): its first int8 seed."""
    return plan["int8_seeds"][0] if plan["int8_seeds"] else 0


def seeded(stem: str, seed: int, plan: dict) -> str:
    """A run's name: `stem` for the plan's first seed (the main run), `stem_seedN` for seed N."""
    return stem if seed == first_seed(plan) else f"{stem}_seed{seed}"


def central_names(plan: dict) -> dict[str, tuple[int | None, int]]:
    """Centralized result file stem -> (rounds, or None for the plan's own; seed offset): one per seed
    of the plan (in its order, the main run first), then one per seed of the longer budget's pair."""
    # the centralized model with every seed of the paired float32 federated runs: one seed of a
    # 3-round federation ranged over 14 points of manufacturing's AUROC, so both sides get a mean
    seeds = plan["int8_seeds"] or [first_seed(plan)]
    names: dict[str, tuple[int | None, int]] = {seeded("centralized", s, plan): (None, s) for s in seeds}
    for s in long_seeds(plan):
        names[seeded("centralized_long", s, plan)] = (plan["long_rounds"], s)
    return names


def long_seeds(plan: dict) -> list[int]:
    """The seeds of the long-budget pair (`long_rounds`): the plan's `long_seeds`, else its first seed."""
    if not plan.get("long_rounds"):
        return []
    return list(plan.get("long_seeds", [first_seed(plan)]))


def run_names(plan: dict) -> dict[str, dict[str, Any]]:
    """Run directory -> simulate() knobs, for every federated run of a vertical's plan."""
    first = first_seed(plan)
    runs: dict[str, dict[str, Any]] = {"fedavg": {"cross_site": True, "seed_offset": first}}
    for s in plan["int8_seeds"]:
        if s != first:
            runs[seeded("fedavg", s, plan)] = {"cross_site": False, "seed_offset": s}
        runs[f"int8_seed{s}"] = {"cross_site": False, "compression": "int8", "seed_offset": s}
    for z in plan["dp_noise"]:
        runs["dp_clip_only" if z == 0 else f"dp_noise_{z:g}"] = {"cross_site": False, "clip": plan["clip"], "noise": z}
    runs["one_of_three_failing"] = {"cross_site": False, "fail_site": 1}
    if plan.get("site_knobs"):  # the vertical's recipe against plain FedAvg, same seed and budget
        runs["fedavg_plain"] = {"cross_site": False, **{k: False for k in plan["site_knobs"]}}
    for s in long_seeds(plan):
        long = {"cross_site": False, "rounds": plan["long_rounds"], "seed_offset": s}
        runs[seeded("fedavg_long", s, plan)] = long
    return runs


def bench_vertical(vertical: str, out: Path, seed: int, reuse: bool = False) -> dict[str, Any]:
    from common.progress import log
    from common.registry import get_task
    from federation.partition import prepare_sites
    from federation.sim import simulate

    task = get_task(vertical)
    plan = PLANS[vertical]
    cfg = config_for(vertical, plan)
    data = out / vertical / "data"
    log(f"bench {vertical}: site data")
    synth = site_synthesizer(vertical, plan, seed)
    suffix = prepare_sites(task, data, SITES, seed=seed, scale="small", synthesize=synth)
    seconds: dict[str, float] = {}
    for name, knobs in run_names(plan).items():
        knobs = dict(knobs)
        run_seed = seed + knobs.pop("seed_offset", 0)
        rounds = knobs.pop("rounds", plan["rounds"])
        run_dir = out / vertical / name
        if reuse and (run_dir / "history.json").exists():
            log(f"bench {vertical}: {name} (reused: {run_dir / 'history.json'})")
            continue
        run_dir.mkdir(parents=True, exist_ok=True)
        link = run_dir / "data"
        if not link.exists():
            link.symlink_to(data.resolve(), target_is_directory=True)
        log(f"bench {vertical}: {name}")
        start = time.perf_counter()
        simulate(
            vertical, run_dir, sites=SITES, rounds=rounds, seed=run_seed, engine="inprocess", scale="small",
            cfg=cfg, local_epochs=plan["epochs"], eval_split="test", eval_every=rounds,
            final_round_only=plan.get("final_round_only", ()), **{**SITE_KNOBS, **plan.get("site_knobs", {}), **knobs},
        )  # fmt: skip
        seconds[name] = time.perf_counter() - start
    for name, (rounds, offset) in central_names(plan).items():
        if reuse and (out / vertical / f"{name}.json").exists():
            continue
        log(f"bench {vertical}: {name}")
        start = time.perf_counter()
        central = centralized(vertical, data, suffix, cfg, plan, seed + offset, rounds)
        seconds[name] = time.perf_counter() - start
        (out / vertical / f"{name}.json").write_text(json.dumps(central, indent=2))
    result = from_runs(vertical, out)
    result["seconds"] = seconds
    return result


def from_runs(vertical: str, out: Path) -> dict[str, Any]:
    """A vertical's numbers from its run directories (history.json files and centralized.json)."""
    from common.registry import get_task

    plan = PLANS[vertical]
    metric = get_task(vertical).headline_metric
    runs = {name: json.loads((out / vertical / name / "history.json").read_text()) for name in run_names(plan)}
    central_file = out / vertical / "centralized.json"
    central = json.loads(central_file.read_text()) if central_file.exists() else None
    fed = runs["fedavg"]
    local = [mean_test(fed, f"local:site-{k}", metric) for k in range(SITES)]
    pairs = []
    for s in plan["int8_seeds"]:
        plain, int8 = runs[seeded("fedavg", s, plan)], runs[f"int8_seed{s}"]
        pairs.append(
            {
                "seed_offset": s,
                "fedavg": mean_test(plain, "global", metric),
                "int8_metric": mean_test(int8, "global", metric),
                "dense": plain["compression"],
                "int8": int8["compression"],
            }
        )
    dense_msg = sum(p["dense"]["message_bytes_sent"] for p in pairs)
    int8_msg = sum(p["int8"]["message_bytes_sent"] for p in pairs)
    int8_payload = sum(p["int8"]["update_payload_bytes"] for p in pairs)
    int8_raw = sum(p["int8"]["payload_before_deflate_bytes"] for p in pairs)
    dense_payload = sum(p["dense"]["update_payload_bytes"] for p in pairs)
    dense_deflated = sum(p["dense"]["payload_deflated_bytes"] for p in pairs)
    diffs = [p["int8_metric"] - p["fedavg"] for p in pairs]
    dp = []
    for z in plan["dp_noise"]:
        h = runs["dp_clip_only" if z == 0 else f"dp_noise_{z:g}"]
        eps = h["privacy"]["epsilon"]
        dp.append({"clip": plan["clip"], "noise": z, "epsilon": eps, "metric": mean_test(h, "global", metric)})
    failing = runs["one_of_three_failing"]
    federated = mean_test(fed, "global", metric)
    long_files = [out / vertical / f"{name}.json" for name, (r, _) in central_names(plan).items() if r is not None]
    long_runs = [runs[name] for name, knobs in run_names(plan).items() if "rounds" in knobs]
    long = {
        "rounds": plan["long_rounds"],
        "n": len(long_files),
        "federated": [mean_test(h, "global", metric) for h in long_runs],
        "centralized": [json.loads(f.read_text())["mean"] for f in long_files] if all(
            f.exists() for f in long_files) else None,
    } if plan.get("long_rounds") else None  # fmt: skip
    central_seeds = [out / vertical / f"{name}.json" for name, (r, _) in central_names(plan).items() if r is None]
    seeds = {
        "n": len(pairs),
        "federated": [p["fedavg"] for p in pairs],
        "centralized": [json.loads(f.read_text())["mean"] for f in central_seeds] if all(
            f.exists() for f in central_seeds) else None,
    }  # fmt: skip
    return {
        "seeds": seeds,
        "long": long,
        "plain": mean_test(runs["fedavg_plain"], "global", metric) if "fedavg_plain" in runs else None,
        "metric": metric,
        "federated": federated,
        "federated_per_site": [fed["cross_site"]["global"][f"site-{k}"][metric] for k in range(SITES)],
        "centralized": None if central is None else central["mean"],
        "centralized_per_site": None if central is None else central["per_site"],
        "local_only_mean": float(np.mean(local)),
        "local_only_per_site": local,
        "int8_pairs": [
            {"seed_offset": p["seed_offset"], "fedavg": p["fedavg"], "int8": p["int8_metric"]} for p in pairs
        ],
        "int8_change_mean": float(np.mean(diffs)),
        "int8_change_min": float(np.min(diffs)),
        "int8_change_max": float(np.max(diffs)),
        "int8_message_ratio": dense_msg / max(int8_msg, 1),
        "int8_payload_ratio": dense_payload / max(int8_payload, 1),
        # the same replies if the int8 codes were sent without the lossless deflate
        "int8_message_ratio_without_deflate": dense_msg / max(int8_msg - int8_payload + int8_raw, 1),
        # and against dense float32 updates that were deflated as well
        "int8_message_ratio_vs_deflated_dense": (dense_msg - dense_payload + dense_deflated) / max(int8_msg, 1),
        "dense_message_bytes_per_reply": dense_msg / max(sum(p["dense"]["replies"] for p in pairs), 1),
        "int8_message_bytes_per_reply": int8_msg / max(sum(p["int8"]["replies"] for p in pairs), 1),
        "dp": dp,
        "failing_site_rounds_ok": all(r["aggregated"] for r in failing["rounds"]),
        "failing_site_failed_every_round": all(r["sites"]["site-1"]["status"] == "failed" for r in failing["rounds"]),
        "failing_site": mean_test(failing, "global", metric),
        "plan": plan,
    }


def bench_ray(vertical: str, out: Path, seed: int) -> dict[str, Any]:
    """3 sites, 2 rounds of the vertical's tiny model on Flower's Ray simulation engine."""
    from federation.sim import simulate

    run_dir = out / vertical / "ray_3x2"
    with PeakMemory() as memory:
        start = time.perf_counter()
        simulate(
            vertical, run_dir, sites=3, rounds=2, seed=seed, engine="ray", scale="tiny", tiny=True, cross_site=False
        )
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_rss_gb": memory.peak / 1e9}


def _within(fed: float, central: float | None) -> bool | None:
    if central is None:
        return None
    return fed >= central - 0.02 or fed >= 0.98 * central


def markdown(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table: one header row, then `rows` (every table this script prints)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def table(results: dict[str, Any]) -> str:
    header = ["vertical", "metric", "centralized", "federated", "local-only (mean)", "fed / central",
              "fed - local", "int8 - float32 (same seed; mean [min, max])", "int8 bytes on the wire",
              "1 of 3 sites failing"]  # fmt: skip
    rows = []
    for vertical, r in results.items():
        if "error" in r:
            rows.append([vertical, f"error: {r['error']}", *[""] * 8])
            continue
        central, fed, local = r["centralized"], r["federated"], r["local_only_mean"]
        n = len(r["int8_pairs"])
        rows.append(
            [
                vertical,
                r["metric"],
                "n/a" if central is None else f"{central:.3f}",
                f"{fed:.3f}",
                f"{local:.3f}",
                f"{fed / central:.1%}" if central else "n/a",
                f"{fed - local:+.3f}",
                f"{r['int8_change_mean']:+.3f} [{r['int8_change_min']:+.3f}, {r['int8_change_max']:+.3f}] "
                f"({n} seed{'s' if n > 1 else ''})",
                f"{r['int8_message_ratio']:.2f}x messages ({r['int8_message_bytes_per_reply']:.0f} vs "
                f"{r['dense_message_bytes_per_reply']:.0f} B per reply); {r['int8_payload_ratio']:.2f}x payload; "
                f"{r['int8_message_ratio_without_deflate']:.2f}x without deflate",
                f"{r['failing_site']:.3f} "
                f"({'every round aggregated' if r['failing_site_rounds_ok'] else 'rounds FAILED'})",
            ]
        )
    return markdown(header, rows)


def local_steps(vertical: str, plan: dict) -> str:
    """ " (N batches)": a site's batches per round, for Tasks whose epoch is a fixed number of batches."""
    per_epoch = getattr(config_for(vertical, plan), "steps_per_epoch", None)
    return f" ({plan['epochs'] * per_epoch} batches)" if per_epoch else ""


def budget_table(results: dict[str, Any]) -> str:
    """Federated and centralized at the plan's budget and at the longer one (`long_rounds`; means over
    `long_seeds`)."""
    header = ["vertical", "site knobs", "rounds x local epochs (a site's batches per round)", "federated",
              "without the knobs",
              "centralized (same samples)", "fed / central", "longer: rounds (seeds)", "federated", "centralized",
              "fed / central"]  # fmt: skip
    rows = []
    for vertical, r in results.items():
        long = r.get("long")
        if "error" in r or not long or r["centralized"] is None:
            continue
        plan = r["plan"]
        fed2 = float(np.mean(long["federated"]))
        cen2 = float(np.mean(long["centralized"])) if long["centralized"] else None
        rows.append(
            [
                vertical,
                ", ".join(f"{k}={v}" for k, v in plan.get("site_knobs", {}).items()) or "-",
                f"{plan['rounds']} x {plan['epochs']}{local_steps(vertical, plan)}",
                f"{r['federated']:.3f}",
                "-" if r.get("plain") is None else f"{r['plain']:.3f}",
                f"{r['centralized']:.3f}",
                f"{r['federated'] / r['centralized']:.1%}",
                f"{long['rounds']} ({long['n']})",
                f"{fed2:.3f}",
                "n/a" if cen2 is None else f"{cen2:.3f}",
                f"{fed2 / cen2:.1%}" if cen2 else "n/a",
            ]
        )
    return markdown(header, rows)


def seeds_table(results: dict[str, Any]) -> str:
    """Federated and centralized, each the mean over the same seeds (same data, same budget)."""
    header = ["vertical", "seeds", "federated: mean [min, max]", "centralized: mean [min, max]", "fed / central"]
    rows = []
    for vertical, r in results.items():
        seeds = r.get("seeds")
        if "error" in r or not seeds or not seeds["centralized"]:
            continue
        fed, cen = np.array(seeds["federated"]), np.array(seeds["centralized"])
        spread = lambda a: f"{a.mean():.3f} [{a.min():.3f}, {a.max():.3f}]"  # noqa: E731
        rows.append([vertical, str(seeds["n"]), spread(fed), spread(cen), f"{fed.mean() / cen.mean():.1%}"])
    return markdown(header, rows)


def dp_table(results: dict[str, Any]) -> str:
    header = ["vertical", "clip", "noise multiplier", "epsilon (delta 1e-5)", "metric", "change vs no DP"]
    rows = []
    for vertical, r in results.items():
        if "error" in r:
            continue
        for row in r["dp"]:
            eps = "inf (clipping only)" if row["epsilon"] is None else f"{row['epsilon']:.3g}"
            scored = bool(np.isfinite(row["metric"]))
            rows.append(
                [vertical, f"{row['clip']:g}", f"{row['noise']:g}", eps]
                + ([f"{row['metric']:.3f}", f"{row['metric'] - r['federated']:+.3f}"] if scored else
                   ["no score: the sites' evaluation failed (NaN outputs)", "n/a"])
            )  # fmt: skip
    return markdown(header, rows)


def verdicts(results: dict[str, Any]) -> str:
    """Each target, met or missed, from the numbers above."""
    lines = []
    for vertical, r in results.items():
        if "error" in r:
            lines.append(f"- {vertical}: error, no verdict")
            continue
        within = _within(r["federated"], r["centralized"])
        seeds = r.get("seeds") or {}
        over_seeds = ""
        if seeds.get("centralized") and seeds["n"] > 1:
            ok = _within(float(np.mean(seeds["federated"])), float(np.mean(seeds["centralized"])))
            over_seeds = f" (mean over {seeds['n']} seeds: {'met' if ok else 'MISSED'})"
        long = r.get("long") or {}
        if long.get("centralized"):
            ok = _within(float(np.mean(long["federated"])), float(np.mean(long["centralized"])))
            over_seeds += f" (at {long['rounds']} rounds, {long['n']} seed(s): {'met' if ok else 'MISSED'})"
        lines.append(
            f"- {vertical}: within 2 points / 98% of centralized: "
            f"{'n/a' if within is None else ('met' if within else 'MISSED')}{over_seeds}; "
            f"above the average local-only site: {'met' if r['federated'] > r['local_only_mean'] else 'MISSED'}; "
            f"int8 >= 3.9x on the wire: {'met' if r['int8_message_ratio'] >= 3.9 else 'MISSED'}; "
            f"int8 costs <= 1 point (mean over seeds): {'met' if r['int8_change_mean'] >= -0.01 else 'MISSED'}; "
            f"rounds complete with 1 of 3 failing: "
            f"{'met' if r['failing_site_rounds_ok'] and r['failing_site_failed_every_round'] else 'MISSED'}"
        )
    return "\n".join(lines)


def tables(results: dict[str, Any]) -> str:
    """Every table and the verdicts, as printed (and pasted into federation/README.md)."""
    parts = [table(results), budget_table(results), seeds_table(results), dp_table(results), verdicts(results)]
    return "\n\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_federation"))
    parser.add_argument("--verticals", default="medical,finance,manufacturing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ray", action="store_true", help="Also time a 3-site, 2-round run on the Ray engine.")
    parser.add_argument("--demo", action="store_true", help="Also time the full `fedsite demo`.")
    parser.add_argument("--from-runs", action="store_true", help="Only re-tabulate an earlier run's directories.")
    parser.add_argument(
        "--reuse", action="store_true", help="Keep run directories that already hold a history.json (resume a bench)."
    )
    args = parser.parse_args()
    if args.from_runs:
        results = {v: from_runs(v, args.out) for v in args.verticals.split(",") if (args.out / v / "fedavg").exists()}
        print(tables(results))
        return
    # one intra-op thread per process: with two OpenMP threads on a loaded 2-core box an epoch ran 10x slower
    os.environ.setdefault("FEDSITE_THREADS", "1")
    from common.device import set_threads

    set_threads(None)
    began, load_before = time.perf_counter(), os.getloadavg()
    results, ray = {}, {}
    for vertical in args.verticals.split(","):
        try:
            results[vertical] = bench_vertical(vertical, args.out, args.seed, reuse=args.reuse)
        except Exception as exc:  # report and go on: one vertical's failure should not hide the others
            results[vertical] = {"error": f"{type(exc).__name__}: {exc}"}
        if args.ray:
            try:
                ray[vertical] = bench_ray(vertical, args.out, args.seed)
            except Exception as exc:
                ray[vertical] = {"error": f"{type(exc).__name__}: {exc}"}
    demo = None
    if args.demo:
        from federation.demo import run_demo

        with PeakMemory() as memory:
            start = time.perf_counter()
            run_demo(args.out / "demo", seed=args.seed)
            demo = {"seconds": time.perf_counter() - start, "peak_rss_gb": memory.peak / 1e9}
    print(tables(results))
    if ray:
        print("\n| vertical | Ray simulation, 3 sites x 2 rounds (tiny model) | peak RSS (process tree) |")
        print("|---|---|---|")
        for vertical, r in ray.items():
            cells = (
                f"{r['seconds']:.1f} s | {r['peak_rss_gb']:.2f} GB" if "error" not in r else f"error: {r['error']} |"
            )
            print(f"| {vertical} | {cells} |")
    if demo:
        print(f"\nfull demo: {demo['seconds']:.0f} s, peak RSS {demo['peak_rss_gb']:.2f} GB")
    total = time.perf_counter() - began
    load_after = os.getloadavg()
    print(f"\nwall {total:.0f} s; load average (1/5/15 min) before {load_before}, after {load_after}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(
        json.dumps(
            {
                "quality": results,
                "ray": ray,
                "demo": demo,
                "seconds": total,
                "load_before": load_before,
                "load_after": load_after,
            },  # fmt: skip
            indent=2,
            default=str,
        )
    )


if __name__ == "__main__":
    main()
