"""Weighted bin thresholds for scikit-learn's HistGradientBoosting in one call per feature, not 254.

Why: the tree head fits a weighted sample above `head_max_rows` (head.fit_head: every fraud row,
legitimate rows at a rate r and weight 1/r). With sample weights and fewer rows than its binning
subsample (200,000), scikit-learn 1.9's `_find_binning_thresholds` calls `_weighted_percentile`
once per percentile, 254 times per feature, each call sorting the column again: about 0.9 s a
feature at 150,000 rows, so 45 of the 85 s of each head fit on a bank's month went to choosing bin
edges (found with cProfile: joblib waiting on the binning threads). `_weighted_percentile` takes a
vector of percentiles (since 1.8) and gives the same numbers in one sort (checked below, and at
install time on a column with missing values, zero weights and ties).

`install()` replaces `sklearn.ensemble._hist_gradient_boosting.binning._find_binning_thresholds`
with `thresholds` (the same steps as scikit-learn's, BSD-3-Clause, with that one call vectorised)
only when a self-check on this scikit-learn gives identical thresholds; otherwise scikit-learn's
own function stays. Unweighted fits take scikit-learn's function unchanged.
"""

from __future__ import annotations

import numpy as np

_STATE: dict[str, object] = {}


def thresholds(col_data: np.ndarray, max_bins: int, sample_weight: np.ndarray | None = None) -> np.ndarray:
    """scikit-learn's `_find_binning_thresholds`, the weighted percentiles computed in one call
    (a weighted column's steps copied; an unweighted one goes to scikit-learn's function)."""
    from numpy.lib.stride_tricks import sliding_window_view
    from sklearn.ensemble._hist_gradient_boosting.binning import ALMOST_INF, X_DTYPE
    from sklearn.utils.stats import _weighted_percentile

    if sample_weight is None:  # unweighted: scikit-learn's own function (set by `install`)
        return _STATE["original"](col_data, max_bins, None)
    missing = np.isnan(col_data)
    if missing.any():
        col_data, sample_weight = col_data[~missing], sample_weight[~missing]
    nonzero = sample_weight != 0
    col_data, sample_weight = col_data[nonzero], sample_weight[nonzero]
    order = np.argsort(col_data)
    col_data, sample_weight = col_data[order], sample_weight[order]
    distinct = np.unique(col_data).astype(X_DTYPE)
    if len(distinct) == 1:
        return np.asarray([])
    if len(distinct) <= max_bins:
        found = sliding_window_view(distinct, 2).mean(axis=1)
    else:
        percentiles = np.linspace(0, 100, num=max_bins + 1)[1:-1]
        found = np.asarray(_weighted_percentile(col_data, sample_weight, percentiles, average=True))
    unique = np.unique(found)
    if unique.shape[0] != found.shape[0]:
        found = unique
    np.clip(found, a_min=None, a_max=ALMOST_INF, out=found)
    return found


def _same_as_original(original) -> bool:
    """Whether `thresholds` gives scikit-learn's thresholds on weighted columns of every kind."""
    rng = np.random.default_rng(0)
    n = 3000
    weight = np.where(rng.random(n) < 0.2, 1.0, 4.83)
    weight[:50] = 0.0
    columns = [
        np.round(rng.lognormal(size=n), 2),  # ties and more distinct values than bins
        np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n)),  # missing values
        rng.integers(0, 40, n).astype(np.float64),  # fewer distinct values than bins
    ]
    try:
        return all(np.array_equal(thresholds(c, 255, weight), original(c, 255, weight)) for c in columns)
    except Exception:  # a scikit-learn whose internals moved: keep its own function
        return False


def install() -> bool:
    """Use `thresholds` in scikit-learn's binning if it matches there (once per process); True if in use."""
    if "installed" in _STATE:
        return bool(_STATE["installed"])
    try:
        from sklearn.ensemble._hist_gradient_boosting import binning
    except ImportError:
        _STATE["installed"] = False
        return False
    original = binning._find_binning_thresholds
    _STATE["original"] = original
    ok = _same_as_original(original)
    if ok:
        binning._find_binning_thresholds = thresholds
    _STATE["installed"] = ok
    return ok
