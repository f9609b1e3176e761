"""weighted_binning: the tree head's weighted fits bin columns as scikit-learn does, in one sort.

The replacement must give scikit-learn's own thresholds bit for bit (else a head fitted here would
differ from one fitted without it), on the columns a bank export has: ties, missing values,
zero weights, few distinct values, a constant column; and a weighted fit must predict the same.
"""

from __future__ import annotations

import numpy as np
from sklearn.ensemble._hist_gradient_boosting import binning

from verticals.finance import weighted_binning
from verticals.finance.head import boosted_trees


def _columns(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    return [
        np.round(rng.lognormal(size=n), 1),
        np.where(rng.random(n) < 0.3, np.nan, rng.normal(size=n)),
        rng.integers(0, 7, n).astype(np.float64),
        np.full(n, 2.5),
        rng.normal(size=n) * 1e30,
    ]


def test_weighted_thresholds_are_scikit_learns_and_the_fit_predicts_the_same(monkeypatch):
    assert weighted_binning.install()  # the pinned scikit-learn passes the self-check
    original = weighted_binning._STATE["original"]
    assert binning._find_binning_thresholds is weighted_binning.thresholds
    rng = np.random.default_rng(7)
    n = 20_000
    weight = np.where(rng.random(n) < 0.05, 1.0, 7.5)
    weight[rng.random(n) < 0.01] = 0.0
    for column in _columns(n, rng):
        for w in (weight, None):
            for bins in (255, 16):
                np.testing.assert_array_equal(weighted_binning.thresholds(column, bins, w), original(column, bins, w))
    x = np.stack(_columns(4000, rng) + [rng.integers(0, 5, 4000).astype(np.float64)], 1).astype(np.float32)
    y = (x[:, 0] + rng.normal(size=4000) > 2.0).astype(int)
    w = np.where(y == 1, 1.0, 3.0)
    categorical = np.r_[np.zeros(5, bool), True]
    ours = boosted_trees(categorical, 0, 8).fit(x, y, sample_weight=w)
    monkeypatch.setattr(binning, "_find_binning_thresholds", original)
    theirs = boosted_trees(categorical, 0, 8).fit(x, y, sample_weight=w)
    np.testing.assert_array_equal(ours.predict_proba(x), theirs.predict_proba(x))
    assert ours.n_iter_ == theirs.n_iter_ > 1
