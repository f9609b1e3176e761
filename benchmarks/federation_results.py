"""The federation benchmark's numbers, read back from its run directories (history.json per run,
centralized*.json per centralized model), so a finished benchmark can be re-tabulated at any time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from federation_plans import SITES, central_names, dp_name, run_names, seeded


def mean_test(history: dict, row: str, metric: str) -> float:
    """Mean over sites of a cross-site row; nan when a site could not score the model (its reply
    carried no metrics: e.g. DP noise made BatchNorm variances negative and the outputs NaN)."""
    return float(np.mean([m.get(metric, np.nan) for m in history["cross_site"][row].values()]))


def from_runs(vertical: str, out: Path, plan: dict[str, Any]) -> dict[str, Any]:
    """A vertical's numbers from its run directories (history.json files and centralized*.json)."""
    from common.registry import get_task

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
        h = runs[dp_name(z)]
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
