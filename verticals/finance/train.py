"""Training: imbalance-aware loss over featurised transactions, with the Task's `added_loss` hook.

Why focal (or weighted) loss: fraud is ~1-2 % of rows, so plain BCE spends its effort on the easy
negatives. Focal loss (Lin et al., 2017) down-weights them; `loss = "weighted"` uses BCE with a
capped positive weight instead. Normalisation statistics are fitted once, on the first data the model
sees, and then live in buffers (federated sites start from the global ones).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn

from common.device import select_device
from common.progress import log, track
from common.task import FitContext, added_loss, fit_optimizer, fit_schedule
from verticals.finance.config import FinanceConfig
from verticals.finance.data import FinanceData

STATS_ROWS = 20_000  # rows the normalisation statistics are fitted on (all of them below this)


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
    context: FitContext | None = None,
    lr: float | None = None,
) -> dict[str, float]:
    """Train `model` in place; returns {"loss", "epochs", "seconds", "positives", "rows_seen"}.

    `cfg.network_rows_per_epoch` caps the rows of an epoch (a fresh random sample each epoch): on a
    bank's month of 1M rows, 8 full epochs would take the 2-core budget several times over, while
    the network's quality comes from seeing many varied rows, not every row 8 times. Torch runs on
    one intra-op thread unless `threads` / FEDSITE_THREADS say otherwise (common.device.small_op_threads).
    """
    from common.device import small_op_threads

    with small_op_threads(cfg.threads):
        return _fit(model, data, cfg, epochs=epochs, context=context, lr=lr)


def _fit(
    model: nn.Module,
    data: FinanceData,
    cfg: FinanceConfig,
    *,
    epochs: int | None,
    context: FitContext | None,
    lr: float | None,
) -> dict[str, float]:
    start = time.perf_counter()
    device = select_device()
    y = torch.from_numpy(data.label).float()
    if float(model.stats_ready) == 0.0 and len(y):
        sample = np.arange(len(y))
        if len(y) > STATS_ROWS:  # a random sample: the mean and spread of 20k rows' 640k events are plenty
            sample = np.sort(np.random.default_rng(0).choice(len(y), STATS_ROWS, replace=False))
        model.set_stats(*data.tensors(sample))
    model.to(device).train()
    positives = float(y.sum())
    pos_weight = torch.tensor(min(max((len(y) - positives) / max(positives, 1.0), 1.0), cfg.max_pos_weight))
    optimizer = fit_optimizer(
        context, lambda: torch.optim.AdamW(model.parameters(), lr=lr or cfg.lr, weight_decay=cfg.weight_decay)
    )
    n_epochs = cfg.epochs if epochs is None else epochs
    per_epoch = len(y) if cfg.network_rows_per_epoch <= 0 else min(len(y), cfg.network_rows_per_epoch)
    if per_epoch < len(y):
        log(
            f"finance: network_rows_per_epoch = {cfg.network_rows_per_epoch}: each of the {n_epochs} epochs "
            f"trains on a fresh random {per_epoch} of the {len(y)} rows"
        )
    steps_total = max(n_epochs * -(-per_epoch // cfg.batch_size), 1)
    # cosine decay to 5 % of the base rate: large steps early, fine ranking late (AUPRC is a ranking metric)
    schedule = fit_schedule(
        context,
        lambda total: torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(step / total, 1.0)))
        ),
        steps_total,
    )
    last = float("nan")
    for _ in track(range(n_epochs), "finance: training epochs", total=n_epochs):
        order = torch.randperm(len(y))[:per_epoch]
        total, steps = 0.0, 0
        for i in range(0, per_epoch, cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            inputs = tuple(t.to(device) for t in data.tensors(idx.numpy()))
            target = y[idx].to(device)
            logits = model(*inputs)
            if cfg.loss == "focal":
                loss = focal_loss(logits, target, cfg.focal_gamma, cfg.focal_alpha)
            else:
                loss = nn.functional.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight.to(device))
            loss = loss + added_loss(model, inputs, logits, context)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach())
            steps += 1
        last = total / max(steps, 1)
    model.eval().cpu()
    seconds = time.perf_counter() - start
    return {
        "loss": last,
        "epochs": float(n_epochs),
        "seconds": seconds,
        "positives": positives,
        "rows_seen": float(n_epochs * per_epoch),
    }
