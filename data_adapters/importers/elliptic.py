"""The Elliptic Bitcoin data set (a directory with elliptic_txs_features.csv, _edgelist.csv, _classes.csv).

How it fits the contract: Elliptic's nodes are Bitcoin transactions and its edges are flows of
coins from one transaction to the next, labelled per node (1 = illicit, 2 = licit, `unknown`). Here
each *edge* is a payment row: `src_account` = the spending transaction, `dst_account` = the one it
pays into, labelled with the class of the receiving node (illicit -> 1, licit -> 0, unknown ->
empty, so training quarantines it as "missing is_fraud" and scoring still scores it). The row's
time is the receiving node's time step (about two weeks each, counted from 2013-01-01, which only
fixes the spacing); the receiving node's 165 anonymised features are its feature columns. Elliptic
has no amounts, so `amount` is 1. Nodes that no edge pays into (no incoming flow) are not rows.
`txn_id` is `src>dst`; the line of a row is its line in the edge list.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from common.errors import UserError
from data_adapters.column_mapping import ColumnMapping

FILES = ("elliptic_txs_features.csv", "elliptic_txs_edgelist.csv", "elliptic_txs_classes.csv")
STEP_SECONDS = 14 * 86_400
START = 1_356_998_400  # 2013-01-01T00:00:00Z
LABELS = {"1": "1", "2": "0", "unknown": ""}


def _files(path: Path) -> tuple[Path, Path, Path]:
    root = path if path.is_dir() else path.parent
    found = tuple(root / name for name in FILES)
    missing = [p.name for p in found if not p.is_file()]
    if missing:
        raise UserError(f"{root}: not an Elliptic directory (missing {', '.join(missing)})")
    return found  # type: ignore[return-value]


def rows(path: Path) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    """(header, (edge-list line, row) per edge) in the contract's names plus feature columns."""
    features_csv, edges_csv, classes_csv = _files(Path(path))
    nodes: dict[str, list[str]] = {}
    with open(features_csv, newline="", encoding="utf-8") as handle:
        for record in csv.reader(handle):
            if record:
                nodes[record[0].strip()] = record[1:]
    width = max((len(v) for v in nodes.values()), default=1) - 1
    with open(classes_csv, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader, None)
        classes = {r[0].strip(): LABELS.get(r[1].strip(), r[1].strip()) for r in reader if len(r) >= 2}
    header = ["txn_id", "timestamp", "src_account", "dst_account", "amount", "is_fraud"]
    header += [f"feature_{i + 1}" for i in range(width)]

    def generate() -> Iterator[tuple[int, list[str]]]:
        with open(edges_csv, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            next(reader, None)
            for record in reader:
                line = reader.line_num
                if len(record) < 2:
                    yield line, [""] * len(header)
                    continue
                src, dst = record[0].strip(), record[1].strip()
                node = nodes.get(dst)
                if node is None:  # the validator rejects it: no time for an unknown node
                    yield line, [f"{src}>{dst}", "", src, dst, "1", ""] + [""] * width
                    continue
                try:
                    ts = str(START + (int(float(node[0])) - 1) * STEP_SECONDS)
                except ValueError:
                    ts = node[0]
                features = (node[1:] + [""] * width)[:width]
                yield line, [f"{src}>{dst}", ts, src, dst, "1", classes.get(dst, "")] + features

    return header, generate()


def mapping() -> ColumnMapping:
    return ColumnMapping({}, name="elliptic", source=rows)
