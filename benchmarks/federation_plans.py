"""What the federation benchmark runs: each vertical's federated recipe, plus the benchmark's own data
and comparisons (benchmarks/federation.py runs them, federation_tables.py reads them back).

The federation itself (preset, batches per round, rounds x local epochs, the site knobs) is the
vertical's "federated" recipe (federation/recipes.py), the same the demo and `fedsite federate
--recipe federated` use. What only the benchmark adds is below, per vertical: sites with larger
held-out splits than the Tasks' named scales (so a site's test score is not decided by one or two
scans or ten images), how the centralized baseline pools the sites' training data, the DP clip and
noise multipliers, the seeds of the paired int8-vs-float32 comparison and `long_rounds`, the
budget-doubling pair (federated with that many rounds, centralized with as many epochs over the
pool), which shows whether a gap is the budget's or the federation's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

SITES = 3
# knobs a recipe may switch on at the sites; `fedavg_plain` is the same run with them off
SITE_KNOBS = ("one_schedule", "local_norm")


def ct_sites(scans: int) -> Callable[[int], Callable[[Path, int], Any]]:
    """Medical: `scans` phantom scans per site at the "small" geometry (the Task's "small" has 6)."""

    def maker(seed: int) -> Callable[[Path, int], Any]:
        from data_adapters.synth.ct_phantom import synth_dataset

        return lambda tmp, k: synth_dataset(tmp, scans, seed=seed, site=k, n_sites=SITES, scale="small")

    return maker


def inspection_sites(**sizes: int) -> Callable[[int], Callable[[Path, int], Any]]:
    """Manufacturing: the "small" scale with more test parts (as ManufacturingTask.synthesize, whose
    first test parts are the "small" scale's)."""

    def maker(seed: int) -> Callable[[Path, int], Any]:
        from data_adapters.synth.inspection import SCALES, site_category, write_dataset
        from data_adapters.synth.surfaces import Lighting

        scale = dataclasses.replace(SCALES["small"], **sizes)
        return lambda tmp, k: write_dataset(
            tmp, site_category(k), seed=seed * 1000 + k, scale=scale, lighting=Lighting.for_site(k)
        )

    return maker


def pool_cases(parts: list, cfg: Any, seed: int) -> Any:
    """Medical: every site's training scans in one dataset."""
    from verticals.medical.data import MedicalData

    return MedicalData([c for p in parts for c in p.cases], [], [])


def pool_transactions(parts: list, cfg: Any, seed: int) -> Any:
    """Finance: every site's transactions (and their feature histories) in one dataset."""
    from verticals.finance.data import FinanceData
    from verticals.finance.features import FeatureBatch

    cat = lambda name: np.concatenate([getattr(p, name) for p in parts])  # noqa: E731
    features = FeatureBatch.concat([p.features for p in parts], cfg.history)
    return FinanceData(features, cat("label"), cat("typology"), cat("txn_id"), cat("ts"), cat("raw"))


def pool_images(parts: list, cfg: Any, seed: int) -> Any:
    """Manufacturing: every line's images, shuffled, so the good images `fit` holds out for threshold
    calibration come from every site."""
    from verticals.manufacturing.data import InspectionData

    order = np.random.default_rng(seed).permutation(sum(len(p) for p in parts))
    cat = lambda name: np.concatenate([getattr(p, name) for p in parts])[order]  # noqa: E731
    kinds, names = sum((p.kinds for p in parts), []), sum((p.names for p in parts), [])
    return InspectionData(
        cat("images"), cat("labels"), cat("masks"), cat("has_mask"),
        [kinds[i] for i in order], [names[i] for i in order],
    )  # fmt: skip


# `sites`: a maker of the sites' data for a seed (None: the Task's own `synthesize` at `scale`);
# `pool`: the centralized baseline's training data (None: no centralized column)
BENCH: dict[str, dict[str, Any]] = {
    "medical": {
        "sites": ct_sites(16),  # per site: 12 training scans, 4 test scans (12 / 9 / 14 test nodules)
        "pool": pool_cases,
        "clip": 2.0,
        "dp_noise": [0.01],
        "int8_seeds": [0, 1, 2, 3],  # CPM on 35 test nodules moves by ~3 points per nodule found
        # 4x the budget (centralized: 0.776 / 0.846 / 0.866 at 1x / 2x / 4x, seed 0), seeds 0-3
        "long_rounds": 160,
        "long_seeds": [0, 1, 2, 3],
    },
    "finance": {
        "scale": "small",
        "pool": pool_transactions,
        "clip": 2.0,
        "dp_noise": [0.0, 0.01, 1.0],
        "int8_seeds": [0, 1, 2],
    },
    "manufacturing": {
        "sites": inspection_sites(n_test_good=32, n_per_kind=8),  # test images per site: 32 good + 8 per kind
        "pool": pool_images,
        "clip": 2.0,
        "dp_noise": [0.0, 0.01, 1.0],
        "int8_seeds": [0, 1, 2, 3, 4],
        "long_rounds": 100,
    },
}
GENERIC = {"scale": "small", "clip": 2.0, "dp_noise": [0.0, 1.0], "int8_seeds": [0]}  # any other vertical


def plan_for(vertical: str, **changes: Any) -> dict[str, Any]:
    """The vertical's plan: its "federated" recipe with the benchmark's additions (and `changes`)."""
    from common.registry import get_task
    from federation.recipes import resolve

    recipe = resolve(get_task(vertical), "federated")
    plan = {**GENERIC, **BENCH.get(vertical, {}), **changes}
    settings = recipe.settings
    return {
        **plan,
        "recipe": recipe,
        "rounds": plan.get("rounds", settings.get("rounds", 1)),
        "epochs": plan.get("epochs", settings.get("local_epochs", 0)),
        "site_knobs": {k: True for k in SITE_KNOBS if settings.get(k)},
    }


def first_seed(plan: dict) -> int:
    """The seed offset of the plan's main runs ("fedavg", "centralized"): its first int8 seed."""
    return plan["int8_seeds"][0] if plan["int8_seeds"] else 0


def seeded(stem: str, seed: int, plan: dict) -> str:
    """A run's name: `stem` for the plan's first seed (the main run), `stem_seedN` for seed N."""
    return stem if seed == first_seed(plan) else f"{stem}_seed{seed}"


def long_seeds(plan: dict) -> list[int]:
    """The seeds of the long-budget pair (`long_rounds`): the plan's `long_seeds`, else its first seed."""
    if not plan.get("long_rounds"):
        return []
    return list(plan.get("long_seeds", [first_seed(plan)]))


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


def run_names(plan: dict) -> dict[str, dict[str, Any]]:
    """Run directory -> simulate() knobs over the recipe's, for every federated run of a plan."""
    first = first_seed(plan)
    runs: dict[str, dict[str, Any]] = {"fedavg": {"cross_site": True, "seed_offset": first}}
    for s in plan["int8_seeds"]:
        if s != first:
            runs[seeded("fedavg", s, plan)] = {"cross_site": False, "seed_offset": s}
        runs[f"int8_seed{s}"] = {"cross_site": False, "compression": "int8", "seed_offset": s}
    for z in plan["dp_noise"]:
        runs[dp_name(z)] = {"cross_site": False, "clip": plan["clip"], "noise": z}
    runs["one_of_three_failing"] = {"cross_site": False, "fail_site": 1}
    if plan["site_knobs"]:  # the vertical's recipe against plain FedAvg, same seed and budget
        runs["fedavg_plain"] = {"cross_site": False, **{k: False for k in plan["site_knobs"]}}
    for s in long_seeds(plan):
        runs[seeded("fedavg_long", s, plan)] = {"cross_site": False, "rounds": plan["long_rounds"], "seed_offset": s}
    return runs


def dp_name(noise: float) -> str:
    """The run directory of the DP run with this noise multiplier (0: clipping alone)."""
    return "dp_clip_only" if noise == 0 else f"dp_noise_{noise:g}"


def local_steps(vertical: str, plan: dict) -> str:
    """ " (N batches)": a site's batches per round, for Tasks whose epoch is a fixed number of batches."""
    from common.registry import get_task

    per_epoch = getattr(plan["recipe"].model_config(get_task(vertical)), "steps_per_epoch", None)
    return f" ({plan['epochs'] * per_epoch} batches)" if per_epoch else ""
