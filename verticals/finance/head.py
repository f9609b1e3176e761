"""The boosted-tree head: gradient boosting over fedsite's causal features, the bank's columns and the network.

Why a tree head on top of the TCN + GNN: on real card-fraud exports most of the signal is in the
bank's own columns (counters, risk scores, categories with hundreds of values, missing-value
patterns), where boosted trees are the strongest known learner and a small MLP is not; the
sequence and graph signal is what the network adds. So the head sees, per transaction,
- fedsite's causal per-account state (`baselines.graph_features`: both endpoints' counters,
  velocities, fan-in / fan-out, and the mean / max over their recent edges and counterparties,
  i.e. two hops of the multigraph), the same numbers in batch scoring and in the HTTP service;
- the bank's columns (`columns.tree_matrix`: numbers with NaN, native categorical splits);
- the analyst's aggregates of both accounts over their whole history (`aggregates.py`: 1 h / 1 d /
  7 d counts, amount z-score, distinct counterparties, ...), when `head_aggregates`: fedsite's
  state remembers each account's last `history` events, which a busy payee fills in minutes;
- the network's logit, when `head_uses_network` (see `fit_head` for how it is kept honest).
With `head_bag = K` > 1 the head is K such tree models (each its own seed: its own early-stopping
rows and, above `head_max_rows`, its own sample of legitimate rows) whose logits are averaged: one
fit's AUPRC moves by ~0.01 with the random rows it holds out, and the average keeps less of that.
HistGradientBoosting (scikit-learn) handles NaN and categories natively and needs no new
dependency. The fitted head is saved beside the network as `head.pkl`.
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

from common.progress import log, stage
from verticals.finance.aggregates import NAMES as ANALYST_NAMES
from verticals.finance.baselines import graph_features
from verticals.finance.columns import ColumnSpec
from verticals.finance.features import F_TXN, FeatureBatch, StoredFeatures
from verticals.finance.label_history import NAMES as LABEL_NAMES

HEAD_FILE = "head.pkl"
BAG_SEED_STRIDE = 100_003  # member i of a bag fits with seed + i * stride: bags of seeds 0, 1, 2 share no member


def member_seed(seed: int, i: int) -> int:
    """The seed of member `i` of a bag fitted with `seed` (member 0: `seed`, i.e. the single head)."""
    return seed + i * BAG_SEED_STRIDE


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


HEAD_CHUNK = 16_384  # rows whose windows are gathered at once: at 65,536, 0.7 GB of temporaries


def head_inputs(
    features: FeatureBatch | StoredFeatures,
    tree: np.ndarray,
    network: np.ndarray | None,
    chunk: int = HEAD_CHUNK,
) -> np.ndarray:
    """[causal state | bank columns | network logit] per transaction (float32 values; NaN = missing).

    Built `chunk` rows at a time into one array (the windows are gathered a chunk at a time).
    Float32 also for the fit: HistGradientBoosting with categorical columns copies its input
    through a ColumnTransformer and then splits it, so float64 rows here (tried) only added a
    third float64-sized array at its peak.
    """
    out = None
    for i in range(0, len(features), chunk):
        s = slice(i, i + chunk)
        part = features.rows(s)
        own = FeatureBatch(part.seq, part.nbr, part.txn[:, :F_TXN])  # the columns come in as `tree`
        cols = [graph_features(own), tree[s]]
        if network is not None:
            cols.append(logit(network[s])[:, None])
        block = np.concatenate(cols, 1).astype(np.float32)
        if out is None:
            out = np.empty((len(features), block.shape[1]), np.float32)
        out[s] = block
    return out if out is not None else np.zeros((0, 0), np.float32)


@dataclass
class TreeHead:
    """A fitted head: the classifier and what it reads (`aggregates`: its `tree` input ends with
    the analyst's aggregates; False for heads saved before they existed). `bag`: the further
    classifiers of a `head_bag` > 1 head (empty for one head and for heads saved before bags; the
    class default stands in for the attribute an older pickle lacks)."""

    model: HistGradientBoostingClassifier
    uses_network: bool
    aggregates: bool = False
    bag: tuple[HistGradientBoostingClassifier, ...] = ()
    labels: bool = False  # its `tree` input ends with the known-fraud history (label_history.py)

    @property
    def members(self) -> tuple[HistGradientBoostingClassifier, ...]:
        return (self.model, *self.bag)

    def first(self, k: int) -> TreeHead:
        """The head made of the first `k` members (k = 1: the head `head_bag = 1` fits with this seed)."""
        return dataclasses.replace(self, bag=tuple(self.bag[: max(k, 1) - 1]))

    def predict(
        self,
        features: FeatureBatch | StoredFeatures,
        tree: np.ndarray,
        network: np.ndarray | None,
        chunk: int = HEAD_CHUNK,
    ) -> np.ndarray:
        """Probabilities, `chunk` rows at a time (the inputs of a million rows would take a gigabyte)."""
        out = [np.zeros(0, np.float32)]
        for i in range(0, len(features), chunk):
            s = slice(i, i + chunk)
            net = network[s] if network is not None and self.uses_network else None
            out.append(self.probabilities(head_inputs(features.rows(s), tree[s], net)))
        return np.concatenate(out)

    def probabilities(
        self, inputs: np.ndarray, members: list[Callable[[np.ndarray], np.ndarray]] | None = None
    ) -> np.ndarray:
        """Fraud probabilities from `head_inputs` rows (the batch scorer builds those on another thread).

        A bag averages its members' logits (a member's confident score counts as much as in one head).
        `members`: each member's `predict_proba(x)[:, 1]` as the caller computes it (the batch
        scorer's tree_predict.FastTrees, same numbers); default: scikit-learn's."""
        predict = members or [lambda x, m=m: m.predict_proba(x)[:, 1] for m in self.members]
        if not self.bag:
            return predict[0](inputs).astype(np.float32)
        z = np.mean([logit(p(inputs)) for p in predict], axis=0)
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


def blend(head: np.ndarray, network: np.ndarray, weight: float) -> np.ndarray:
    """sigmoid((1 - w) * logit(head) + w * logit(network)): the final score."""
    z = (1.0 - weight) * logit(head) + weight * logit(network)
    return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


def choose_weight(label: np.ndarray, head: np.ndarray, network: np.ndarray) -> tuple[float, dict[str, float]]:
    """The network weight (0, 0.1, ..., 1) with the best AUPRC on held-out rows, and the AUPRC of each.

    Shrunk towards the even blend (0.5): with P fraud rows held out, a weight must beat it by more
    than |w - 0.5| / sqrt(P) of AUPRC. Why: on small exports the held-out period has a dozen fraud
    rows, and the raw best weight was noise (0.9 chosen for a network 0.15 AUPRC worse than the
    trees on the test period); with hundreds of fraud rows the penalty is a few hundredths at most.
    """
    from sklearn.metrics import average_precision_score

    if not 0 < label.sum() < len(label):
        return 0.5, {}
    weights = [round(w, 1) for w in np.linspace(0, 1, 11)]
    scores = {w: float(average_precision_score(label, blend(head, network, w))) for w in weights}
    penalty = 1.0 / np.sqrt(label.sum())
    best = max(scores, key=lambda w: scores[w] - penalty * abs(w - 0.5))
    return best, scores


def load_head(directory: str | Path) -> TreeHead | None:
    """The head of a model directory, or None (a model trained with head = "none")."""
    path = Path(directory) / HEAD_FILE
    if not path.is_file():
        return None
    return pickle.loads(path.read_bytes())  # our own model directory, written by fit_head


def fit_head(
    features: FeatureBatch,
    tree: np.ndarray,
    label: np.ndarray,
    spec: ColumnSpec,
    network: np.ndarray | None,
    *,
    seed: int = 0,
    max_iter: int = 400,
    max_rows: int = 0,
    bag: int = 1,
) -> TreeHead:
    """Boosted trees with early stopping on a random 10 % of rows; `bag` of them, one after another.

    `network`: the network's probabilities for these rows, or None for a head without it. They
    must be out-of-sample for the rows (see api.train_model): a network's scores on its own
    training rows are better than its scores on new rows, and a head fitted on them would trust
    the network more than it deserves.
    `max_rows` > 0 (config `head_max_rows`): above it, every fraud row is kept and legitimate rows
    are sampled uniformly over the period, each weighted by 1 / its sampling rate, so the trees'
    probabilities stay calibrated (the blend reads their logits) at a fraction of the fitting time.
    `bag` > 1 (config `head_bag`): member i fits with `member_seed(seed, i)` (its own early-stopping
    rows and its own sample); member 0 is the head `bag = 1` gives. Members are fitted in turn and
    each one's inputs freed before the next (the memory of one fit, `bag` times the time).
    """
    if bag < 1:
        raise ValueError(f"fit_head: bag = {bag}; need at least one tree model")
    n_analyst = tree.shape[1] - len(spec.tree_categorical)  # aggregates and/or label history after the columns
    a, h = len(ANALYST_NAMES), len(LABEL_NAMES)
    if n_analyst not in (0, a, h, a + h):
        raise ValueError(f"fit_head: {tree.shape[1]} tree columns for a spec of {len(spec.tree_categorical)}")
    sampled = 0 < max_rows < len(label)
    shared = None if sampled or bag == 1 else head_inputs(features, tree, network)  # one matrix for every member
    members = []
    for i in range(bag):
        rows = _member_rows(features, tree, label, network, seed=member_seed(seed, i), max_rows=max_rows)
        x = shared if shared is not None else head_inputs(*rows[:2], rows[3])
        y, weight = rows[2], rows[4]
        del rows  # the sampled rows' copies (0.2 GB at 150,000 rows): x holds what the fit needs
        n_state = x.shape[1] - tree.shape[1] - (network is not None)
        categorical = np.r_[
            np.zeros(n_state, bool), spec.tree_categorical, np.zeros(n_analyst + int(network is not None), bool)
        ]
        what = f"member {i + 1} of {bag} of " if bag > 1 else ""
        with stage(f"finance: fitting {what}the boosted-tree head on {len(y)} rows"):
            members.append(boosted_trees(categorical, member_seed(seed, i), max_iter).fit(x, y, sample_weight=weight))
        del x
    aggregates, labels = n_analyst in (a, a + h), n_analyst in (h, a + h)
    return TreeHead(members[0], network is not None, aggregates, tuple(members[1:]), labels)


def _member_rows(
    features: FeatureBatch,
    tree: np.ndarray,
    label: np.ndarray,
    network: np.ndarray | None,
    *,
    seed: int,
    max_rows: int,
) -> tuple:
    """(features, tree, label, network, sample weight or None): all rows, or above `max_rows`
    every fraud row and a uniform sample of the others drawn with `seed` (see fit_head)."""
    if not 0 < max_rows < len(label):
        return features, tree, label, network, None
    fraud = label == 1
    rate = max(max_rows - int(fraud.sum()), 1) / max(int((~fraud).sum()), 1)
    keep = fraud | (np.random.default_rng(seed).random(len(label)) < rate)
    index = np.flatnonzero(keep)
    log(
        f"finance: head_max_rows = {max_rows}: the tree head fits all {int(fraud.sum())} fraud rows and "
        f"{len(index) - int(fraud.sum())} of {int((~fraud).sum())} legitimate rows (weight {1 / rate:.2f})"
    )
    sub = label[index]
    return (
        features.take(index),
        tree[index],
        sub,
        None if network is None else network[index],
        np.where(sub == 1, 1.0, 1.0 / rate),
    )


def boosted_trees(categorical: np.ndarray, seed: int = 0, max_iter: int = 400) -> HistGradientBoostingClassifier:
    """The one tree configuration, for the head and for the benchmark's peer (same trees, other inputs).

    Weighted fits bin their columns with weighted_binning (same thresholds, one sort per column)."""
    from verticals.finance.weighted_binning import install

    install()
    return HistGradientBoostingClassifier(
        max_iter=max_iter,
        learning_rate=0.06,
        max_leaf_nodes=63,
        l2_regularization=1.0,
        early_stopping=True,
        validation_fraction=0.1,
        categorical_features=categorical if categorical.any() else None,
        random_state=seed,
    )
