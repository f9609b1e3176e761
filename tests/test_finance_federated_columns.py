"""Federation across banks whose exports have different extra columns: shared columns, or a refusal."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from common.config import replace
from common.errors import UserError
from data_adapters.synth.transactions import write
from verticals.finance.columns import ColumnSpec
from verticals.finance.config import FinanceConfig
from verticals.finance.federated_columns import agree_columns
from verticals.finance.task import FinanceTask


def _bank(tmp_path, site: int, columns: list[str]):
    """Site `site`'s synthetic export with the given extra columns (random, reproducible)."""
    base = write(tmp_path / f"synth{site}", 60, 6, seed=site, site=site, n_sites=3)
    rng = np.random.default_rng(site)
    rows = list(csv.DictReader(open(base, newline="")))
    for row in rows:
        for name in columns:
            row[name] = str(rng.choice(["a", "b", "c"])) if name.startswith("cat") else f"{rng.normal():.3f}"
    path = tmp_path / f"bank{site}.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_sites_federate_on_shared_columns_with_a_report(tmp_path):
    sources = {
        "site-0": _bank(tmp_path, 0, ["score", "cat_device", "velocity"]),
        "site-1": _bank(tmp_path, 1, ["score", "cat_device"]),
        "site-2": _bank(tmp_path, 2, ["score", "cat_device", "cat_country"]),
    }
    cfg, report = agree_columns(FinanceTask().tiny_config(), sources)
    spec = ColumnSpec.from_json(cfg.feature_spec)
    assert sorted(spec.used) == ["cat_device", "score"]
    assert report["dropped"] == {"site-0": ["velocity"], "site-1": [], "site-2": ["cat_country"]}
    # every site's data now has the same width, so one network (and FedAvg) fits them all
    task = FinanceTask()
    widths = {task.load_data(cfg, path, "train").features.txn.shape[1] for path in sources.values()}
    model = task.build_model(cfg)
    assert widths == {model.txn_mean.shape[0]}
    # a model trained earlier keeps its columns; a site lacking one of them is named
    with pytest.raises(UserError, match="site-1: lacks the model's trained column\\(s\\) velocity"):
        trained = replace(cfg, feature_spec=ColumnSpec(numeric=["score", "velocity"]).to_json())
        agree_columns(trained, sources)


def test_refuse_policy_names_the_site_and_column(tmp_path):
    sources = {"site-0": _bank(tmp_path, 0, ["score", "velocity"]), "site-1": _bank(tmp_path, 1, ["score"])}
    with pytest.raises(UserError, match="site-1: lacks column\\(s\\) velocity that other sites have"):
        agree_columns(FinanceConfig(), sources, policy="refuse")
    cfg, report = agree_columns(FinanceConfig(), {"site-0": sources["site-0"]}, policy="refuse")
    assert report["dropped"] == {"site-0": []} and ColumnSpec.from_json(cfg.feature_spec).used == ["score", "velocity"]
