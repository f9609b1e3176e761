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

What runs is each vertical's "federated" recipe (federation/recipes.py) with the benchmark's own
additions (federation_plans.py: sites with held-out splits larger than the Task's named scales, so a
site's test score is not decided by one or two scans or ten images; the centralized pooling; DP and
int8 seeds); federation_run.py runs them, federation_results.py reads the run directories back and
federation_tables.py prints the tables. Use a fresh --out: existing site data under OUT is reused.

    FEDSITE_THREADS=1 python benchmarks/federation.py --out /tmp/bench_federation [--verticals medical,finance]

Prints Markdown tables and writes OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from federation_plans import plan_for  # noqa: E402
from federation_results import from_runs  # noqa: E402
from federation_run import PeakMemory, bench_ray, bench_vertical  # noqa: E402
from federation_tables import tables  # noqa: E402


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
        verticals = [v for v in args.verticals.split(",") if (args.out / v / "fedavg").exists()]
        results = {v: from_runs(v, args.out, plan_for(v)) for v in verticals}
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
            results[vertical] = bench_vertical(vertical, plan_for(vertical), args.out, args.seed, reuse=args.reuse)
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
