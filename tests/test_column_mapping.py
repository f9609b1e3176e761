"""Column mapping at read time and the public-format importers, each on a small file in that exact format."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from common.errors import UserError
from data_adapters.column_mapping import ColumnMapping
from data_adapters.importers import mapping_for
from data_adapters.transactions import read_transactions

IEEE_HEADER = "TransactionID,isFraud,TransactionDT,TransactionAmt,ProductCD,card1,addr1,P_emaildomain,C1,M4\n"
IEEE_ROWS = [
    "2987000,0,86400,68.5,W,13926,315.0,,1.0,M2",
    "2987001,1,86401,29.0,H,2755,,gmail.com,2.0,",
    "2987002,0,86469,-5,W,4663,330.0,yahoo.com,1.0,M0",  # line 4: amount <= 0
]
IEEE_SPEC = (
    "txn_id=TransactionID,src_account=card1+addr1,dst_account=ProductCD+P_emaildomain,"
    "timestamp=TransactionDT:seconds@2017-12-01,amount=TransactionAmt,is_fraud=isFraud"
)


def test_mapping_reads_an_export_without_conversion(tmp_path):
    path = tmp_path / "ieee.csv"
    path.write_text(IEEE_HEADER + "\n".join(IEEE_ROWS) + "\n")
    txns, rejects = read_transactions(path, require_label=True, mapping=ColumnMapping.parse(IEEE_SPEC))
    assert list(txns.txn_id) == ["2987000", "2987001"]
    assert [(r.line, r.reason) for r in rejects] == [(4, "amount -5 is not > 0")]
    start = dt.datetime(2017, 12, 1, tzinfo=dt.UTC).timestamp()
    assert list(txns.ts) == [start + 86400, start + 86401]
    assert list(txns.src) == ["13926|315.0", "2755|"] and list(txns.dst) == ["W|", "H|gmail.com"]
    assert list(txns.label) == [0, 1]
    # joined key parts stay features; renamed sources are consumed
    assert txns.extra_columns == ["ProductCD", "card1", "addr1", "P_emaildomain", "C1", "M4"]
    assert txns.extras["C1"].dtype == np.float64 and list(txns.extras["C1"]) == [1.0, 2.0]
    assert np.isnan(txns.extras["addr1"][1])
    assert list(txns.extras["M4"]) == ["M2", ""] and list(txns.extras["P_emaildomain"]) == ["", "gmail.com"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("src_account=card9", "unknown column(s) card9"),
        ("payer=card1", "unknown target 'payer'"),
        ("amount", "is not target=source"),
        ("timestamp=TransactionDT:fortnights", "unknown time unit 'fortnights'"),
        ("timestamp=TransactionDT:seconds@yesterday", "'yesterday' is not a date"),
        ("amount=TransactionAmt:seconds", "conversions apply to timestamp only"),
        ("amount=TransactionAmt,amount=C1", "amount is mapped twice"),
    ],
)
def test_bad_mappings_are_one_line_errors(tmp_path, spec, message):
    path = tmp_path / "ieee.csv"
    path.write_text(IEEE_HEADER + IEEE_ROWS[0] + "\n")
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        read_transactions(path, mapping=ColumnMapping.parse(IEEE_SPEC).merged(ColumnMapping.parse(spec)))
    assert "\n" not in str(info.value)


def test_amlworld_transactions_csv(tmp_path):
    path = tmp_path / "HI-Small_Trans.csv"
    path.write_text(
        "Timestamp,From Bank,Account,To Bank,Account,Amount Received,Receiving Currency,Amount Paid,"
        "Payment Currency,Payment Format,Is Laundering\n"
        "2022/09/01 00:20,010,8000EBD30,010,8000EBD30,3697.34,US Dollar,3697.34,US Dollar,Reinvestment,0\n"
        "2022/09/01 00:20,03208,8000F4580,001,8000F5340,0.01,US Dollar,0.01,US Dollar,Cheque,0\n"
        "2022/09/01 00:02,0215,8000F5AD0,0215,8000F5AD0,14.85,Euro,14.85,Euro,ACH,1\n"
        "2022/09/01 00:05,0215,8000F5AD0,0215,8000F5AD0,14.85,Euro,14.85,Lira,ACH,0\n"
    )
    txns, rejects = read_transactions(path, require_label=True, mapping=mapping_for("amlworld"))
    assert list(txns.txn_id) == ["2", "3", "4"] and list(txns.label) == [0, 0, 1]
    assert list(txns.src) == ["010|8000EBD30", "03208|8000F4580", "0215|8000F5AD0"]
    assert list(txns.dst) == ["010|8000EBD30", "001|8000F5340", "0215|8000F5AD0"]
    assert list(txns.currency) == ["USD", "USD", "EUR"] and list(txns.channel) == ["reinvestment", "cheque", "ach"]
    assert txns.ts[0] == dt.datetime(2022, 9, 1, 0, 20, tzinfo=dt.UTC).timestamp()
    assert [(r.line, "ISO 4217" in r.reason) for r in rejects] == [(5, True)]  # an unknown currency name
    assert "Account" not in txns.extras and "Account.1" not in txns.extras
    assert list(txns.extras["Receiving Currency"]) == ["USD", "USD", "EUR"]
    assert {"From Bank", "To Bank", "Amount Received"} <= set(txns.extras)


def test_paysim_log(tmp_path):
    path = tmp_path / "paysim.csv"
    path.write_text(
        "step,type,amount,nameOrig,oldbalanceOrg,newbalanceOrig,nameDest,oldbalanceDest,newbalanceDest,"
        "isFraud,isFlaggedFraud\n"
        "1,PAYMENT,9839.64,C1231006815,170136.0,160296.36,M1979787155,0.0,0.0,0,0\n"
        "1,TRANSFER,181.0,C1305486145,181.0,0.0,C553264065,0.0,0.0,1,0\n"
        "2,CASH_OUT,181.0,C840083671,181.0,0.0,C38997010,21182.0,0.0,1,0\n"
    )
    txns, rejects = read_transactions(path, require_label=True, mapping=mapping_for("paysim"))
    assert not rejects and list(txns.label) == [0, 1, 1] and list(txns.txn_id) == ["2", "3", "4"]
    assert txns.ts[2] - txns.ts[0] == 3600.0
    assert txns.ts[0] == dt.datetime(2016, 9, 1, 1, tzinfo=dt.UTC).timestamp()
    assert list(txns.channel) == ["payment", "transfer", "cash_out"] and txns.src[1] == "C1305486145"
    assert list(txns.extras["oldbalanceOrg"]) == [170136.0, 181.0, 181.0]
    assert set(txns.extras) == {"oldbalanceOrg", "newbalanceOrig", "oldbalanceDest", "newbalanceDest", "isFlaggedFraud"}


def test_user_columns_override_an_importer(tmp_path):
    path = tmp_path / "paysim.csv"
    path.write_text(
        "step,type,amount,nameOrig,oldbalanceOrg,newbalanceOrig,nameDest,oldbalanceDest,newbalanceDest,"
        "isFraud,isFlaggedFraud\n1,PAYMENT,9.5,C1,170.0,160.5,M1,0.0,0.0,0,0\n"
    )
    txns, _ = read_transactions(path, mapping=mapping_for("paysim", "timestamp=step:days@2020-01-01"))
    assert txns.ts[0] == dt.datetime(2020, 1, 2, tzinfo=dt.UTC).timestamp()
    with pytest.raises(UserError, match="unknown format 'kaggle'"):
        mapping_for("kaggle")


def test_elliptic_directory(tmp_path):
    # elliptic_txs_features.csv has no header: txId, time step, then 165 features (3 here)
    (tmp_path / "elliptic_txs_features.csv").write_text(
        "230425980,1,-0.17,-0.18,1.01\n5530458,1,-0.17,-0.18,0.5\n232022460,2,-0.17,-0.18,-1.2\n"
    )
    (tmp_path / "elliptic_txs_edgelist.csv").write_text(
        "txId1,txId2\n230425980,5530458\n5530458,232022460\n230425980,232022460\n230425980,999\n"
    )
    (tmp_path / "elliptic_txs_classes.csv").write_text("txId,class\n230425980,unknown\n5530458,2\n232022460,1\n")
    txns, rejects = read_transactions(tmp_path, mapping=mapping_for("elliptic"))
    assert list(txns.txn_id) == ["230425980>5530458", "5530458>232022460", "230425980>232022460"]
    assert list(txns.label) == [0, 1, 1] and list(txns.amount) == [1.0, 1.0, 1.0]
    assert txns.ts[1] - txns.ts[0] == 14 * 86_400
    assert list(txns.extras["feature_3"]) == [0.5, -1.2, -1.2]
    assert [(r.line, r.reason) for r in rejects] == [(5, "missing timestamp")]  # a node without features
    with pytest.raises(UserError, match="missing is_fraud"):  # unknown classes are unlabelled rows
        (tmp_path / "elliptic_txs_classes.csv").write_text("txId,class\n5530458,unknown\n232022460,unknown\n")
        read_transactions(tmp_path, require_label=True, mapping=mapping_for("elliptic"))
