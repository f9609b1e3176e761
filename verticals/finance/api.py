"""The Python API behind `fedsite finance train / score / update` (the demo and benchmarks call these).

Each function does the whole job of one command and returns plain data; the CLI only parses options,
calls one of these and maps the outcome to exit codes. Outputs are written atomically.
"""

from __future__ import annotations

import pickle
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from common import config, runs
from common.atomic import write_csv, write_csv_columns
from common.device import set_threads
from common.progress import log
from data_adapters.transactions import time_order, write_rejected
from verticals.finance.config import FinanceConfig
from verticals.finance.data import FinanceData, dataset_from, read_for
from verticals.finance.explain import BASELINE_FILE, baseline_bytes, format_reason, load_baseline
from verticals.finance.head import HEAD_FILE, TreeHead, blend, choose_weight, fit_head, load_head
from verticals.finance.infer import load_scorer, predict
from verticals.finance.label_history import TABLE_FILE, LabelTable, append_for_training
from verticals.finance.stages import Stages
from verticals.finance.train import fit


def export_bytes(model: nn.Module, cfg: FinanceConfig) -> dict[str, bytes]:
    """model.onnx for the model directory (the serving and batch-scoring path)."""
    import tempfile

    from common.export import export_onnx
    from common.registry import get_task

    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, get_task("finance").example_input(cfg), Path(tmp) / "model.onnx")
        return {"model.onnx": path.read_bytes()}


def train_model(
    data: str | Path, out: str | Path, cfg: FinanceConfig, *, seed: int = 0, holdout: float = 0.0
) -> dict[str, float]:
    """`fedsite finance train`: fit on the valid rows of `data`, save a model directory (with ONNX).

    `holdout` > 0: the latest `holdout` share of the period (by timestamp, not by row) is kept out of
    every fit (network, trees, blend weight) and the saved model is measured on it (`holdout_*`
    metrics): the honest "how will it do next month" figure. 0: every row is used, no holdout metrics.
    """
    from common.device import seed_everything
    from common.registry import get_task
    from verticals.finance.evaluate import fraud_metrics

    set_threads(cfg.threads or None)
    seed_everything(seed)
    if cfg.head_bag < 1:
        from common.errors import UserError

        raise UserError(f"head_bag = {cfg.head_bag}: the tree head needs at least 1 tree model")
    stages = Stages()
    with stages("reading") as rows_read:
        txns, rejects = read_for(cfg, data, require_label=True)
        rows_read[0] = txns.rows_read
    with stages("featurising", len(txns)):
        txns.reorder(time_order(txns))  # in place: the file-order copy is never held beside the sorted one
        dataset = dataset_from(txns, cfg, None, rejects, consume=True)
    held, cut, table_bytes = None, np.inf, None
    if holdout > 0 and len(dataset):
        cut = dataset.ts.min() + (1.0 - holdout) * (dataset.ts.max() - dataset.ts.min())
    if cfg.label_history and cfg.head == "gbdt":  # the known-fraud history of the fitted rows only
        with stages("label history", len(dataset)):
            dataset, table = append_for_training(dataset, txns, dataset.ts < cut, cfg.label_delay_days, seed)
            table_bytes = table.to_bytes()  # saved as is; its per-account indexes are not held through the fits
            del table
    del txns
    if holdout > 0 and len(dataset):
        held, dataset = dataset.where(dataset.ts >= cut), dataset.where(dataset.ts < cut)
    if dataset.label.sum() == 0:
        from common.errors import UserError

        raise UserError(f"{data}: no row has is_fraud=1; cannot learn what fraud looks like")
    cfg = config.replace(cfg, feature_spec=dataset.spec.to_json())  # saved: every later use encodes alike
    for note in dataset.spec.notes():
        log(note)
    model = get_task("finance").build_model(cfg)
    files: dict[str, bytes] = {BASELINE_FILE: baseline_bytes(dataset.features)}  # for `score --explain`
    head = None
    if cfg.head == "gbdt":
        model, head, cfg, fit_metrics = fit_with_head(model, dataset, cfg, seed=seed, stages=stages)
        files[HEAD_FILE] = pickle.dumps(head)
        if table_bytes is not None:
            files[TABLE_FILE] = table_bytes  # site data: stays in this model directory
    else:
        with stages("network fit") as seen:
            fit_metrics = fit(model, dataset, cfg)
            seen[0] = int(fit_metrics["rows_seen"])
    with stages("evaluating", len(dataset) + (len(held) if held is not None else 0)):
        if 0 < cfg.train_metrics_rows < len(dataset):
            log(f"finance: train_metrics_rows = {cfg.train_metrics_rows}: train_* metrics on a random sample")
            pick = np.sort(np.random.default_rng(seed).choice(len(dataset), cfg.train_metrics_rows, replace=False))
            # scored 32,768 sampled rows at a time (a multiple of predict's batch: the same batches as
            # one copy of the whole sample, which held 0.3 GB more at the peak of a million-row fit)
            parts = [blended(model, head, dataset.take(pick[i : i + 32_768]), cfg) for i in range(0, len(pick), 32_768)]
            train_metrics = fraud_metrics(dataset.label[pick], np.concatenate(parts))
        else:
            train_metrics = fraud_metrics(dataset.label, blended(model, head, dataset, cfg))
        metrics = {"train_loss": fit_metrics["loss"], **{f"train_{k}": v for k, v in train_metrics.items()}}
        metrics.update({k: v for k, v in fit_metrics.items() if k.startswith("validation_")})
        if held is not None:
            metrics.update(holdout_metrics(model, head, cfg, held, holdout))
    with stages("export", len(dataset)):
        files |= export_bytes(model, cfg)
    runs.save_model(
        out,
        "finance",
        model,
        cfg,
        metrics=metrics,
        seed=seed,
        data_fingerprint=runs.fingerprint(data),
        extra={
            "rows_rejected": len(dataset.rejects),
            "rows_trained": len(dataset),
            "feature_columns": dataset.spec.used,
            "ignored_columns": dataset.spec.ignored,
            "stages": stages.table,
        },
        extra_files=files,
    )
    log(f"saved {out} ({len(dataset)} rows, {len(dataset.rejects)} rejected, {fit_metrics['seconds']:.0f}s)")
    return metrics


def holdout_metrics(
    model: nn.Module, head: TreeHead | None, cfg: FinanceConfig, held: FinanceData, share: float
) -> dict[str, float]:
    """fraud_metrics of the trained model on the held-out latest rows, keys prefixed `holdout_`.

    The held-out rows' features were computed causally over the whole file, so each one sees the
    account history before it (as in production), but no label of the held-out period was fitted.
    """
    from verticals.finance.evaluate import fraud_metrics

    scores = blended(model, head, held, cfg)
    fraud = int(held.label.sum())
    log(f"held out the latest {share:.0%} of the period: {len(held)} rows, {fraud} fraud")
    if fraud == 0:
        log("warning: no fraud in the held-out period; its AUPRC/recall cannot be judged")
    return {f"holdout_{k}": v for k, v in fraud_metrics(held.label, scores, held.typology).items()}


def fit_with_head(
    model: nn.Module, data: FinanceData, cfg: FinanceConfig, *, seed: int = 0, stages: Stages | None = None
) -> tuple[nn.Module, TreeHead, FinanceConfig, dict[str, float]]:
    """The network and the boosted-tree head, and the weight that blends them, chosen honestly.

    The network is trained on the earlier `1 - head_validation` of the training period, and so is
    a first head; on the later rows (unseen by both) the blend weight with the best AUPRC is chosen
    (unless `network_weight` is set). The head is then refitted on every row (trees are cheap); the
    network is not (that would double the training time), so it has not seen the latest rows.
    Returns the network, the head, the config with `network_weight` and fit metrics including the
    validation AUPRC of the head alone (weight 0), the network alone (1) and the blend; with
    `head_bag` > 1 also `network_weight_one_head`, the weight its first member alone would have
    been given (the `head_bag = 1` model of this seed is the network, that member and that weight).
    `stages` (if given) times the network fit, the tree head fits and the blend calibration.
    """
    stages = stages or Stages()
    lo, hi = float(data.ts.min()), float(data.ts.max())
    cut = lo + (1.0 - cfg.head_validation) * (hi - lo)
    early, late = data.where(data.ts < cut), data.where(data.ts >= cut)  # time-ordered: views, not copies
    with stages("network fit") as seen:
        fit_metrics = fit(model, early, cfg)
        seen[0] = int(fit_metrics["rows_seen"])
    weight, table = cfg.network_weight, {}
    if weight < 0:
        with stages("tree head fit", len(early)):
            first = fit_head(
                early.features,
                early.tree,
                early.label,
                data.spec,
                None,
                seed=seed,
                max_rows=cfg.head_max_rows,
                bag=cfg.head_bag,
            )
        with stages("calibration", len(late)):
            network = predict(model, late.features)
            weight, table = choose_weight(late.label, first.predict(late.features, late.tree, None), network)
            if cfg.head_bag > 1:
                one = first.first(1).predict(late.features, late.tree, None)
                fit_metrics["network_weight_one_head"] = choose_weight(late.label, one, network)[0]
        log(f"network weight {weight} (validation AUPRC by weight: {table})")
    with stages("tree head fit", len(data)):
        head = fit_head(
            data.features,
            data.tree,
            data.label,
            data.spec,
            None,
            seed=seed,
            max_rows=cfg.head_max_rows,
            bag=cfg.head_bag,
        )
    fit_metrics |= {f"validation_auprc_weight_{w}": v for w, v in table.items()}
    return model, head, config.replace(cfg, network_weight=weight), fit_metrics


def blended(model: nn.Module, head: TreeHead | None, data: FinanceData, cfg: FinanceConfig) -> np.ndarray:
    """The model directory's score: the network, blended with the tree head when there is one."""
    network = predict(model, data.features)
    if head is None:
        return network
    return blend(head.predict(data.features, data.tree, None), network, cfg.network_weight)


def update_model(
    model_dir: str | Path, data: str | Path, out: str | Path, *, seed: int = 0, force: bool = False
) -> dict[str, dict]:
    """`fedsite finance update`: fine-tune on newly labelled rows; metrics before and after.

    The new rows are split by time: the model is fine-tuned on the earlier 80 % and both models are
    measured on the later 20 % (a held-out period, so "after" is not measured on what it just saw).
    """
    from common.device import seed_everything
    from common.guard import require_judgeable
    from verticals.finance.evaluate import fraud_metrics

    loaded = runs.load_model(model_dir, expect="finance")
    cfg = loaded.cfg
    set_threads(cfg.threads or None)
    seed_everything(seed)
    head = load_head(model_dir)
    txns, rejects = read_for(cfg, data, require_label=True)
    txns = txns.take(time_order(txns))
    dataset = dataset_from(txns, cfg, None, rejects, analyst=getattr(head, "aggregates", False))  # as the head reads
    cut = dataset.ts.min() + 0.8 * (dataset.ts.max() - dataset.ts.min())
    table = tuned_table = None
    if getattr(head, "labels", False):  # known-fraud history: the saved table, then it plus the new labels
        table, tune_rows = LabelTable.load(model_dir), txns.ts < cut
        tuned_table = table.extended(
            txns.ts[tune_rows], txns.src[tune_rows], txns.dst[tune_rows], txns.label[tune_rows]
        )
    tune, hold = dataset.take(np.flatnonzero(dataset.ts < cut)), dataset.take(np.flatnonzero(dataset.ts >= cut))
    if table is not None:
        tune, hold, hold_after = _with_history(tune, hold, txns, cut, table, tuned_table, cfg, seed)
    if len(tune) == 0 or len(hold) == 0:
        from common.errors import UserError

        raise UserError(f"{data}: need rows spread over time to fine-tune and hold out (found {len(dataset)})")
    before = fraud_metrics(hold.label, blended(loaded.model, head, hold, cfg), hold.typology)
    guard = require_judgeable(
        before["auprc"] if hold.label.any() else None,
        f"{data}: AUPRC of the held-out later 20 % ({len(hold)} rows, {int(hold.label.sum())} fraud)",
        force=force,
        hint="add labelled rows with fraud to the later period",
    )
    fit(loaded.model, tune, cfg, epochs=cfg.finetune_epochs, lr=cfg.finetune_lr)
    files: dict[str, bytes] = {}
    if head is not None:  # the trees are refitted on the new rows (they do not fine-tune)
        head = fit_head(
            tune.features,
            tune.tree,
            tune.label,
            tune.spec,
            None,
            seed=seed,
            max_rows=cfg.head_max_rows,
            bag=len(head.members),  # as many members as the saved head (1 for heads saved before bags)
        )
        files[HEAD_FILE] = pickle.dumps(head)
    if tuned_table is not None:
        files[TABLE_FILE] = tuned_table.to_bytes()
        hold = hold_after  # scored from the refreshed table, as the updated model will score
    after = fraud_metrics(hold.label, blended(loaded.model, head, hold, cfg), hold.typology)
    runs.save_model(
        out,
        "finance",
        loaded.model,
        cfg,
        metrics={f"holdout_{k}": v for k, v in after.items()},
        seed=seed,
        data_fingerprint=runs.fingerprint(data),
        extra={"updated_from": str(model_dir), "rows_rejected": len(dataset.rejects)},
        extra_files=export_bytes(loaded.model, cfg) | files,
    )
    result = {"before": before, "after": after, "rows_tuned": len(tune), "rows_held_out": len(hold)}
    return result | ({"guard": f"off: {guard}"} if guard else {})


def _with_history(
    tune: FinanceData,
    hold: FinanceData,
    txns,
    cut: float,
    table: LabelTable,
    tuned_table: LabelTable,
    cfg: FinanceConfig,
    seed: int,
) -> tuple[FinanceData, FinanceData, FinanceData]:
    """`update`'s rows with the known-fraud history appended: the tuning rows as training sees them
    (the saved labels and the tuning rows' own, each older than its random delay), the held-out rows
    from the saved table (the model before) and from the table with the tuning labels (after)."""
    import dataclasses

    from verticals.finance.label_history import delayed_features

    early, late = txns.ts < cut, txns.ts >= cut
    rows = (txns.ts[early], txns.src[early], txns.dst[early])
    tuned = delayed_features(tuned_table, *rows, cfg.label_delay_days, seed)
    late_rows = (txns.ts[late], txns.src[late], txns.dst[late])
    before, after = table.scoring(*late_rows), tuned_table.scoring(*late_rows)
    add = lambda d, h: dataclasses.replace(d, tree=np.concatenate([d.tree, h], 1))  # noqa: E731
    return add(tune, tuned), add(hold, before), add(hold, after)


@dataclass
class ScoreReport:
    rows_read: int
    scored: int
    rejected: int
    seconds: float
    backend: str
    scores_path: str
    rejected_path: str
    cpu_seconds: float = 0.0  # of the whole process meanwhile (both threads): on a shared machine, the steadier figure


def score_csv(
    data: str | Path,
    model_dir: str | Path,
    out: str | Path,
    *,
    columns: str | None = None,
    fmt: str | None = None,
    explain: bool = False,
) -> ScoreReport:
    """`fedsite finance score`: scores.csv (input order) + rejected.csv beside it.

    The file is read with the model's column mapping unless `columns` / `fmt` replace it. `explain`
    adds reason_1..3 per row (explain.py: occlusion of feature groups, ~15 extra model passes).
    """
    start, cpu = time.perf_counter(), time.process_time()
    scorer = load_scorer(model_dir)
    changes = {k: v for k, v in (("columns", columns), ("format", fmt)) if v is not None}
    txns, rejects = read_for(config.replace(scorer.cfg, **changes), data, trained_only=True)
    order = time_order(txns)
    log(f"scoring {len(txns)} transactions ({scorer.backend})")
    txn_id = txns.txn_id  # input order, for the output
    txns.reorder(order)  # in place: no second copy of every column
    probs = np.empty(len(txns), np.float64)
    args = (txns.ts, txns.src, txns.dst, txns.amount, txns.channel, txns.extras)
    out = Path(out)
    if explain:
        ranked, why = scorer.score_explained(*args, baseline=load_baseline(model_dir))
        probs[order] = ranked
        texts = [""] * len(txns)
        for row, reasons in zip(order, why):
            texts[row] = [format_reason(name, change) for name, change in reasons]
        header = ["txn_id", "fraud_probability", *(f"reason_{i + 1}" for i in range(3))]
        rows = ([t, f"{p:.6g}", *r] for t, p, r in zip(txn_id, probs, texts))
        write_csv(out, header, rows)
    else:
        probs[order] = scorer.score(*args)
        texts = list(map("{:.6g}".format, probs.tolist()))  # as f"{p:.6g}", without a Python frame per row
        write_csv_columns(out, ["txn_id", "fraud_probability"], [txn_id.tolist(), texts])
    rejected_path = out.parent / "rejected.csv"
    write_rejected(rejected_path, rejects)
    assert len(txns) + len(rejects) == txns.rows_read
    return ScoreReport(
        txns.rows_read,
        len(txns),
        len(rejects),
        time.perf_counter() - start,
        scorer.backend,
        str(out),
        str(rejected_path),
        time.process_time() - cpu,
    )
