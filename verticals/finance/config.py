"""Every default of the finance vertical in one frozen dataclass, and its named presets.

`PRESETS` holds the three sizes every vertical names alike: "tiny" (tests and the federated demo:
seconds per fit), "small" (`--quick`: a useful model in about a minute on 2 cores) and "default"
(the dataclass defaults). common.config resolves overrides on top.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class FinanceConfig:
    """Defaults sized for 2 CPU cores: training on 100k transactions takes minutes, not hours.

    `history` is how many recent events of the payer and of the payee the TCN reads and the GNN
    passes messages from; `arch` selects the fused model or one of its ablations.

    `columns` / `format` say how to read a bank's export (data_adapters.column_mapping, importers);
    they are saved with the model, so `score`, `serve` and `update` read files the same way.
    `features_numeric` / `features_categorical` / `features_ignore` override the inferred type of
    the export's extra columns (TOML: `[finance.features] numeric = [...]`).
    `head = "gbdt"` adds boosted trees over the causal features and those columns (head.py), blended
    with the network's logit at `network_weight`; with `head_aggregates` the trees also read the
    analyst's whole-history aggregates of payer and payee (aggregates.py), computed as a stream
    (off by default: no AUPRC gain measured on real or synthetic data, and 92 bytes a row).
    `head_bag = K` > 1 makes the head K tree models with their own seeds, logits averaged: K times
    the head's fitting and scoring time (off by default; see the finance README for what it buys).
    `label_history` adds, for payer, payee and pair, what the labels of earlier rows say (counts of
    labelled and fraud rows, a smoothed rate, time since the last known fraud): from the training
    labels kept in the model directory when scoring, from labels older than a random delay of up to
    `label_delay_days` in training (label_history.py; site-local: off in federation). On by default
    since 2026-12-04: level on synthetic (a)/(b), ahead of the analyst's peer on real card data; at 1M
    rows it costs memory (peak 4.18 GB) and half the batch scoring speed (finance README).

    Caps that keep a bank's month (1M rows x 100 columns) within 15 minutes and 4 GB on 2 cores,
    each logged when it applies and inactive on smaller data: `network_rows_per_epoch` (each epoch
    a fresh random sample), `head_max_rows` (the tree head keeps every fraud row and a weighted
    sample of the others), `train_metrics_rows` (the train_* metrics on a random sample).
    """

    arch: Literal["fused", "tcn", "gnn"] = "fused"
    history: int = 16
    tcn_channels: int = 16
    tcn_levels: int = 2
    tcn_kernel: int = 3
    attention: Literal["scse", "cbam", "none"] = "scse"
    gnn_hidden: int = 16
    head_hidden: int = 48
    dropout: float = 0.1
    loss: Literal["focal", "weighted"] = "focal"
    focal_gamma: float = 2.0
    focal_alpha: float = 0.5
    max_pos_weight: float = 20.0
    epochs: int = 8
    network_rows_per_epoch: int = 50_000  # each epoch trains on a fresh random sample of this many rows; 0: all
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-5
    finetune_epochs: int = 2
    finetune_lr: float = 5e-4
    train_fraction: float = 0.7
    chunk_rows: int = 4096
    seed: int = 0
    threads: int = 0
    columns: str = ""
    format: Literal["contract", "amlworld", "paysim", "elliptic"] = "contract"
    features_numeric: tuple[str, ...] = ()
    features_categorical: tuple[str, ...] = ()
    features_ignore: tuple[str, ...] = ()
    head: Literal["gbdt", "none"] = "gbdt"
    head_aggregates: bool = False  # the head also reads the analyst's aggregates (aggregates.py); off: no gain measured
    network_weight: float = -1.0  # weight of the network's logit beside the head's; < 0: chosen at training
    head_bag: int = 1  # tree models in the head, logits averaged (head.fit_head); 1: one. README: "A bag of tree heads"
    head_max_rows: int = 150_000  # above it the head fits all fraud rows + a weighted sample of the rest; 0: all
    train_metrics_rows: int = 200_000  # train_* metrics on a random sample of this many rows when larger; 0: all
    head_validation: float = 0.15  # the later share of the training rows that chooses network_weight
    federation_columns: Literal["shared", "refuse"] = "shared"  # banks with different extra columns
    label_history: bool = True  # the head reads known-fraud history (label_history.py); README: "Known-fraud history"
    label_delay_days: float = 14.0  # training rows see labels older than U[0, this] days: the scored period's gap
    event_columns: int = 0  # bank-column components each history event / neighbour edge carries (columns.py)
    feature_spec: str = ""  # fitted by training (verticals.finance.columns.ColumnSpec as JSON); empty: infer


PRESETS: dict[str, FinanceConfig] = {
    "tiny": FinanceConfig(
        history=8, tcn_channels=8, tcn_levels=2, gnn_hidden=16, head_hidden=32, epochs=2, batch_size=128
    ),
    "small": FinanceConfig(epochs=4),
    "default": FinanceConfig(),
}

# Federated recipes (federation/recipes.py; `fedsite federate --recipe NAME`, the demo, the benchmark):
# the tiny model, 4 rounds x 2 local epochs; "quick": one round of one epoch on tiny data.
RECIPES: dict[str, dict] = {
    "federated": {"preset": "tiny", "scale": "small", "rounds": 4, "local_epochs": 2},
    "quick": {"preset": "tiny", "scale": "tiny", "rounds": 1, "local_epochs": 1, "cross_site": False},
}
