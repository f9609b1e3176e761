"""The streaming scorer behind `score`, `serve` and evaluation.

Why one scorer: batch and online scores must agree, and both must be causal. `StreamingScorer` keeps
the per-account state (features.AccountState) and scores whatever it is given, one transaction (the
HTTP service) or a whole file in chunks (`score`), advancing the state as it goes. The neural part
runs in ONNX Runtime when the model directory holds `model.onnx` (about as fast as torch at batch
4,096 and ~10x faster for a single request), else in torch.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import nn

from verticals.finance.aggregates import AnalystState
from verticals.finance.columns import ColumnSpec, category_codes, event_matrix, nn_matrix, tree_matrix
from verticals.finance.config import FinanceConfig
from verticals.finance.features import AccountState, FeatureBatch, StoredFeatures, featurise
from verticals.finance.label_history import LabelTable
from verticals.finance.tree_predict import FastTrees

ORT_MAX_BATCH = 4096  # the exported model's dynamic batch axis is bounded (common.export)
WORKERS = 2  # threads running the network and the trees in `score` (a site server has 2 cores or more)
# event-store rows `score` makes room for at once (170 MB): a compaction every few chunks cost 5 % of featurising
STORE_RESERVE = 1 << 20
ORT_BATCH = 256  # rows per ONNX Runtime call: 10 % less CPU per row than 1,024 and 20 % less than 4,096 (cache)


def predict(model: nn.Module, features: FeatureBatch | StoredFeatures, batch: int = ORT_MAX_BATCH) -> np.ndarray:
    """Fraud probabilities from a torch module (or a module wrapping ONNX Runtime)."""
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(features), batch):
            part = features.rows(slice(i, i + batch))
            logits = model(torch.from_numpy(part.seq), torch.from_numpy(part.nbr), torch.from_numpy(part.txn))
            out.append(torch.sigmoid(logits).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


class OnnxFraudModel(nn.Module):
    """An nn.Module face on an ONNX Runtime session, so evaluate() treats it like the torch model."""

    def __init__(self, onnx_path: str | Path, threads: int | None = None) -> None:
        super().__init__()
        from common.export import session

        self.session = session(onnx_path, threads=threads)
        self.names = [i.name for i in self.session.get_inputs()]

    def forward(self, seq: torch.Tensor, nbr: torch.Tensor, txn: torch.Tensor) -> torch.Tensor:
        feeds = {n: t.numpy() for n, t in zip(self.names, (seq, nbr, txn))}
        return torch.from_numpy(self.session.run(None, feeds)[0])

    def probabilities(self, features: FeatureBatch, batch: int = ORT_BATCH) -> np.ndarray:
        """Fraud probabilities straight from numpy (no torch tensors: a single request saves ~0.1 ms)."""
        out = []
        for i in range(0, len(features), batch):
            s = slice(i, i + batch)
            feeds = dict(zip(self.names, (features.seq[s], features.nbr[s], features.txn[s])))
            logits = self.session.run(None, feeds)[0].astype(np.float64)  # float64: exp(-x) stays finite
            out.append((1.0 / (1.0 + np.exp(-logits))).astype(np.float32))
        return np.concatenate(out) if out else np.zeros(0, np.float32)


class StreamingScorer:
    """Causal scorer with per-account memory. Call `score` with transactions in processing order.

    `model` may be None when `onnx_path` exists (see `load_scorer`: no torch model is built then).
    """

    def __init__(
        self,
        model: nn.Module | None,
        cfg: FinanceConfig,
        onnx_path: str | Path | None = None,
        head=None,
        labels: LabelTable | None = None,
    ) -> None:
        self.cfg = cfg
        self.head = head  # head.TreeHead or None: the boosted trees blended with the network
        self.trees = [FastTrees(m) for m in head.members] if head is not None else []  # checked predictors
        self.spec = ColumnSpec.from_json(cfg.feature_spec)
        self.state = AccountState(cfg.history, event_dim=self.spec.event_dim)
        # the analyst's aggregates, when the head reads them: their own state, advanced with `state`
        self.analyst = AnalystState() if getattr(head, "aggregates", False) else None
        # the known-fraud history, when the head reads it: the training labels' table, never the scored rows'
        self.labels = labels if getattr(head, "labels", False) else None
        if getattr(head, "labels", False) and labels is None:
            raise ValueError("StreamingScorer: the head reads the known-fraud history; pass its LabelTable")
        self.backend = "torch"
        self.model = model.eval() if model is not None else None
        if onnx_path is not None and Path(onnx_path).is_file():
            # one intra-op thread: the pipeline in `score` already keeps the second core busy with
            # featurising, and a 2-thread ORT pool measured 1.5x slower per CPU-second (spin-waits)
            self.model = OnnxFraudModel(onnx_path, threads=1)
            self.backend = "onnxruntime"
        elif self.model is None:
            raise ValueError("StreamingScorer needs a torch model or an existing ONNX file")

    def _column_matrices(self, extras: dict[str, np.ndarray] | None, n: int) -> tuple[np.ndarray | None, np.ndarray]:
        """The extra columns as the network reads them (None when the model uses none) and as the tree
        head reads them ((n, 0) without a head or columns): built once per call, sliced per chunk."""
        extras = extras or {}
        with_head = self.head is not None and self.spec.used
        codes = category_codes(self.spec, extras) if with_head and self.spec.categorical else None
        extra = nn_matrix(self.spec, extras, n, codes=codes) if self.spec.used else None
        return extra, tree_matrix(self.spec, extras, n, codes=codes) if with_head else np.zeros((n, 0), np.float32)

    def _featurise(
        self, s: slice, ts, src, dst, amount, channel, extra: np.ndarray | None, tree: np.ndarray
    ) -> tuple[FeatureBatch, np.ndarray]:
        """The chunk's network inputs and the trees' matrix (columns, then the analyst's aggregates)."""
        events = event_matrix(self.spec, extra[s]) if extra is not None else None
        features = featurise(self.state, ts[s], src[s], dst[s], amount[s], channel[s], events)
        if extra is not None:
            features.txn = np.concatenate([features.txn, extra[s]], 1)
        parts = [tree[s]]
        if self.analyst is not None:
            parts.append(self.analyst.advance(ts[s], src[s], dst[s], amount[s]))
        if self.labels is not None:
            parts.append(self.labels.scoring(ts[s], src[s], dst[s]))
        return features, parts[0] if len(parts) == 1 else np.concatenate(parts, 1)

    def _predict(self, features: FeatureBatch | StoredFeatures, tree: np.ndarray | None = None) -> np.ndarray:
        """The model directory's score for these rows: the network, blended with the tree head.

        Runs on `score`'s worker threads: ONNX Runtime and the trees' walk release the GIL.
        """
        if isinstance(self.model, OnnxFraudModel):
            network = self.model.probabilities(features)
        else:
            network = predict(self.model, features)
        if self.head is None:
            return network
        from verticals.finance.head import blend, head_inputs

        tree = tree if tree is not None else np.zeros((len(features), 0), np.float32)
        if self.head.uses_network:
            trees = self.head.predict(features, tree, None)
        else:
            trees = self.head.probabilities(head_inputs(features, tree, None), [t.probabilities for t in self.trees])
        return blend(trees, network, self.cfg.network_weight)

    def score(
        self,
        ts: np.ndarray,
        src: np.ndarray,
        dst: np.ndarray,
        amount: np.ndarray,
        channel: np.ndarray,
        extras: dict[str, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Probabilities for these transactions, each seeing only the ones before it; advances state.

        Chunks are pipelined over the cores of a small site server: this thread encodes each
        chunk's columns and featurises it (sequential: it advances the state), and `WORKERS`
        threads build the tree head's inputs and run the network and the trees on the chunks
        before it (ONNX Runtime, scikit-learn's tree walk and numpy's large operations release the
        GIL). With one worker (before), the network and the trees were the longer half: 5.1 CPU-s
        against 3.6 for 200,000 rows of 100 columns; two share them over both cores, and this
        thread's work fills the gaps. `extras`: the model's extra columns
        (columns.ColumnSpec.used), raw as read.
        """
        starts = range(0, len(ts), self.cfg.chunk_rows)
        if len(starts) <= 1:
            extra, tree = self._column_matrices(extras, len(ts))
            features, trees = self._featurise(slice(None), ts, src, dst, amount, channel, extra, tree)
            return self._predict(features, trees) if len(ts) else np.zeros(0, np.float32)
        used = {name: (extras or {})[name] for name in self.spec.used if name in (extras or {})}
        self.state.reserve(min(2 * len(ts), STORE_RESERVE))
        out, pending = [], deque()
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            for i in starts:
                s = slice(i, i + self.cfg.chunk_rows)
                extra, tree = self._column_matrices({k: v[s] for k, v in used.items()}, len(ts[s]))
                whole = slice(None)
                features, trees = self._featurise(whole, ts[s], src[s], dst[s], amount[s], channel[s], extra, tree)
                pending.append(pool.submit(self._predict, features, trees))
                if len(pending) > WORKERS:  # bounded: at most WORKERS + 1 chunks' features alive
                    out.append(pending.popleft().result())
            out.extend(job.result() for job in pending)
        return np.concatenate(out)

    def score_explained(
        self,
        ts: np.ndarray,
        src: np.ndarray,
        dst: np.ndarray,
        amount: np.ndarray,
        channel: np.ndarray,
        extras: dict[str, np.ndarray] | None = None,
        baseline: np.ndarray | None = None,
    ) -> tuple[np.ndarray, list[list[tuple[str, float]]]]:
        """`score` (same probabilities, same state advance) plus each row's top reasons (explain.py)."""
        from verticals.finance.explain import reasons

        extra, tree = self._column_matrices(extras, len(ts))
        probs, why = [np.zeros(0, np.float32)], []
        for i in range(0, len(ts), self.cfg.chunk_rows):
            s = slice(i, i + self.cfg.chunk_rows)
            features, trees = self._featurise(s, ts, src, dst, amount, channel, extra, tree)
            p, r = reasons(self._predict, features, trees, self.spec, baseline)
            probs.append(p)
            why.extend(r)
        return np.concatenate(probs), why


def load_scorer(model_dir: str | Path, cfg_threads: int | None = None) -> StreamingScorer:
    """A scorer for a finance model directory, built from `model.onnx` alone when it exists.

    Why not `runs.load_model` first: rebuilding the torch module imports torch-geometric (and with it
    torch._dynamo), about 3 s of a 7 s `score` of 140k rows, for a model ONNX Runtime then replaces.
    Without `model.onnx` the torch model is loaded as before.
    """
    from common import config, runs
    from common.errors import UserError

    root = Path(model_dir)
    meta = runs.read_metadata(root)
    if meta.get("vertical") != "finance":
        raise UserError(f"{root}: holds a '{meta.get('vertical')}' model, expected a 'finance' model")
    onnx = root / "model.onnx"
    if onnx.is_file():
        try:
            cfg = config.from_toml(FinanceConfig, (root / "config.toml").read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"{root}: not a model directory (no config.toml)") from None
        model = None
    else:
        loaded = runs.load_model(root, expect="finance")
        cfg, model = loaded.cfg, loaded.model
    if cfg_threads is not None:
        cfg = config.replace(cfg, threads=cfg_threads)
    from verticals.finance.head import load_head

    head = load_head(root)
    labels = LabelTable.load(root) if getattr(head, "labels", False) else None
    return StreamingScorer(model, cfg, onnx, head, labels)
