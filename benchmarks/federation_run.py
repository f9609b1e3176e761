"""Running the federation benchmark's plans: the sites' data, every federated run, the centralized
baselines and the optional Ray timing. Generic over the Task protocol: what differs per vertical is
in its plan (federation_plans.py) and its recipe (federation/recipes.py)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from federation_plans import SITES, central_names, run_names
from federation_results import from_runs


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


def site_data(task: Any, plan: dict, data: Path, seed: int) -> str:
    """The plan's sites under `data` (its own maker, else the Task's `synthesize` at the plan's scale)."""
    from federation.partition import prepare_sites

    if plan.get("sites") is not None:
        synth = plan["sites"](seed)
    else:
        synth = lambda tmp, k: task.synthesize(tmp, seed=seed, site=k, n_sites=SITES, scale=plan["scale"])  # noqa: E731
    return prepare_sites(task, data, SITES, seed=seed, scale=plan.get("scale", "small"), synthesize=synth)


def centralized(
    task: Any, data_root: Path, suffix: str, cfg: Any, plan: dict, seed: int, rounds: int | None = None
) -> dict[str, Any]:
    """One model, pooled training data, R x E epochs over the pool; scored on each site's test split.

    For a Task whose epoch is a fixed number of batches (`steps_per_epoch`), an epoch over data three
    times as big is three times as many batches, so the centralized model sees as many samples as
    the three sites together."""
    import dataclasses

    from common.device import seed_everything

    sources = [data_root / f"site-{k}" / suffix for k in range(SITES)]
    data = plan["pool"]([task.load_data(cfg, s, "train") for s in sources], cfg, seed)
    central_cfg = cfg
    if hasattr(cfg, "steps_per_epoch"):
        central_cfg = dataclasses.replace(cfg, steps_per_epoch=cfg.steps_per_epoch * SITES)
    seed_everything(seed)
    model = task.build_model(cfg)
    seed_everything(seed + 1)
    start = time.perf_counter()
    task.fit(model, data, central_cfg, epochs=(rounds or plan["rounds"]) * plan["epochs"])
    seconds = time.perf_counter() - start
    per_site = [task.evaluate(model, task.load_data(cfg, s, "test"), cfg)[task.headline_metric] for s in sources]
    return {"mean": float(np.mean(per_site)), "per_site": per_site, "train_seconds": seconds}


def bench_vertical(vertical: str, plan: dict, out: Path, seed: int, reuse: bool = False) -> dict[str, Any]:
    """Every run of the plan (federated, then centralized), then its numbers (federation_results)."""
    from common.progress import log
    from common.registry import get_task
    from federation.sim import simulate

    task = get_task(vertical)
    recipe = plan["recipe"]
    cfg = recipe.model_config(task)
    data = out / vertical / "data"
    log(f"bench {vertical}: site data")
    suffix = site_data(task, plan, data, seed)
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
        # every run scores the sites' test splits after its last round only; sites keep their optimizer
        # moments from round to round (the default: fresh ones did worse the more rounds there were)
        settings = {**recipe.settings, "local_epochs": plan["epochs"], "eval_split": "test", "eval_every": rounds,
                    "keep_optimizer": True, **plan["site_knobs"], **knobs, "rounds": rounds}  # fmt: skip
        simulate(
            vertical, run_dir, sites=SITES, seed=run_seed, engine="inprocess", scale=plan.get("scale", "small"),
            cfg=cfg, **settings,
        )  # fmt: skip
        seconds[name] = time.perf_counter() - start
    if plan.get("pool") is not None:
        for name, (rounds, offset) in central_names(plan).items():
            if reuse and (out / vertical / f"{name}.json").exists():
                continue
            log(f"bench {vertical}: {name}")
            start = time.perf_counter()
            central = centralized(task, data, suffix, cfg, plan, seed + offset, rounds)
            seconds[name] = time.perf_counter() - start
            (out / vertical / f"{name}.json").write_text(json.dumps(central, indent=2))
    result = from_runs(vertical, out, plan)
    result["seconds"] = seconds
    return result


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
