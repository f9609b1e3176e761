"""Client-side differential privacy: clip each site's update, add Gaussian noise, account (epsilon, delta).

Each site clips the L2 norm of its model update to `clip` and adds N(0, (noise * clip)^2) to every
coordinate before anything leaves the site, so the hub only ever sees a privatised update (local
DP at the level of a site's whole dataset: the strongest unit a hospital cares about). Every site
takes part in every round (sampling rate 1), so the privacy loss over R rounds is R compositions of
the Gaussian mechanism with noise multiplier `noise`. We account it with Renyi DP (Mironov 2017):
RDP_alpha = R * alpha / (2 * noise^2), converted with the tight bound of Canonne et al. (2020),
eps = RDP_alpha + log((alpha - 1) / alpha) - (log(delta) + log(alpha)) / (alpha - 1), minimised
over alpha. Noise is drawn from a generator seeded per (seed, round, site), so `--seed` makes a
private run repeatable too.
"""

from __future__ import annotations

import math

import numpy as np

_ALPHAS = np.concatenate([np.linspace(1.01, 10, 400), np.linspace(10.5, 256, 500)])


def clip_update(vector: np.ndarray, clip: float) -> tuple[np.ndarray, float]:
    """Scale `vector` so its L2 norm is at most `clip`; return it and the norm before clipping."""
    norm = float(np.linalg.norm(vector))
    if clip <= 0 or norm <= clip:
        return vector, norm
    return (vector * (clip / norm)).astype(np.float32), norm


def add_noise(vector: np.ndarray, clip: float, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Add N(0, (noise * clip)^2) to every coordinate (nothing when noise or clip is 0)."""
    if noise <= 0 or clip <= 0:
        return vector
    return (vector + rng.normal(0.0, noise * clip, size=vector.shape)).astype(np.float32)


def privatize(vector: np.ndarray, clip: float, noise: float, seed: int) -> tuple[np.ndarray, float]:
    """Clip then noise one site's update; return it and the pre-clip norm (a scalar metric)."""
    clipped, norm = clip_update(vector, clip)
    return add_noise(clipped, clip, noise, np.random.default_rng(seed)), norm


def gaussian_epsilon(noise: float, rounds: int, delta: float) -> float:
    """(epsilon, delta)-DP of `rounds` Gaussian mechanisms with multiplier `noise` (full participation)."""
    if noise <= 0:
        return math.inf
    if rounds <= 0:
        return 0.0
    rdp = rounds * _ALPHAS / (2.0 * noise**2)
    eps = rdp + np.log((_ALPHAS - 1) / _ALPHAS) - (math.log(delta) + np.log(_ALPHAS)) / (_ALPHAS - 1)
    return float(max(0.0, eps.min()))


def privacy_report(clip: float, noise: float, rounds: int, delta: float) -> dict[str, float | None]:
    """The `privacy` block of history.json: nulls when DP is off."""
    if clip <= 0 or noise <= 0:
        return {"epsilon": None, "delta": None}
    return {"epsilon": gaussian_epsilon(noise, rounds, delta), "delta": float(delta)}
