"""A bank's extra columns: typed, learned from, recorded, and applied alike by score and serve."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from finance_tiny import batch_scores

from common.cli import main
from common.config import resolve
from common.errors import UserError
from common.runs import read_metadata
from data_adapters import arrow_csv
from data_adapters.synth.transactions import write
from verticals.finance.columns import ColumnSpec, infer_spec, nn_matrix, tree_matrix
from verticals.finance.config import FinanceConfig
from verticals.finance.evaluate import fraud_metrics
from verticals.finance.serve import RequestError, load_service

TINY = ["--set", "history=8", "--set", "tcn_channels=8", "--set", "gnn_hidden=16", "--set", "head_hidden=32"]
TINY += ["--set", "epochs=3", "--set", "threads=1"]
EXTRA = ["mcc", "risk_score", "device_id", "note"]


def _with_extras(src_csv, out_csv, seed: int = 0, drop: str = "") -> list[dict]:
    """The synthetic export plus a bank's columns: mcc carries most of the fraud signal, risk_score
    some (missing in a fifth of the rows), device_id is an identifier and note is free text."""
    rng = np.random.default_rng(seed)
    rows = list(csv.DictReader(open(src_csv, newline="")))
    for i, row in enumerate(rows):
        fraud = row["is_fraud"] == "1"
        row["mcc"] = (
            "7995"
            if fraud and rng.random() < 0.9
            else str(rng.choice(["5411", "5812", "4111", "7995"], p=[0.5, 0.3, 0.19, 0.01]))
        )
        row["risk_score"] = "" if rng.random() < 0.2 else f"{rng.normal(2.0 if fraud else 0.0):.3f}"
        row["device_id"] = f"dev-{i}-{rng.integers(1e9)}"
        row["note"] = f"payment ref {rng.integers(1e12)} for order {i}"
        if drop:
            del row[drop]
    with open(out_csv, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("columns")
    base = write(root / "synth", 150, 10, seed=1)
    data = root / "bank.csv"
    _with_extras(base, data)
    # merchant category codes are numbers, but they name categories: the config says so
    cmd = ["finance", "train", "--data", str(data), "--out", str(root / "model"), *TINY]
    assert main([*cmd, "--set", "features.categorical=mcc"]) == 0
    return root, base, data, root / "model"


def test_types_are_inferred_and_recorded(trained):
    root, _, _, model = trained
    meta = read_metadata(model)
    assert meta["feature_columns"] == ["risk_score", "mcc"]
    assert set(meta["ignored_columns"]) == {"device_id", "note"}
    assert "identifier or free text" in meta["ignored_columns"]["device_id"]
    cfg = resolve(FinanceConfig, model / "config.toml", section="finance")
    spec = ColumnSpec.from_json(cfg.feature_spec)
    assert spec.missing_flags == ["risk_score"] and spec.categorical["mcc"][0] == "5411"


def test_extra_columns_carry_signal_into_scores(trained, tmp_path, monkeypatch):
    _, _, data, model = trained
    out = tmp_path / "scores.csv"
    assert main(["finance", "score", "--data", str(data), "--model", str(model), "--out", str(out)]) == 0
    # the scores of the Arrow reading (issue 15 item 4) are those of csv.reader's, to the byte
    monkeypatch.setattr(arrow_csv, "trouble", lambda run, ends: "quote")
    by_rows = tmp_path / "rows" / "scores.csv"
    assert main(["finance", "score", "--data", str(data), "--model", str(model), "--out", str(by_rows)]) == 0
    assert by_rows.read_bytes() == out.read_bytes()
    scores = {r["txn_id"]: float(r["fraud_probability"]) for r in csv.DictReader(open(out))}
    rows = list(csv.DictReader(open(data)))
    p = np.array([scores[r["txn_id"]] for r in rows])
    casino = np.array([r["mcc"] == "7995" for r in rows])
    label = np.array([r["is_fraud"] == "1" for r in rows])
    # among legitimate rows, the fraud-heavy merchant category scores higher: the model reads mcc
    assert np.median(p[casino & ~label]) > 3 * np.median(p[~casino & ~label])
    assert fraud_metrics(label.astype(int), p)["auprc"] > 0.5


def test_unseen_categories_and_missing_values_score(trained, tmp_path):
    root, base, _, model = trained
    fresh = tmp_path / "fresh.csv"
    rows = _with_extras(write(tmp_path / "synth", 60, 5, seed=7), fresh, seed=3)
    text = fresh.read_text().replace(",5812,", ",9999,")  # a merchant category never seen in training
    fresh.write_text(text)
    out = tmp_path / "scores.csv"
    assert main(["finance", "score", "--data", str(fresh), "--model", str(model), "--out", str(out)]) == 0
    got = list(csv.DictReader(open(out)))
    assert len(got) == len(rows) and all(np.isfinite(float(r["fraud_probability"])) for r in got)


def test_a_file_without_a_trained_column_is_refused(trained, tmp_path, capsys):
    _, base, _, model = trained
    lacking = tmp_path / "lacking.csv"
    _with_extras(base, lacking, drop="mcc")
    code = main(["finance", "score", "--data", str(lacking), "--model", str(model), "--out", str(tmp_path / "s.csv")])
    assert code == 2
    assert "missing trained column(s) mcc" in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists()


def test_service_applies_the_same_columns(trained, tmp_path):
    _, _, data, model = trained
    rows = list(csv.DictReader(open(data)))[:40]
    expected = batch_scores(rows, model, tmp_path)
    service = load_service(model)
    lacking = {k: v for k, v in rows[0].items() if k != "risk_score"}
    with pytest.raises(RequestError, match="missing trained column\\(s\\) risk_score"):
        service.score(lacking)
    got = [service.score({**r, "risk_score": r["risk_score"] or None}) for r in rows]
    assert np.allclose([g["fraud_probability"] for g in got], [expected[r["txn_id"]] for r in rows], atol=1e-5)


def test_overrides_and_encodings():
    extras = {
        "bucket": np.array([1.0, 2.0, 2.0, np.nan, 3.0]),
        "level": np.array(["a", "b", "", "a", "a"], dtype=object),
        "score": np.array([0.5, -3.0, np.nan, 10.0, 0.0]),
    }
    spec = infer_spec(extras, categorical=("bucket",), ignore=("score",))
    assert spec.numeric == [] and list(spec.categorical) == ["bucket", "level"]
    assert spec.ignored == {"score": "listed in features.ignore"}
    assert spec.categorical["bucket"][0] == "2"  # most frequent first; NaN is the category ''
    later = {"bucket": np.array([7.0, 2.0]), "level": np.array(["z", "a"], dtype=object)}
    tree = tree_matrix(spec, later, 2)
    assert tree[0, 0] == len(spec.categorical["bucket"]) and tree[1, 0] == 0  # unseen -> "other"
    assert nn_matrix(spec, later, 2).shape == (2, spec.nn_dim)
    with pytest.raises(UserError, match="'nope' is not in the data"):
        infer_spec(extras, numeric=("nope",))
    with pytest.raises(UserError, match="missing trained column\\(s\\) level"):
        tree_matrix(spec, {"bucket": later["bucket"]}, 2)


def test_feature_types_from_a_config_table(tmp_path):
    path = tmp_path / "fin.toml"
    path.write_text('[finance.features]\nnumeric = ["a"]\ncategorical = ["b", "c"]\nignore = ["d"]\n')
    cfg = resolve(FinanceConfig, path, ["features.ignore=e"], section="finance")
    assert (cfg.features_numeric, cfg.features_categorical, cfg.features_ignore) == (("a",), ("b", "c"), ("e",))
    path.write_text('[finance.features]\nnumerik = ["a"]\n')
    with pytest.raises(UserError, match="unknown config key 'features.numerik'"):
        resolve(FinanceConfig, path, section="finance")
    assert json.loads(ColumnSpec().to_json())["numeric"] == []
