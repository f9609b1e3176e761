"""PaySim's mobile-money log (`PS_20174392719_1491204439457_log.csv`).

Header: `step,type,amount,nameOrig,oldbalanceOrg,newbalanceOrig,nameDest,oldbalanceDest,
newbalanceDest,isFraud,isFlaggedFraud`. `step` is an hour of the simulated month, read as hours
after 2016-09-01 UTC (PaySim gives no calendar date; only the spacing matters). Rows have no id:
`txn_id` is the file line. The balances and the simulator's rule flag stay features.
"""

from __future__ import annotations

from data_adapters.column_mapping import ColumnMapping, Source, offset_seconds

START = "2016-09-01"


def mapping() -> ColumnMapping:
    return ColumnMapping(
        {
            "txn_id": Source(("@line",)),
            "timestamp": Source(("step",), offset_seconds("hours", START)),
            "src_account": Source(("nameOrig",)),
            "dst_account": Source(("nameDest",)),
            "amount": Source(("amount",)),
            "channel": Source(("type",)),
            "is_fraud": Source(("isFraud",)),
        },
        name="paysim",
    )
