"""Training: imbalance-aware loss over featurised transactions, with the Task's `added_loss` hook.

Why focal (or weighted) loss: fraud is ~1-2 % of rows, so plain BCE spends its effort on the easy
negatives. Focal loss (Lin et al., 2017) down-weights them; `loss = "weighted"` uses BCE with a
capped positive weight instead. Normalisation statistics are fitted once, on the first data the model
sees, and then live in buffers (federated sites start from the global ones).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common import config, runs
from common.device import select_device, set_threads
from common.progress import log, track
from common.task import ExtraLoss, Proximal, added_loss, fit_optimizer, fit_schedule
from verticals.finance.config import FinanceConfig
from verticals.finance.infer import FinanceData, load_dataset, predict


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float, alpha: float) -> torch.Tensor:
    """Binary focal loss, mean over the batch."""
    bce = nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p = torch.sigmoid(logits)
    p_t = p * target + (1 - p) * (1 - target)
    a_t = alpha * target + (1 - alpha) * (1 - target)
    return (a_t * (1 - p_t).pow(gamma) * bce).mean()


def fit(
    model: nn.Module,
    data: FinanceData,
    cfg: FinanceConfig,
    *,
    epochs: int | None = None,
    proximal: Proximal | None = None,
    extra_loss: ExtraLoss | None = None,
    lr: float | None = None,
) -> dict[str, float]:
    """Train `model` in place; returns {"loss", "epochs", "seconds", "positives"}."""
    start = time.perf_counter()
    device = select_device()
    seq, nbr, txn = data.tensors()
    y = torch.from_numpy(data.label).float()
    if float(model.stats_ready) == 0.0 and len(y):
        model.set_stats(seq, nbr, txn)
    model.to(device).train()
    positives = float(y.sum())
    pos_weight = torch.tensor(min(max((len(y) - positives) / max(positives, 1.0), 1.0), cfg.max_pos_weight))
    optimizer = fit_optimizer(
        model, lambda: torch.optim.AdamW(model.parameters(), lr=lr or cfg.lr, weight_decay=cfg.weight_decay)
    )
    n_epochs = cfg.epochs if epochs is None else epochs
    steps_total = max(n_epochs * -(-len(y) // cfg.batch_size), 1)
    # cosine decay to 5 % of the base rate: large steps early, fine ranking late (AUPRC is a ranking metric)
    schedule = fit_schedule(
        model,
        lambda total: torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(step / total, 1.0)))
        ),
        steps_total,
    )
    last = float("nan")
    for _ in track(range(n_epochs), "finance: training epochs", total=n_epochs):
        order = torch.randperm(len(y))
        total, steps = 0.0, 0
        for i in range(0, len(y), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            inputs = (seq[idx].to(device), nbr[idx].to(device), txn[idx].to(device))
            target = y[idx].to(device)
            logits = model(*inputs)
            if cfg.loss == "focal":
                loss = focal_loss(logits, target, cfg.focal_gamma, cfg.focal_alpha)
            else:
                loss = nn.functional.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight.to(device))
            loss = loss + added_loss(model, inputs, logits, proximal, extra_loss)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach())
            steps += 1
        last = total / max(steps, 1)
    model.eval().cpu()
    return {"loss": last, "epochs": float(n_epochs), "seconds": time.perf_counter() - start, "positives": positives}


def _export_bytes(model: nn.Module, cfg: FinanceConfig) -> dict[str, bytes]:
    """model.onnx for the model directory (the serving and batch-scoring path)."""
    import tempfile

    from common.export import export_onnx
    from common.registry import get_task

    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, get_task("finance").example_input(cfg), Path(tmp) / "model.onnx")
        return {"model.onnx": path.read_bytes()}


def train_model(data: str | Path, out: str | Path, cfg: FinanceConfig, *, seed: int = 0) -> dict[str, float]:
    """`fedsite finance train`: fit on every valid row of `data`, save a model directory (with ONNX)."""
    from common.device import seed_everything
    from common.registry import get_task
    from verticals.finance.evaluate import fraud_metrics

    set_threads(cfg.threads or None)
    seed_everything(seed)
    dataset = load_dataset(data, cfg)
    if dataset.label.sum() == 0:
        from common.errors import UserError

        raise UserError(f"{data}: no row has is_fraud=1; cannot learn what fraud looks like")
    cfg = config.replace(cfg, feature_spec=dataset.spec.to_json())  # saved: every later use encodes alike
    for note in dataset.spec.notes():
        log(note)
    model = get_task("finance").build_model(cfg)
    fit_metrics = fit(model, dataset, cfg)
    train_metrics = fraud_metrics(dataset.label, predict(model, dataset.features))
    metrics = {"train_loss": fit_metrics["loss"], **{f"train_{k}": v for k, v in train_metrics.items()}}
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
        },
        extra_files=_export_bytes(model, cfg),
    )
    log(f"saved {out} ({len(dataset)} rows, {len(dataset.rejects)} rejected, {fit_metrics['seconds']:.0f}s)")
    return metrics


def update_model(model_dir: str | Path, data: str | Path, out: str | Path, *, seed: int = 0) -> dict[str, dict]:
    """`fedsite finance update`: fine-tune on newly labelled rows; metrics before and after.

    The new rows are split by time: the model is fine-tuned on the earlier 80 % and both models are
    measured on the later 20 % (a held-out period, so "after" is not measured on what it just saw).
    """
    from common.device import seed_everything
    from verticals.finance.evaluate import fraud_metrics

    loaded = runs.load_model(model_dir, expect="finance")
    cfg = loaded.cfg
    set_threads(cfg.threads or None)
    seed_everything(seed)
    dataset = load_dataset(data, cfg)
    cut = dataset.ts.min() + 0.8 * (dataset.ts.max() - dataset.ts.min())
    tune, hold = dataset.take(np.flatnonzero(dataset.ts < cut)), dataset.take(np.flatnonzero(dataset.ts >= cut))
    if len(tune) == 0 or len(hold) == 0:
        from common.errors import UserError

        raise UserError(f"{data}: need rows spread over time to fine-tune and hold out (found {len(dataset)})")
    before = fraud_metrics(hold.label, predict(loaded.model, hold.features), hold.typology)
    fit(loaded.model, tune, cfg, epochs=cfg.finetune_epochs, lr=cfg.finetune_lr)
    after = fraud_metrics(hold.label, predict(loaded.model, hold.features), hold.typology)
    runs.save_model(
        out,
        "finance",
        loaded.model,
        cfg,
        metrics={f"holdout_{k}": v for k, v in after.items()},
        seed=seed,
        data_fingerprint=runs.fingerprint(data),
        extra={"updated_from": str(model_dir), "rows_rejected": len(dataset.rejects)},
        extra_files=_export_bytes(loaded.model, cfg),
    )
    return {"before": before, "after": after, "rows_tuned": len(tune), "rows_held_out": len(hold)}
