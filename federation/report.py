"""The outputs of a federated run: history.json (docs/contracts.md), global_model/, report.md with plots.

history.json is the record a reviewer trusts: per round and per site, what was trained, how the
new global model did on each site's own validation data, and what crossed the wire.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common import atomic, runs
from federation.settings import FederationSettings


def new_history(settings: FederationSettings) -> dict[str, Any]:
    return {
        "vertical": settings.vertical,
        "strategy": settings.strategy,
        "sites": [],
        "rounds": [],
        "cross_site": {},
        "privacy": {"epsilon": None, "delta": None},
        "secure_aggregation": None,  # secagg.describe(...) when the run used SecAgg+
    }


def failed_sites(history: dict[str, Any]) -> list[str]:
    """Sites that failed or timed out in at least one round (the run completed without them there)."""
    return sorted({s for r in history["rounds"] for s, e in r["sites"].items() if e["status"] != "ok"})


def compression_summary(
    history: dict[str, Any], codec_name: str, layout_size: int, int8_chunks: int | None = None, exact: int = 0
) -> dict[str, Any]:
    """Update bytes actually sent vs the same updates as dense float32 (4 bytes per weight)."""
    from federation.codec import int8_raw_bytes

    sent = payload = dense = deflated = replies = 0
    for record in history["rounds"]:
        for entry in record["sites"].values():
            if entry["status"] == "ok":
                sent += entry["bytes_sent"]
                payload += entry.get("payload_bytes", 0)
                deflated += entry.get("payload_deflated_bytes", 0)
                dense += 4 * layout_size
                replies += 1
    return {
        "codec": codec_name,
        "update_payload_bytes": payload,
        "dense_update_bytes": dense,
        "payload_ratio": (dense / payload) if payload else None,
        "message_bytes_sent": sent,
        "bytes_saved": max(dense - payload, 0),
        "replies": replies,
        # the same updates' payload after a lossless zlib deflate, and (int8) before the codec's own deflate
        "payload_deflated_bytes": deflated,
        "payload_before_deflate_bytes": (
            replies * int8_raw_bytes(layout_size, int8_chunks, exact) if codec_name == "int8" else payload
        ),
    }


def _plot(history: dict[str, Any], headline: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [r["round"] for r in history["rounds"]]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(
        rounds, [r["global_eval"].get(headline, float("nan")) for r in history["rounds"]], "k-o", label="global"
    )
    for site in history["sites"]:
        values = [r["sites"].get(site, {}).get("eval", {}).get(headline, float("nan")) for r in history["rounds"]]
        axes[0].plot(rounds, values, "--", marker=".", label=site)
    axes[0].set(title=f"validation {headline}", xlabel="round")
    axes[0].legend(fontsize=7)
    for site in history["sites"]:
        values = [r["sites"].get(site, {}).get("train", {}).get("loss", float("nan")) for r in history["rounds"]]
        axes[1].plot(rounds, values, marker=".", label=site)
    axes[1].set(title="local training loss", xlabel="round")
    axes[1].legend(fontsize=7)
    sent = [sum(e["bytes_sent"] for e in r["sites"].values()) / 1e6 for r in history["rounds"]]
    received = [sum(e["bytes_received"] for e in r["sites"].values()) / 1e6 for r in history["rounds"]]
    axes[2].bar([x - 0.2 for x in rounds], sent, width=0.4, label="sites -> hub")
    axes[2].bar([x + 0.2 for x in rounds], received, width=0.4, label="hub -> sites")
    axes[2].set(title="MB on the wire (train)", xlabel="round")
    axes[2].legend(fontsize=7)
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    with atomic.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def markdown(history: dict[str, Any], headline: str) -> str:
    """report.md: settings, per-round table, cross-site matrix, privacy and bytes."""
    lines = [
        f"# Federated run: {history['vertical']} ({history['strategy']})",
        "",
        f"Sites: {', '.join(history['sites'])}. Rounds: {len(history['rounds'])}. Headline metric: `{headline}` "
        "(global = example-weighted mean of the sites' own validation scores; no data is pooled).",
        "",
        "![training curves](curves.png)",
        "",
        "| round | sites ok | global " + headline + " | " + " | ".join(history["sites"]) + " |",
        "|---|---|---|" + "---|" * len(history["sites"]),
    ]
    for r in history["rounds"]:
        ok = sum(e["status"] == "ok" for e in r["sites"].values())
        cells = []
        for site in history["sites"]:
            entry = r["sites"].get(site, {})
            value = entry.get("eval", {}).get(headline)
            cells.append(("" if value is None else _fmt(value)) + ("" if entry.get("status") == "ok" else " (failed)"))
        glob = r["global_eval"].get(headline)
        lines.append(
            f"| {r['round']} | {ok}/{len(r['sites'])} | {_fmt(glob) if glob is not None else ''} | "
            + " | ".join(cells)
            + " |"
        )
    matrix = history.get("cross_site", {})
    if matrix:
        lines += ["", f"## Cross-site matrix (test {headline}: rows = model, columns = site data)", ""]
        lines.append("| model | " + " | ".join(history["sites"]) + " |")
        lines.append("|---|" + "---|" * len(history["sites"]))
        for model_name, row in matrix.items():
            cells = [_fmt(row.get(s, {}).get(headline, "")) for s in history["sites"]]
            lines.append(f"| {model_name} | " + " | ".join(cells) + " |")
    privacy = history.get("privacy", {})
    comp = history.get("compression", {})
    lines += ["", "## Privacy and traffic", ""]
    if privacy.get("epsilon") is None:
        lines.append("Differential privacy: off.")
    else:
        lines.append(f"Differential privacy: (epsilon={privacy['epsilon']:.3f}, delta={privacy['delta']:g}) per site.")
    if comp:
        ratio = comp.get("payload_ratio")
        lines.append(
            f"Update codec `{comp['codec']}`: {comp['update_payload_bytes']} update bytes vs "
            f"{comp['dense_update_bytes']} dense float32"
            + (f" ({ratio:.2f}x fewer, {comp['bytes_saved']} bytes saved)." if ratio else ".")
        )
    failed = [
        (r["round"], s, e.get("error", ""))
        for r in history["rounds"]
        for s, e in r["sites"].items()
        if e["status"] != "ok"
    ]
    if failed:
        lines += ["", "## Failed sites", ""] + [f"- round {r}: {s}: {err}" for r, s, err in failed]
    return "\n".join(lines) + "\n"


def write_outputs(out: Path, settings: FederationSettings, history: dict[str, Any], model, cfg, task) -> None:
    """history.json, global_model/ and report.md (+ curves.png), each written atomically."""
    last = history["rounds"][-1]["global_eval"] if history["rounds"] else {}
    metrics = {k: v for k, v in last.items() if k != "num-examples"}
    runs.save_model(
        out / "global_model",
        settings.vertical,
        model,
        cfg,
        metrics=metrics,
        seed=settings.seed,
        extra={"federation": {"strategy": settings.strategy, "sites": history["sites"], "rounds": settings.rounds}},
    )
    runs.write_json(out / "history.json", history)
    if history["rounds"]:
        _plot(history, task.headline_metric, out / "curves.png")
    atomic.write_text(out / "report.md", markdown(history, task.headline_metric))
