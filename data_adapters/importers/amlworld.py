"""IBM's AMLworld transaction CSVs (HI-Small_Trans.csv, LI-Medium_Trans.csv, ...).

Header: `Timestamp,From Bank,Account,To Bank,Account,Amount Received,Receiving Currency,Amount Paid,
Payment Currency,Payment Format,Is Laundering`: the two `Account` columns are the payer's and the
payee's (read as `Account` and `Account.1`), an account is only unique within its bank (so the key
is `bank|account`), times have no zone (read as UTC), currencies are names ("US Dollar"). Rows
have no id: `txn_id` is the file line. Bank ids, the received amount and currency, and the payment
format stay features; raw account numbers do not (identifiers, not behaviour).
"""

from __future__ import annotations

from data_adapters.column_mapping import ColumnMapping, Source, naive_utc, value_map

CURRENCIES = {
    "US Dollar": "USD",
    "Euro": "EUR",
    "Yuan": "CNY",
    "Yen": "JPY",
    "UK Pound": "GBP",
    "Rupee": "INR",
    "Ruble": "RUB",
    "Canadian Dollar": "CAD",
    "Australian Dollar": "AUD",
    "Swiss Franc": "CHF",
    "Mexican Peso": "MXN",
    "Brazil Real": "BRL",
    "Saudi Riyal": "SAR",
    "Shekel": "ILS",
    "Bitcoin": "XBT",  # not ISO 4217, but the conventional three-letter code
}


def mapping() -> ColumnMapping:
    currency = value_map(CURRENCIES, "AMLworld currency names -> ISO 4217")
    return ColumnMapping(
        {
            "txn_id": Source(("@line",)),
            "timestamp": Source(("Timestamp",), naive_utc),
            "src_account": Source(("From Bank", "Account")),
            "dst_account": Source(("To Bank", "Account.1")),
            "amount": Source(("Amount Paid",)),
            "currency": Source(("Payment Currency",), currency),
            "channel": Source(("Payment Format",)),
            "is_fraud": Source(("Is Laundering",)),
        },
        name="amlworld",
        drop=("Account", "Account.1"),
        converters={"Receiving Currency": currency},
    )
