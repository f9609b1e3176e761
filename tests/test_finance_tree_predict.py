"""The tree head's fast predictor gives scikit-learn's probabilities bit for bit, or steps aside."""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

from verticals.finance.tree_predict import FastTrees


def _fitted(seed: int = 0) -> tuple[HistGradientBoostingClassifier, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = 3000
    numbers = rng.normal(size=(n, 3)).astype(np.float32)
    numbers[rng.random(n) < 0.1, 1] = np.nan  # missing values take the trees' NaN branch
    codes = rng.integers(0, 12, size=(n, 2)).astype(np.float32)  # category codes as the head stores them
    # the category columns sit between numeric ones, as in head_inputs (state | columns)
    x = np.concatenate([numbers[:, :1], codes[:, :1], numbers[:, 1:], codes[:, 1:]], 1)
    label = ((codes[:, 0] % 3 == 0) ^ (np.nan_to_num(numbers[:, 1]) > 0.5) ^ (rng.random(n) < 0.1)).astype(int)
    categorical = np.array([False, True, False, False, True])
    model = HistGradientBoostingClassifier(max_iter=30, categorical_features=categorical, random_state=seed)
    return model.fit(x, label), x


def test_fast_trees_equal_predict_proba_bit_for_bit():
    model, x = _fitted()
    probe = x.copy()
    probe[:50, 1] = 40.0  # a category code never seen in training (unseen -> NaN, like the encoder)
    probe[50:100, 4] = np.nan  # a missing category
    probe[100:150, 0] = 1e30  # a number beyond every threshold
    trees = FastTrees(model)
    assert trees.plan is not None
    first = trees.probabilities(probe[:700])  # the checked call
    assert trees.checked and trees.plan is not None
    later = trees.probabilities(probe)  # the fast path, in blocks
    expected = model.predict_proba(probe)[:, 1]
    assert np.array_equal(first, expected[:700])
    assert np.array_equal(later, expected)
    assert len(np.unique(later)) > 20


def test_fast_trees_fall_back_when_their_mapping_is_wrong():
    model, x = _fitted(1)
    trees = FastTrees(model)
    trees.plan[4][0] = trees.plan[4][0] + 1.0  # every known category of one column shifted: wrong answers
    expected = model.predict_proba(x)[:, 1]
    assert np.array_equal(trees.probabilities(x[:500]), expected[:500])  # the check returns sklearn's numbers
    assert trees.plan is None  # ... and turns the fast path off for good
    assert np.array_equal(trees.probabilities(x), expected)


def test_a_model_without_category_columns_uses_sklearn():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 3))
    model = HistGradientBoostingClassifier(max_iter=5).fit(x, (x[:, 0] > 0).astype(int))
    trees = FastTrees(model)
    assert trees.plan is None
    assert np.array_equal(trees.probabilities(x), model.predict_proba(x)[:, 1])
