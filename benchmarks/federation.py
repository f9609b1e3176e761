"""Federation benchmark: federated vs centralized vs local-only per vertical, with int8 updates and DP.

Everything is measured in one run on the same sites' data, so the comparisons are ratios against a
peer from the same machine state (absolute times on a shared 2-core box are noisy):

- federated (FedAvg) vs centralized (one model that sees every site's data each epoch, site by
  site) vs local-only (each site alone; scored on every site's test data, averaged), all with the
  same number of epochs per site and scored on each site's own held-out test split;
- int8 update compression (error feedback) and client-side DP against the plain federated run:
  metric change and bytes on the wire;
- a 3-site, 2-round run on Flower's Ray simulation engine with the vertical's tiny model: wall time
  and peak memory of the whole process tree; and a run where one site of three fails every round.

    python benchmarks/federation.py --out runs/bench_federation [--verticals medical,finance,manufacturing]

Prints Markdown tables and writes OUT/results.json.
"""

from __future__ import annotations

import argparse
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

# per vertical: data scale, rounds, epochs per round, DP clip (L2 of one site's update) and noise multiplier
PLANS = {
    "medical": {"scale": "small", "rounds": 3, "epochs": 2, "clip": 2.0, "noise": 0.02, "config": "small"},
    "finance": {"scale": "small", "rounds": 4, "epochs": 2, "clip": 2.0, "noise": 0.02, "config": "tiny"},
    "manufacturing": {"scale": "small", "rounds": 3, "epochs": 2, "clip": 2.0, "noise": 0.02, "config": "tiny"},
}
SITES = 3


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
    from common.registry import get_task

    if vertical == "medical" and plan["config"] == "small":
        from verticals.medical.task import small_config

        return small_config()
    return get_task(vertical).tiny_config()


def mean_test(history: dict, row: str, metric: str) -> float:
    return float(np.mean([m[metric] for m in history["cross_site"][row].values()]))


def centralized(vertical: str, data_root: Path, suffix: str, cfg: Any, plan: dict, seed: int) -> float:
    """One model trained on every site's data each epoch (site by site), scored on each site's test split."""
    from common.device import seed_everything
    from common.registry import get_task

    task = get_task(vertical)
    seed_everything(seed)
    model = task.build_model(cfg)
    sources = [data_root / f"site-{k}" / suffix for k in range(SITES)]
    train = [task.load_data(cfg, s, "train") for s in sources]
    for _ in range(plan["rounds"] * plan["epochs"]):
        for data in train:
            task.fit(model, data, cfg, epochs=1)
    scores = [task.evaluate(model, task.load_data(cfg, s, "test"), cfg)[task.headline_metric] for s in sources]
    return float(np.mean(scores))


def bench_vertical(vertical: str, out: Path, seed: int) -> dict[str, Any]:
    from common.progress import log
    from common.registry import get_task
    from federation.partition import prepare_sites
    from federation.sim import simulate

    task = get_task(vertical)
    plan = PLANS[vertical]
    cfg = config_for(vertical, plan)
    metric = task.headline_metric
    common = {"sites": SITES, "rounds": plan["rounds"], "seed": seed, "engine": "inprocess", "scale": plan["scale"],
              "cfg": cfg, "local_epochs": plan["epochs"]}  # fmt: skip
    data = out / vertical / "data"
    suffix = prepare_sites(task, data, SITES, seed=seed, scale=plan["scale"])
    runs: dict[str, dict] = {}
    for name, knobs in {
        "fedavg": {"cross_site": True},
        "fedavg+int8": {"cross_site": False, "compression": "int8"},
        "fedavg+dp": {"cross_site": False, "clip": plan["clip"], "noise": plan["noise"]},
        "fedavg, 1 of 3 sites failing": {"cross_site": False, "fail_site": 1},
    }.items():
        run_dir = out / vertical / RUN_DIRS[name]
        run_dir.mkdir(parents=True, exist_ok=True)
        link = run_dir / "data"
        if not link.exists():
            link.symlink_to(data.resolve(), target_is_directory=True)
        log(f"bench {vertical}: {name}")
        start = time.perf_counter()
        history = simulate(vertical, run_dir, **common, **knobs)
        runs[name] = {"history": history, "seconds": time.perf_counter() - start}
    log(f"bench {vertical}: centralized")
    central = centralized(vertical, data, suffix, cfg, plan, seed)
    result = summarize(metric, {k: v["history"] for k, v in runs.items()}, central, plan)
    result["seconds"] = {k: v["seconds"] for k, v in runs.items()}
    return result


RUN_DIRS = {
    "fedavg": "fedavg",
    "fedavg+int8": "fedavg_int8",
    "fedavg+dp": "fedavg_dp",
    "fedavg, 1 of 3 sites failing": "fedavg_1_of_3_sites_failing",
}


def summarize(metric: str, runs: dict[str, dict], central: float | None, plan: dict) -> dict[str, Any]:
    """The comparison numbers from the runs' history.json (centralized passed in: it has no history)."""
    fed, int8, dp = runs["fedavg"], runs["fedavg+int8"], runs["fedavg+dp"]
    failing = runs["fedavg, 1 of 3 sites failing"]
    local = [mean_test(fed, f"local:site-{k}", metric) for k in range(SITES)]
    return {
        "metric": metric,
        "federated": mean_test(fed, "global", metric),
        "centralized": central,
        "local_only_mean": float(np.mean(local)),
        "local_only_per_site": local,
        "int8": mean_test(int8, "global", metric),
        "int8_payload_ratio": int8["compression"]["payload_ratio"],
        "int8_message_ratio": fed["compression"]["message_bytes_sent"]
        / max(int8["compression"]["message_bytes_sent"], 1),
        "dp": mean_test(dp, "global", metric),
        "dp_epsilon": dp["privacy"]["epsilon"],
        "failing_site_rounds_ok": all(r["aggregated"] for r in failing["rounds"]),
        "failing_site": mean_test(failing, "global", metric),
        "plan": plan,
    }


def from_runs(vertical: str, out: Path) -> dict[str, Any]:
    """Rebuild a vertical's numbers from an earlier run's directories (centralized is not recorded there)."""
    from common.registry import get_task

    runs = {k: json.loads((out / vertical / d / "history.json").read_text()) for k, d in RUN_DIRS.items()}
    return summarize(get_task(vertical).headline_metric, runs, None, PLANS[vertical])


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


def table(results: dict[str, Any]) -> str:
    lines = [
        "| vertical | metric | centralized | federated | local-only (mean) | fed / central | fed - local | "
        "int8 | int8 bytes ratio | DP (eps) | 1 site failing |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for vertical, r in results.items():
        if "error" in r:
            lines.append(f"| {vertical} | error: {r['error']} |" + " |" * 9)
            continue
        central = r["centralized"]
        ratio = f"{r['federated'] / central:.1%}" if central else "n/a"
        shown = "n/a" if central is None else f"{central:.3f}"
        fed, local, int8 = r["federated"], r["local_only_mean"], r["int8"]
        lines.append(
            f"| {vertical} | {r['metric']} | {shown} | {fed:.3f} | {local:.3f} "
            f"| {ratio} | {fed - local:+.3f} | {int8:.3f} ({int8 - fed:+.3f}) "
            f"| {r['int8_payload_ratio']:.2f}x payload, {r['int8_message_ratio']:.2f}x message "
            f"| {r['dp']:.3f} ({r['dp_epsilon']:.1f}) | {r['failing_site']:.3f} "
            f"({'rounds ok' if r['failing_site_rounds_ok'] else 'rounds FAILED'}) |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_federation")
    parser.add_argument("--verticals", default="medical,finance,manufacturing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--demo", action="store_true", help="Also time the full `fedsite demo`.")
    parser.add_argument("--from-runs", action="store_true", help="Only re-tabulate an earlier run's directories.")
    args = parser.parse_args()
    if args.from_runs:
        verticals = [v for v in args.verticals.split(",") if (args.out / v / "fedavg_dp").exists()]
        print(table({v: from_runs(v, args.out) for v in verticals}))
        return
    # one intra-op thread per process: with two OpenMP threads on a loaded 2-core box an epoch ran 10x slower
    os.environ.setdefault("FEDSITE_THREADS", "1")
    from common.device import set_threads

    set_threads(None)
    results, ray = {}, {}
    for vertical in args.verticals.split(","):
        try:
            results[vertical] = bench_vertical(vertical, args.out, args.seed)
        except Exception as exc:  # report and go on: one vertical's failure should not hide the others
            results[vertical] = {"error": f"{type(exc).__name__}: {exc}"}
        if not args.skip_ray:
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
    print(table(results))
    if ray:
        print(
            "\n| vertical | Ray simulation, 3 sites x 2 rounds (tiny model) | peak RSS (process tree) |\n|---|---|---|"
        )
        for vertical, r in ray.items():
            cells = (
                f"{r['seconds']:.1f} s | {r['peak_rss_gb']:.2f} GB" if "error" not in r else f"error: {r['error']} |"
            )
            print(f"| {vertical} | {cells} |")
    if demo:
        print(f"\nfull demo: {demo['seconds']:.0f} s, peak RSS {demo['peak_rss_gb']:.2f} GB")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(
        json.dumps({"quality": results, "ray": ray, "demo": demo}, indent=2, default=str)
    )


if __name__ == "__main__":
    main()
