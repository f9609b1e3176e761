"""Federation across banks whose exports have different extra columns: shared columns, or a refusal.

The agreement runs on what each bank describes of its own columns (names, types, counts), through
the same hub-site messages a real deployment uses; no row crosses.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from common.config import replace, resolve, to_toml
from common.errors import UserError
from data_adapters.synth.transactions import write
from data_adapters.transactions import read_transactions
from verticals.finance.columns import ColumnSpec, infer_spec
from verticals.finance.config import FinanceConfig
from verticals.finance.federated_columns import agree_columns, describe_columns
from verticals.finance.task import FinanceTask


def _agree(cfg, sources, policy="shared"):
    """agree_columns on each bank's own description, as the hub does."""
    return agree_columns(cfg, {site: describe_columns(cfg, path) for site, path in sources.items()}, policy)


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
    cfg, report = _agree(FinanceTask().tiny_config(), sources)
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
        _agree(trained, sources)


def test_refuse_policy_names_the_site_and_column(tmp_path):
    sources = {"site-0": _bank(tmp_path, 0, ["score", "velocity"]), "site-1": _bank(tmp_path, 1, ["score"])}
    with pytest.raises(UserError, match="site-1: lacks column\\(s\\) velocity that other sites have"):
        _agree(FinanceConfig(), sources, policy="refuse")
    cfg, report = _agree(FinanceConfig(), {"site-0": sources["site-0"]}, policy="refuse")
    assert report["dropped"] == {"site-0": []} and ColumnSpec.from_json(cfg.feature_spec).used == ["score", "velocity"]


def test_the_agreed_spec_is_the_pooled_banks_spec_and_no_row_is_described(tmp_path):
    """From the summaries alone the hub fits what pooling the banks' training rows would give."""
    sources = {f"site-{k}": _bank(tmp_path, k, ["score", "cat_device", "cat_country"]) for k in range(3)}
    cfg = FinanceConfig()
    descriptions = {site: describe_columns(cfg, path) for site, path in sources.items()}
    agreed, _ = agree_columns(cfg, descriptions)
    pooled: dict[str, list] = {}
    for path in sources.values():
        txns, _ = read_transactions(path, require_label=False)
        early = txns.ts < txns.ts.min() + cfg.train_fraction * (txns.ts.max() - txns.ts.min())
        for name, values in txns.extras.items():
            pooled.setdefault(name, []).append(values[early])
    expected = infer_spec({name: np.concatenate(parts) for name, parts in pooled.items()})
    assert agreed.feature_spec == expected.to_json()
    # what a bank tells the hub: counts, a numeric range and category values, never a row's ids
    described = descriptions["site-0"]["columns"]
    assert set(described["score"]) == {"kind", "n", "present", "min", "max"}
    assert set(described["cat_device"]["counts"]) <= {"a", "b", "c"}
    text = json.dumps(descriptions["site-0"])
    for row in list(csv.DictReader(open(sources["site-0"], newline="")))[:200]:
        assert all(f'"{row[key]}"' not in text for key in ("txn_id", "src_account", "dst_account"))


def test_a_federation_agrees_through_the_sites_own_descriptions(tmp_path):
    """Two banks, one lacking a column: the in-process federation (the hub-site messages a real
    SuperLink carries) trains on the shared columns and reports what each bank dropped."""
    from common import registry
    from federation.client_app import app as client_app
    from federation.grid import InProcessGrid
    from federation.server_app import run_federation
    from federation.settings import FederationSettings

    for k, columns in enumerate([["score", "cat_device", "velocity"], ["score", "cat_device"]]):
        site = tmp_path / "data" / f"site-{k}"
        site.mkdir(parents=True)
        _bank(tmp_path, k, columns).rename(site / "transactions.csv")
    cfg = replace(FinanceTask().tiny_config(), epochs=1, threads=1)
    settings = FederationSettings(
        vertical="finance",
        task_module=registry.VERTICALS["finance"],
        config_toml=to_toml(cfg),
        sites=2,
        rounds=1,
        data_root=str(tmp_path / "data"),
        out_dir=str(tmp_path / "run"),
        cross_site=False,
    )
    history = run_federation(InProcessGrid(client_app, 2), settings)
    report = json.loads((tmp_path / "run" / "columns.json").read_text())
    assert report["dropped"] == {"site-0": ["velocity"], "site-1": []}
    assert sorted(report["shared"]) == ["cat_device", "score"]
    assert all(entry["status"] == "ok" for entry in history["rounds"][0]["sites"].values())
    saved = resolve(FinanceConfig, tmp_path / "run" / "global_model" / "config.toml", section="finance")
    assert sorted(ColumnSpec.from_json(saved.feature_spec).used) == ["cat_device", "score"]
