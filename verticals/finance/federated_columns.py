"""Banks with different extra columns in one federation: agree on the shared ones, or refuse.

Why: FedAvg averages one network, so every site must feed it the same input columns encoded the
same way; but bank A exports a device type that bank B does not have. Before the first round the
hub asks every site to describe its columns (`describe_columns`, run AT the site on its own
training period) and agrees on a spec from the descriptions alone (`agree_columns`): with
`policy = "shared"` the federation trains on the extra columns every site has (the encodings
fitted on all sites' counts, so a category seen at one bank is known at all), and the report names
each site's dropped columns; with `policy = "refuse"` a site lacking a column another site has
stops the federation with a reason.

What crosses site boundaries is what a shared data dictionary would hold, never a row: each
column's name, type, row count, the number of values present, a numeric column's min and max, and
a text column's distinct count and the counts of its `SHARED_CATEGORIES` most frequent values (no
value at all of a column that looks like an identifier or free text at that site).
"""

from __future__ import annotations

from pathlib import Path

from common import config
from common.errors import UserError
from data_adapters.importers import mapping_for
from data_adapters.transactions import read_transactions
from verticals.finance.columns import MAX_CATEGORIES, ColumnSpec, spec_from_summaries, summarise_columns
from verticals.finance.config import FinanceConfig

SHARED_CATEGORIES = 2 * MAX_CATEGORIES  # a site's most frequent values sent: room for the pooled top 250


def describe_columns(cfg: FinanceConfig, source: Path) -> dict[str, object]:
    """This site's column summary, from its training period only (runs at the site; no row leaves).

    {"rows": training rows, "columns": {name: summary}} (columns.summarise_columns).
    """
    txns, _ = read_transactions(source, require_label=False, mapping=mapping_for(cfg.format, cfg.columns))
    early = txns.ts < txns.ts.min() + cfg.train_fraction * (txns.ts.max() - txns.ts.min())
    extras = {name: values[early] for name, values in txns.extras.items()}
    summary = summarise_columns(
        extras, cfg.features_numeric, cfg.features_categorical, cfg.features_ignore, top=SHARED_CATEGORIES
    )
    return {"rows": int(early.sum()), "columns": summary}


def agree_columns(
    cfg: FinanceConfig, descriptions: dict[str, dict], policy: str = "shared"
) -> tuple[FinanceConfig, dict[str, object]]:
    """`cfg` with the federation's `feature_spec`, and a report {"shared", "ignored", "dropped": {site: [...]}}.

    `descriptions`: site name -> its `describe_columns`. A config that already has a feature_spec
    (a model trained before) is kept; every site must then have its columns (UserError naming the site).
    """
    if policy not in ("shared", "refuse"):
        raise UserError(f"federation columns policy '{policy}': expected shared or refuse")
    names = {site: set(d["columns"]) for site, d in descriptions.items()}
    every = set().union(*names.values())
    if cfg.feature_spec:
        used = ColumnSpec.from_json(cfg.feature_spec).used
        for site, cols in names.items():
            if missing := [c for c in used if c not in cols]:
                raise UserError(f"{site}: lacks the model's trained column(s) {', '.join(missing)}")
        return cfg, {"shared": used, "dropped": {s: sorted(c - set(used)) for s, c in names.items()}}
    lacking = {site: sorted(every - cols) for site, cols in names.items() if every - cols}
    if lacking and policy == "refuse":
        site, cols = next(iter(lacking.items()))
        raise UserError(f"{site}: lacks column(s) {', '.join(cols)} that other sites have (policy refuse)")
    summaries = [descriptions[site]["columns"] for site in sorted(descriptions)]
    spec = spec_from_summaries(summaries, cfg.features_numeric, cfg.features_categorical, cfg.features_ignore)
    shared = set.intersection(*names.values()) if names else set()
    dropped = {site: sorted(cols - shared) for site, cols in names.items()}
    report = {"shared": spec.used, "ignored": spec.ignored, "dropped": dropped}
    return config.replace(cfg, feature_spec=spec.to_json()), report
