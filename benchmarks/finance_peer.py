"""Item 3 of issue 15: fedsite's default model against an analyst's boosted trees, with ablations.

Why its own module: `finance.py` measures the network against its ablations and speed; this one
answers "does fedsite beat the best trees a fraud analyst would build from the same rows?". The
peer is HistGradientBoosting (the same tree configuration as fedsite's head, `head.boosted_trees`)
over causal per-account aggregates (`aggregates.py`: counts in 1 h / 1 d / 7 d, time since last,
amount z-score, counterparty novelty, fan-in / fan-out, for payer and payee) plus every extra
column of the export. Rows are split by time (earlier 70 % train, later 30 % test; features of the
test period see the training period's history, as live scoring would). Every model is trained once
per seed; AUPRC is reported as the mean over seeds with a 95 % bootstrap interval over test rows
(the seeds' scores resampled together), and the fedsite - peer difference gets its own paired
interval, so "wins" means the interval excludes 0.

    python benchmarks/finance.py --peer --out /tmp/fin-peer --accounts 1000 --days 20 --seeds 0,1
    python benchmarks/finance.py --peer --out /tmp/fin-peer-ieee --data EXPORT.csv --columns SPEC --seeds 0
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np

ROWS = (
    ("fedsite", "fedsite default: network + tree head, blended"),
    ("fedsite_one_head", "fedsite with one tree model (head_bag = 1: the default)"),
    ("head_only", "ablation: tree head alone (blend weight 0)"),
    ("head_one_only", "ablation: its first tree model alone (head_bag = 1, blend weight 0)"),
    ("network_only", "ablation: network alone (TCN + GNN + extra columns)"),
    ("head_no_columns", "ablation: tree head without the extra columns"),
    ("peer", "peer: trees over analyst aggregates + extra columns"),
    ("peer_bagged", "peer bagged: the same K tree models as fedsite's head, logits averaged"),
    ("peer_no_columns", "peer without the extra columns"),
    ("peer_labels", "peer given the same known-fraud history as fedsite (label_history)"),
)
# paired differences (a, b): reported when both rows were trained; a wins where the interval excludes 0
PAIRS = (
    ("fedsite", "peer"),
    ("fedsite", "peer_labels"),
    ("fedsite", "peer_bagged"),
    ("fedsite_one_head", "peer"),
    ("fedsite", "fedsite_one_head"),
)


def _auprc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, p)) if 0 < y.sum() < len(y) else float("nan")


def bootstrap(y: np.ndarray, scores: dict[str, list[np.ndarray]], n: int = 300, seed: int = 0) -> dict[str, tuple]:
    """(mean over seeds, 2.5 %, 97.5 %) of AUPRC per model, and of each PAIRS difference
    `A_minus_B` (paired resamples: the same rows for both)."""
    rng = np.random.default_rng(seed)
    pairs = [(a, b) for a, b in PAIRS if a in scores and b in scores]
    draws = {k: [] for k in scores} | {f"{a}_minus_{b}": [] for a, b in pairs}
    for _ in range(n):
        idx = rng.integers(0, len(y), len(y))
        values = {k: np.mean([_auprc(y[idx], s[idx]) for s in runs]) for k, runs in scores.items()}
        for k, v in values.items():
            draws[k].append(v)
        for a, b in pairs:
            draws[f"{a}_minus_{b}"].append(values[a] - values[b])
    point = {k: float(np.mean([_auprc(y, s) for s in runs])) for k, runs in scores.items()}
    point |= {f"{a}_minus_{b}": point[a] - point[b] for a, b in pairs}
    return {k: (point[k], float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))) for k, v in draws.items()}


def run(
    data_csv: Path,
    cfg,
    seeds: list[int],
    log=print,
    network: bool = True,
    column_ablations: bool = True,
    after_seed=None,
    scores_file: Path | None = None,
) -> dict:
    """Train every row of ROWS for each seed on the earlier 70 % and score the later 30 %.

    `network=False` (a busy machine, a large export): fedsite is its tree head alone, and the
    network and the head without the extra columns are not trained. `column_ablations=False`: the
    two rows without the extra columns are not trained (on real card data they are known to be
    near the base rate, and at 200k rows they cost a third of the run). `after_seed(result)`, if
    given, receives the summary over the seeds done so far after each seed (a long run on a shared
    machine leaves a complete table for every finished seed). `scores_file`, if given, receives
    the test rows' labels and every model's test scores per seed (`.npz`, rewritten after each
    seed) so that two runs on the same rows can be compared pairwise (`compare`).
    `cfg.head_bag` = K > 1 (`--set head_bag=K`): fedsite's head is a bag of K tree models, and the
    same run also reports the default it contains (its first member, blended at the weight that
    member alone was given: exactly the `head_bag = 1` model of the seed) and the peer bagged alike
    (K peers with the bag's member seeds, logits averaged; member 0 is the single peer).
    """
    import resource

    from common import config
    from common.device import seed_everything, set_threads
    from data_adapters.transactions import time_order
    from verticals.finance.api import fit_with_head
    from verticals.finance.columns import fit_events, infer_spec, nn_matrix
    from verticals.finance.data import dataset_from, read_for
    from verticals.finance.evaluate import fraud_metrics
    from verticals.finance.head import blend, boosted_trees, fit_head, logit, member_seed
    from verticals.finance.infer import predict
    from verticals.finance.stages import Stages
    from verticals.finance.task import model_from_config

    set_threads(1)
    start = time.perf_counter()
    txns, _ = read_for(cfg, data_csv, require_label=True)
    txns = txns.take(time_order(txns))
    early = txns.ts < txns.ts.min() + 0.7 * (txns.ts.max() - txns.ts.min())
    early_extras = {k: v[early] for k, v in txns.extras.items()}
    spec = infer_spec(early_extras)  # typed (and the event projection fitted) on the training period only
    spec = fit_events(spec, nn_matrix(spec, early_extras, int(early.sum())), cfg.event_columns, cfg.seed)
    cfg = config.replace(cfg, feature_spec=spec.to_json())
    # the trees' matrix: the bank's columns, then the analyst's aggregates (the peer's own features,
    # computed once by the same streaming code fedsite's head reads them with)
    data = dataset_from(txns, cfg, spec, analyst=True)
    k = len(spec.tree_names)
    agg = data.tree[:, k:]
    if not cfg.head_aggregates:  # fedsite's head without them (`--set head_aggregates=false`)
        data = dataclasses.replace(data, tree=data.tree[:, :k])
    read_s = time.perf_counter() - start
    lo, hi = float(data.ts.min()), float(data.ts.max())
    train = np.flatnonzero(data.ts < lo + 0.7 * (hi - lo))
    test = np.flatnonzero(data.ts >= lo + 0.7 * (hi - lo))
    if cfg.label_history:  # training rows: labels older than a random delay; test rows: the training labels
        from verticals.finance.label_history import LabelTable, training_features

        lab = np.empty((len(data), 12), np.float32)
        lab[train] = training_features(txns.ts[train], txns.src[train], txns.dst[train], txns.label[train],
                                       cfg.label_delay_days, cfg.seed)  # fmt: skip
        table = LabelTable.of(txns.ts[train], txns.src[train], txns.dst[train], txns.label[train])
        lab[test] = table.scoring(txns.ts[test], txns.src[test], txns.dst[test])
        data = dataclasses.replace(data, tree=np.c_[data.tree, lab])
    tr, te = data.take(train), data.take(test)
    y = te.label
    used, ignored = len(data.spec.used), len(data.spec.ignored)
    log(f"{len(data)} rows ({len(train)} train, {len(test)} test, {y.mean():.3%} fraud in test), "
        f"{used} extra columns used, {ignored} ignored; read + featurise {read_s:.0f}s")  # fmt: skip
    no_cols = data.tree[:, k:]  # the head without the bank's columns (the aggregates when it reads them)
    peer_x = {"peer": np.c_[agg, data.tree[:, :k]], "peer_no_columns": agg}  # the order its figures had
    peer_cat = {
        "peer": np.r_[np.zeros(agg.shape[1], bool), data.spec.tree_categorical],
        "peer_no_columns": np.zeros(agg.shape[1], bool),
    }
    if cfg.label_history:
        peer_x["peer_labels"] = np.c_[peer_x["peer"], lab]
        peer_cat["peer_labels"] = np.r_[peer_cat["peer"], np.zeros(lab.shape[1], bool)]
    skipped = () if cfg.label_history else ("peer_labels",)
    skipped += () if network else ("head_only", "network_only", "head_no_columns")
    skipped += () if column_ablations else ("head_no_columns", "peer_no_columns")
    bag = cfg.head_bag
    skipped += () if bag > 1 else ("fedsite_one_head", "head_one_only", "peer_bagged")
    skipped += () if network else ("fedsite_one_head",)
    scores: dict[str, list[np.ndarray]] = {k: [] for k, _ in ROWS if k not in skipped}
    seconds: dict[str, float] = {}
    weights, one_weights = [], []
    cost: dict[str, float] = {}  # CPU seconds of the last seed: fit stages, the head's scoring

    def summary() -> dict:
        """The result over the seeds done so far."""
        return {
            "rows": len(data),
            "train_rows": len(train),
            "test_rows": len(test),
            "test_fraud_rate": float(y.mean()),
            "extra_columns": len(data.spec.used),
            "seeds": seeds[: len(weights)],
            "network_weights": weights,
            "network_weights_one_head": one_weights,
            "head_bag": bag,
            "auprc": bootstrap(y, scores),
            "auprc_per_seed": {k: [_auprc(y, s) for s in v] for k, v in scores.items()},
            "recall_at_1pct_fpr": {
                k: float(np.mean([fraud_metrics(y, s)["recall_at_1pct_fpr"] for s in v])) for k, v in scores.items()
            },
            "train_seconds": seconds,
            "cpu_seconds_last_seed": cost,
            "loadavg_1min": os.getloadavg()[0],
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        }

    for seed in seeds:
        seed_everything(seed)
        t = time.perf_counter()
        if not network:
            head = fit_head(tr.features, tr.tree, tr.label, data.spec, None, seed=seed, bag=bag)
            seconds["fedsite"] = time.perf_counter() - t
            scores["fedsite"].append(head.predict(te.features, te.tree, None))
            if bag > 1:
                scores["head_one_only"].append(head.first(1).predict(te.features, te.tree, None))
            weights.append(0.0)
        else:
            stages = Stages()
            model, head, fitted, fit_metrics = fit_with_head(model_from_config(cfg), tr, cfg, seed=seed, stages=stages)
            seconds["fedsite"] = time.perf_counter() - t
            for name, entry in stages.table.items():  # the head's share of the fit (both heads, every member)
                cost[f"{name} cpu_s"] = entry["cpu_seconds"]
            net = predict(model, te.features)
            cpu = time.process_time()
            trees = head.predict(te.features, te.tree, None)
            cost["head scoring of the test rows cpu_s"] = time.process_time() - cpu
            weights.append(fitted.network_weight)
            scores["fedsite"].append(blend(trees, net, fitted.network_weight))
            scores["head_only"].append(trees)
            scores["network_only"].append(net)
            if bag > 1:
                cpu = time.process_time()
                one = head.first(1).predict(te.features, te.tree, None)
                cost["one tree model scoring of the test rows cpu_s"] = time.process_time() - cpu
                one_weight = fit_metrics.get("network_weight_one_head", fitted.network_weight)
                one_weights.append(one_weight)
                scores["fedsite_one_head"].append(blend(one, net, one_weight))
                scores["head_one_only"].append(one)
        if "head_no_columns" in scores:
            t = time.perf_counter()
            bare = fit_head(tr.features, no_cols[train], tr.label, type(data.spec)(), None, seed=seed)
            seconds["head_no_columns"] = time.perf_counter() - t
            scores["head_no_columns"].append(bare.predict(te.features, no_cols[test], None))
        for name in [k for k in ("peer", "peer_no_columns", "peer_labels") if k in scores]:
            t = time.perf_counter()
            trees_model = boosted_trees(peer_cat[name], seed).fit(peer_x[name][train], tr.label)
            seconds[name] = time.perf_counter() - t
            scores[name].append(trees_model.predict_proba(peer_x[name][test])[:, 1])
            if name == "peer" and "peer_bagged" in scores:  # members 1..K-1 beside that member 0
                t = time.perf_counter()
                z = [logit(scores[name][-1])]
                for i in range(1, bag):
                    member = boosted_trees(peer_cat[name], member_seed(seed, i)).fit(peer_x[name][train], tr.label)
                    z.append(logit(member.predict_proba(peer_x[name][test])[:, 1]))
                    del member
                seconds["peer_bagged"] = seconds[name] + time.perf_counter() - t
                scores["peer_bagged"].append(1.0 / (1.0 + np.exp(-np.mean(z, axis=0))))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        log(f"seed {seed}: " + ", ".join(f"{k} {_auprc(y, v[-1]):.3f}" for k, v in scores.items())
            + f" (network weight {weights[-1]}, fedsite fit {seconds['fedsite']:.0f}s, peak memory {peak:.1f} GB,"
            f" load {os.getloadavg()[0]:.1f})")  # fmt: skip
        if scores_file is not None:
            arrays = {f"{k}__{i}": s for k, v in scores.items() for i, s in enumerate(v)}
            from common.atomic import atomic_path

            with atomic_path(scores_file, suffix=".npz") as tmp:
                np.savez_compressed(tmp, y=y, seeds=np.asarray(seeds[: len(weights)]), **arrays)
        if after_seed is not None:
            after_seed(summary())
    return summary()


def load_scores(path: Path) -> tuple[np.ndarray, dict[str, list[np.ndarray]]]:
    """(test labels, {model: [scores per seed]}) from a `scores_file`."""
    with np.load(path) as f:
        keys = sorted((k.rsplit("__", 1)[0], int(k.rsplit("__", 1)[1])) for k in f.files if "__" in k)
        out: dict[str, list[np.ndarray]] = {}
        for name, i in keys:
            out.setdefault(name, []).append(f[f"{name}__{i}"])
        return f["y"], out


def compare(a: Path, b: Path, model_a: str = "fedsite", model_b: str = "fedsite", n: int = 300) -> dict:
    """Paired bootstrap of `model_a` in run `a` minus `model_b` in run `b` on the same test rows
    (the same 300 resamples as `bootstrap`): e.g. fedsite with an option against fedsite without it."""
    ya, sa = load_scores(a)
    yb, sb = load_scores(b)
    if not np.array_equal(ya, yb):
        raise SystemExit(f"{a} and {b} were not scored on the same test rows")
    scores = {"a": sa[model_a], "b": sb[model_b]}
    rng = np.random.default_rng(0)
    diffs = []
    for _ in range(n):
        idx = rng.integers(0, len(ya), len(ya))
        diffs.append(np.mean([_auprc(ya[idx], s[idx]) for s in scores["a"]])
                     - np.mean([_auprc(ya[idx], s[idx]) for s in scores["b"]]))  # fmt: skip
    point = {k: float(np.mean([_auprc(ya, s) for s in v])) for k, v in scores.items()}
    return {
        "a": point["a"], "b": point["b"], "a_minus_b": point["a"] - point["b"],
        "ci": (float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))),
        "per_seed_a": [_auprc(ya, s) for s in scores["a"]], "per_seed_b": [_auprc(ya, s) for s in scores["b"]],
    }  # fmt: skip


def table(name: str, result: dict) -> str:
    """Markdown rows: model, AUPRC mean [95 % CI], recall at 1 % FPR, train s."""
    a = result["auprc"]
    lines = [
        f"{name}: {result['rows']:,} rows ({result['test_rows']:,} test, {result['test_fraud_rate']:.2%} fraud), "
        f"{result['extra_columns']} extra columns, seeds {result['seeds']}, network weights chosen "
        f"{result['network_weights']}, load average {result['loadavg_1min']:.1f}, "
        f"peak memory of the process {result.get('peak_rss_gb', float('nan')):.1f} GB",
        "",
        "| model | test AUPRC (mean over seeds) [95 % CI] | recall at 1 % FPR | train s (last seed) |",
        "|---|---|---|---|",
    ]
    for key, label in ROWS:
        if key not in a:
            continue
        if key == "fedsite" and not any(k == "network_only" for k in a):
            label = "fedsite tree head alone (network not trained: --skip-network)"
        elif key == "fedsite" and result.get("head_bag", 1) > 1:
            label = f"fedsite with head_bag = {result['head_bag']}: network + that many tree models, blended"
        m, lo, hi = a[key]
        lines.append(
            f"| {label} | {m:.3f} [{lo:.3f}, {hi:.3f}] | {result['recall_at_1pct_fpr'][key]:.3f} "
            f"| {result['train_seconds'].get(key, float('nan')):.0f} |"
        )
    for a_name, b_name in PAIRS:
        if f"{a_name}_minus_{b_name}" in a:
            m, lo, hi = a[f"{a_name}_minus_{b_name}"]
            lines.append(f"| **{a_name} - {b_name}** | **{m:+.3f}** [{lo:+.3f}, {hi:+.3f}] | | |")
    if result.get("cpu_seconds_last_seed"):
        cost = ", ".join(f"{k} {v:.1f}" for k, v in result["cpu_seconds_last_seed"].items())
        lines += ["", f"CPU seconds of fedsite's last seed: {cost}"]
    return "\n".join(lines)


def synth_exports(out: Path, accounts: int, days: int, seed: int) -> dict[str, Path]:
    """(a) the generator's own data and (b) the same rows with 34 bank columns (bank_columns.py)."""
    from data_adapters.synth.bank_columns import write_export
    from data_adapters.synth.transactions import write

    own = write(out / "synth", accounts, days, seed=seed)
    return {"a_synthetic": own, "b_synthetic_bank_export": write_export(own, out / "bank" / "transactions.csv", seed)}


if __name__ == "__main__":  # python benchmarks/finance_peer.py A-scores.npz B-scores.npz [MODEL_A [MODEL_B]]
    import json

    if len(sys.argv) < 3:
        sys.exit("run through benchmarks/finance.py --peer; or compare two of its runs' scores: "
                 "finance_peer.py RUN_A_SCORES.npz RUN_B_SCORES.npz [MODEL_A [MODEL_B]]")  # fmt: skip
    print(json.dumps(compare(Path(sys.argv[1]), Path(sys.argv[2]), *sys.argv[3:5]), indent=2))
