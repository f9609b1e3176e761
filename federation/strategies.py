"""Server-side aggregation of site updates: FedAvg, FedProx, FedAvgM, FedAdam and the robust rules.

Every rule works on a matrix of flat updates (one row per site that answered) and returns one
update that the server adds to the global model. FedProx differs from FedAvg only on the sites
(the proximal term in their loss), FedAdam and FedAvgM only in how the averaged update is applied
(a server Adam step, Reddi et al. 2021; a server momentum, Hsu et al. 2019). The robust rules bound
what one broken or malicious site can do: coordinate-wise median and trimmed mean (Yin et al.
2018) and Krum (Blanchard et al. 2017). The server's optimizer state is a plain dict of arrays so
it can be checkpointed with the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from federation.settings import FederationSettings

STRATEGIES = ("fedavg", "fedprox", "fedavgm", "fedadam", "median", "trimmed-mean", "krum")
MEAN_BASED = ("fedavg", "fedprox", "fedavgm", "fedadam")  # rules whose aggregate is the example-weighted mean


@dataclass(frozen=True)
class StrategyParams:
    """Knobs of the aggregation rules. The ones a run can set default to FederationSettings' (the one
    source of every federation default); Adam's betas and tau follow Reddi et al. 2021 and Flower."""

    server_lr: float = FederationSettings.server_lr  # FedAdam's step
    server_momentum: float = FederationSettings.server_momentum  # FedAvgM's (its step is 1, Hsu et al. 2019)
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    trim_fraction: float = FederationSettings.trim_fraction
    krum_byzantine: int = FederationSettings.krum_byzantine

    @classmethod
    def of(cls, settings: FederationSettings) -> StrategyParams:
        """The aggregation knobs of a run."""
        names = ("server_lr", "server_momentum", "trim_fraction", "krum_byzantine")
        return cls(**{name: getattr(settings, name) for name in names})


def weighted_mean(updates: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """FedAvg: the mean of the updates weighted by each site's number of training examples."""
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum() if w.sum() > 0 else np.full(len(w), 1.0 / len(w))
    return (updates.astype(np.float64) * w[:, None]).sum(axis=0).astype(np.float32)


def coordinate_median(updates: np.ndarray) -> np.ndarray:
    """Coordinate-wise median: robust to fewer than half of the sites sending garbage."""
    return np.median(updates, axis=0).astype(np.float32)


def trimmed_mean(updates: np.ndarray, fraction: float) -> np.ndarray:
    """Drop the `fraction` largest and smallest values per coordinate, average the rest."""
    n = len(updates)
    k = min(int(np.floor(fraction * n)), (n - 1) // 2)
    ordered = np.sort(updates, axis=0)
    return ordered[k : n - k].mean(axis=0).astype(np.float32)


def krum_index(updates: np.ndarray, byzantine: int) -> int:
    """Index of the update whose n - f - 2 nearest neighbours are closest (Krum's choice)."""
    n = len(updates)
    if n <= 2:
        return 0
    neighbours = max(1, n - byzantine - 2)
    sq = (updates.astype(np.float64) ** 2).sum(axis=1)
    dist = np.maximum(sq[:, None] + sq[None, :] - 2.0 * updates.astype(np.float64) @ updates.T.astype(np.float64), 0)
    scores = [np.sort(np.delete(dist[i], i))[:neighbours].sum() for i in range(n)]
    return int(np.argmin(scores))


def aggregate(strategy: str, updates: np.ndarray, weights: np.ndarray, params: StrategyParams) -> np.ndarray:
    """Combine the sites' updates into one according to `strategy`."""
    if strategy in MEAN_BASED:
        return weighted_mean(updates, weights)
    if strategy == "median":
        return coordinate_median(updates)
    if strategy == "trimmed-mean":
        return trimmed_mean(updates, params.trim_fraction)
    if strategy == "krum":
        return updates[krum_index(updates, params.krum_byzantine)].astype(np.float32)
    raise ValueError(f"unknown strategy {strategy!r} (known: {', '.join(STRATEGIES)})")


def apply_update(
    strategy: str, global_vec: np.ndarray, update: np.ndarray, state: dict[str, np.ndarray], params: StrategyParams
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """New global vector (and server optimizer state) after adding the aggregated update.

    FedAvgM (Hsu et al. 2019) keeps a server momentum of the averaged updates: where the sites agree
    round after round, the global model moves further than one round's average would take it, which
    is what a federation of a few rounds needs to keep up with one long centralized schedule.
    """
    if strategy == "fedavgm":
        m = params.server_momentum * state.get("m", np.zeros_like(update)) + update
        return (global_vec + m).astype(np.float32), {"m": m.astype(np.float32)}
    if strategy != "fedadam":
        return (global_vec + update).astype(np.float32), state
    m = state.get("m", np.zeros_like(update))
    v = state.get("v", np.zeros_like(update))
    m = params.beta1 * m + (1 - params.beta1) * update
    v = params.beta2 * v + (1 - params.beta2) * update**2
    new = global_vec + params.server_lr * m / (np.sqrt(v) + params.tau)
    return new.astype(np.float32), {"m": m.astype(np.float32), "v": v.astype(np.float32)}
