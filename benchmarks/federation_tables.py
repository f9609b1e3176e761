"""The federation benchmark's tables and verdicts, from the numbers federation_results.py reads
(printed by benchmarks/federation.py and pasted into federation/README.md)."""

from __future__ import annotations

from typing import Any

import numpy as np
from federation_plans import local_steps


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
