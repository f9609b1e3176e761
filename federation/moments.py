"""Pooled aggregation of the data statistics a model carries (BatchNorm running moments, fitted input stats).

FedAvg averages every float in the state_dict, which is right for weights and for a mean, but not
for a spread: the average of the sites' variances misses the spread *between* the sites' means. With
sites as different as a metal, a fabric and a wood line, that part dominates: the averaged input std
is much smaller than the pooled data's, so a site whose mean is far from the others sees inputs
several "standard deviations" out after normalisation, which a centrally trained model (whose std
is the pooled one) never does. Here a (mean, spread) pair is combined as the statistics of the pooled
data would be, with the same example weights FedAvg uses:

    mean   = sum_k w_k m_k
    var    = sum_k w_k (v_k + m_k^2) - mean^2        (law of total variance)

Only these per-channel moments of the sites' data are combined; they already travel in the update
(they are state_dict buffers), so nothing new leaves a site.

The Task declares the pairs: `Task.federated_moments(model) -> [(mean_name, spread_name, "var" |
"std"), ...]` (common/task.py), by default BatchNorm's (`running_mean`, `running_var`); the
manufacturing and finance Tasks add the input statistics their models fit on their first round.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from common.task import batchnorm_moments
from federation.codec import Layout


@dataclass(frozen=True)
class MomentPair:
    """Where one (mean, spread) pair sits in the flat vector, and whether the spread is a var or a std."""

    mean: slice
    spread: slice
    kind: str  # "var" or "std"


def moment_names(model: nn.Module, task: Any = None) -> list[tuple[str, str, str]]:
    """(mean_name, spread_name, kind) state_dict entries holding statistics of the data."""
    return task.federated_moments(model) if task is not None else batchnorm_moments(model)


def moment_pairs(model: nn.Module, layout: Layout, task: Any = None) -> list[MomentPair]:
    """The pairs of `moment_names` as slices of the flat vector of `layout`."""
    offsets = layout.slices
    return [
        MomentPair(offsets[m], offsets[s], kind)
        for m, s, kind in moment_names(model, task)
        if m in offsets and s in offsets
    ]


def pooled_update(
    update: np.ndarray, global_vec: np.ndarray, updates: np.ndarray, weights: np.ndarray, pairs: list[MomentPair]
) -> np.ndarray:
    """`update` (the weighted mean of `updates`) with every spread replaced by the pooled one.

    The sites' values are `global_vec + updates[k]`; means are left as FedAvg made them (the weighted
    mean is the pooled mean).
    """
    if not pairs:
        return update
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum() if w.sum() > 0 else np.full(len(w), 1.0 / len(w))
    out = update.copy()
    for p in pairs:
        means = global_vec[p.mean].astype(np.float64) + updates[:, p.mean].astype(np.float64)
        spreads = global_vec[p.spread].astype(np.float64) + updates[:, p.spread].astype(np.float64)
        variances = np.maximum(spreads, 0.0) ** 2 if p.kind == "std" else np.maximum(spreads, 0.0)
        mean = w @ means
        var = np.maximum(w @ (variances + means**2) - mean**2, 0.0)
        pooled = np.sqrt(var) if p.kind == "std" else var
        out[p.spread] = (pooled - global_vec[p.spread]).astype(np.float32)
    return out


def keep_statistics_pooled(new: np.ndarray, pooled: np.ndarray, pairs: list[MomentPair]) -> np.ndarray:
    """`new` (after a server optimizer step) with the data statistics taken as aggregated.

    Server momentum or Adam steps are for weights; a statistic of the sites' data is what it is, and a
    momentum carried over from earlier rounds would push, say, a variance past its pooled value.
    """
    if not pairs:
        return new
    out = new.copy()
    for p in pairs:
        out[p.mean] = pooled[p.mean]
        out[p.spread] = pooled[p.spread]
    return out
