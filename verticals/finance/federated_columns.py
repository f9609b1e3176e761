"""Banks with different extra columns in one federation: agree on the shared ones, or refuse.

Why: FedAvg averages one network, so every site must feed it the same input columns encoded the
same way; but bank A exports a device type that bank B does not have. Before the first round the
sites' columns are compared: with `policy = "shared"` the federation trains on the extra columns
every site has (the encodings fitted on all sites' training periods, so a category seen at one
bank is known at all), and the report names each site's dropped columns; with `policy = "refuse"`
a site lacking a column another site has stops the federation with a reason. What crosses site
boundaries is each column's name, type and category values (the same a shared data dictionary
would hold), never a row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common import config
from common.errors import UserError
from data_adapters.importers import mapping_for
from data_adapters.transactions import read_transactions
from verticals.finance.columns import as_text, infer_spec
from verticals.finance.config import FinanceConfig


def agree_columns(
    cfg: FinanceConfig, sources: dict[str, Path], policy: str = "shared"
) -> tuple[FinanceConfig, dict[str, object]]:
    """`cfg` with the federation's `feature_spec`, and a report {"shared", "dropped": {site: [...]}}.

    `sources`: site name -> its transactions CSV. A config that already has a feature_spec (a model
    trained before) is kept; every site must then have its columns (UserError naming the site).
    """
    if policy not in ("shared", "refuse"):
        raise UserError(f"federation columns policy '{policy}': expected shared or refuse")
    mapping = mapping_for(cfg.format, cfg.columns)
    extras: dict[str, dict[str, np.ndarray]] = {}
    for site, path in sources.items():
        txns, _ = read_transactions(path, require_label=False, mapping=mapping)
        early = txns.ts < txns.ts.min() + cfg.train_fraction * (txns.ts.max() - txns.ts.min())
        extras[site] = {name: values[early] for name, values in txns.extras.items()}
    names = {site: set(cols) for site, cols in extras.items()}
    every = set().union(*names.values())
    shared = sorted(set.intersection(*names.values())) if names else []
    dropped = {site: sorted(cols - set(shared)) for site, cols in names.items()}
    lacking = {site: sorted(every - cols) for site, cols in names.items() if every - cols}
    if cfg.feature_spec:
        from verticals.finance.columns import ColumnSpec

        used = ColumnSpec.from_json(cfg.feature_spec).used
        for site, cols in names.items():
            missing = [c for c in used if c not in cols]
            if missing:
                raise UserError(f"{site}: lacks the model's trained column(s) {', '.join(missing)}")
        return cfg, {"shared": used, "dropped": {s: sorted(c - set(used)) for s, c in names.items()}}
    if lacking and policy == "refuse":
        site, cols = next(iter(lacking.items()))
        raise UserError(f"{site}: lacks column(s) {', '.join(cols)} that other sites have (policy refuse)")
    pooled = {}
    for name in shared:
        parts = [extras[site][name] for site in extras]
        if any(p.dtype == object for p in parts):
            parts = [p if p.dtype == object else as_text(p) for p in parts]
        pooled[name] = np.concatenate(parts)
    spec = infer_spec(pooled, cfg.features_numeric, cfg.features_categorical, cfg.features_ignore)
    report = {"shared": spec.used, "ignored": spec.ignored, "dropped": dropped}
    return config.replace(cfg, feature_spec=spec.to_json()), report
